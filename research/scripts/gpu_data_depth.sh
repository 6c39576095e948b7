#!/usr/bin/env bash
# GPU recipe 5: does more clean data or a larger patch make a better gray critic?
#   g400_init  the shipped gray, trained further on bsd400 (control: more steps, same data)
#   g432_init  the shipped gray, trained further on cbsd432 read as gray (216 + 216 full 481x321
#              images: 4.6x the pixels of bsd400's 180x180 crops; training side, disjoint from BSD68)
#   g432_d6 / g432_d8 / g432_d10  new critics on cbsd432, depth 6 / 8 / 10 (13 / 17 / 21 px patches)
# Meanwhile Table 1 runs on all 68 BSD68 images (five processes, one per test sigma). Then each
# candidate gets lambda (and the score shaping) at sigma 0.1 and 0.2 on the 12 set12 crops and is
# measured on BSD68 (paper protocol). Every bench writes its tables as it goes; all results land in
# $OUT/results.tar.gz (models included) and $OUT/log.txt.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_data_depth.sh
T=${TRAIN_SECONDS:-280}; E=${EVAL_SECONDS:-170}; T1=${TABLE1_SECONDS:-470}; B=${BATCH:-2048}
N=${CAL_IMAGES:-12}
source research/scripts/gpu_common.sh
train() {  # name clean-folder args...
  local name=$1 clean=$2; shift 2
  python3 -m alr train --clean $ALR_DATA/$clean --sigma-range 0 0.4 --steps 10000000 --batch-size $B \
    --lr1 1e-5 --max-seconds $T --ckpt-every 100000000 -q -o $M/$name.safetensors "$@" > $R/train_$name.log 2>&1
  rm -f $M/$name.safetensors.ckpt
}
G=src/alr/models/gray.safetensors
train g400_init bsd400 --init $G --lr0 3e-4 & P1=$!
train g432_init cbsd432 --init $G --lr0 3e-4 & P2=$!
train g432_d6 cbsd432 --lr0 1e-3 & P3=$!
train g432_d8 cbsd432 --depth 8 --lr0 1e-3 & P4=$!
train g432_d10 cbsd432 --depth 10 --lr0 1e-3 & P5=$!
for S in ${TABLE1_SIGMAS:-0.05 0.1 0.2 0.3 0.4}; do
  timeout $T1 python3 -m alr bench table1 --models docs/models/table1 --sigmas $S ${TABLE1_ARGS} \
    -o $R/table1_$S > $R/table1_$S.log 2>&1 & Q="$Q $!"
done
sleep ${CHECK_AFTER:-60}
for p in $P1 $P2 $P3 $P4 $P5; do
  if ! kill -0 $p 2>/dev/null; then echo "a training died early:"; tail -n 5 $R/train_*.log; fi
done
say "checked"; tail -qn 1 $M/*.csv
wait $P1 $P2 $P3 $P4 $P5; say "training done"; tail -qn 1 $M/*.csv; pack

evaluate() {  # name: lambda at 0.1 (8 its, kappa 0 / 0.7) and 0.2 (12 its, kappa 0.5), BSD68 paper protocol
  local n=$1
  timeout $E bash -c "
    python3 -m alr bench calibrate --model $M/$n.safetensors --tasks denoise --sigmas 0.1 --cal-images $N \
      --iters 8 --concavity 0,0.7 -o $R/cal1_$n &&
    python3 -m alr bench table2 --model $R/cal1_$n/$n.safetensors --protocol paper --sigmas 0.1 --methods alr \
      ${TABLE2_ARGS} -o $R/t2a_$n &&
    python3 -m alr bench calibrate --model $M/$n.safetensors --tasks denoise --sigmas 0.2 --cal-images $N \
      --iters 12 --concavity 0.5 -o $R/cal2_$n &&
    python3 -m alr bench table2 --model $R/cal2_$n/$n.safetensors --protocol paper --sigmas 0.2 --methods alr \
      ${TABLE2_ARGS} -o $R/t2b_$n" > $R/eval_$n.log 2>&1
  say "eval $n: exit $?"
}
for n in g400_init g432_init g432_d6 g432_d8 g432_d10; do evaluate $n & W="$W $!"; done
wait $W; pack
wait $Q; say "table1 done"
for f in $R/t2*/results.md $R/table1_*/results.md; do echo "== $f"; grep -E "^\| " $f | tail -n +3; done
pack; say "all done"
