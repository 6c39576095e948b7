#!/usr/bin/env bash
# GPU recipe 6, two things at once on one GPU (latency-bound processes, one per core):
# (a) the slope penalty at GPU scale. The shipped gray trained further with --slope 10 (paired
#     patches), the same training without it (control), and a new critic with --slope 10 from scratch,
#     all on cbsd432 read as gray, sigma ~ U[0, 0.4], for TRAIN_SECONDS each; then each gets lambda (and
#     the iterations / shaping, a small grid around gray's choices) on the 12 set12 crops and is measured
#     on BSD68 (paper protocol) beside the shipped gray measured in the same run.
# (b) meanwhile the README's rows marked † with the batch-independent L-BFGS: CBSD68 paper protocol at
#     sigma 0.2 / 0.4, BSD68 deblurring at noise 0.01 / 0.03, Table 1 (one process per noise level).
# Everything stops at DEADLINE seconds; every bench writes its tables as it goes, and what has finished
# is packed into $OUT/results.tar.gz after each process (models included), the log in $OUT/log.txt.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_slope.sh
# RERUN=1 MODELS_IN=DIR: only the jobs that the first H100 run lost to a cuBLAS start-up failure (17
# processes creating their handles at once), the trained models read from DIR. Processes now start
# one second apart, and a job whose start fails that way is tried again.
T=${TRAIN_SECONDS:-220}; D=${DEADLINE:-470}; N=${CAL_IMAGES:-12}; B=${BATCH:-1024}
source research/scripts/gpu_common.sh
bench() {  # name bench-arguments...
  local name=$1; shift
  run $name python3 -m alr bench "$@" ${BENCH_ARGS} -o $R/$name
}
train() {  # name train-arguments...
  local name=$1; shift
  python3 -m alr train --clean $ALR_DATA/cbsd432 --channels 1 --sigma-range 0 0.4 --steps 10000000 \
    --batch-size $B --lr1 1e-5 --max-seconds $T --ckpt-every 100000000 -q -o $M/$name.safetensors "$@" \
    > $R/train_$name.log 2>&1
  say "train $name: exit $?"; rm -f $M/$name.safetensors.ckpt
}
evaluate() {  # name sigma iterations concavities: lambda on the set12 crops, then BSD68 (paper protocol)
  local n=$1 s=$2
  retry $R/eval_${n}_$s.log timeout $(left) bash -c "
    python3 -m alr bench calibrate --model ${MODELS_IN:-$M}/$n.safetensors --tasks denoise --sigmas $s --cal-images $N \
      --iters $3 --concavity $4 ${CAL_ARGS} -o $R/cal_${n}_$s &&
    python3 -m alr bench table2 --model $R/cal_${n}_$s/$n.safetensors --protocol paper --sigmas $s \
      --methods alr ${BENCH_ARGS} -o $R/t2_${n}_$s"
  say "eval $n $s: exit $?"; pack
}
G=src/alr/models/gray.safetensors
Q=""; W=""
if [ -n "$RERUN" ]; then
  bench gray_paper table2 --protocol paper --sigmas 0.1,0.2,0.4 --methods alr,alr-clipped & Q="$Q $!"; sleep 1
  evaluate gray_slope10 0.2 12,20 0,0.5 & W="$W $!"; sleep 1
  evaluate gray_more 0.4 20 0 & W="$W $!"; sleep 1
  bench color_paper_0.2 table2 --color --protocol paper --sigmas 0.2 --methods alr,alr-clipped & Q="$Q $!"; sleep 1
  bench deblur_bsd68_0.01 deblur --sets bsd68 --sigmas 0.01 --methods alr & Q="$Q $!"; sleep 1
  for S in 0.1 0.3 0.4; do bench table1_$S table1 --models docs/models/table1 --sigmas $S & Q="$Q $!"; sleep 1; done
else
  train gray_slope10 --init $G --lr0 1e-4 --slope 10 & P="$!"; sleep 1
  train gray_more --init $G --lr0 1e-4 & P="$P $!"; sleep 1
  train new_slope10 --lr0 1e-3 --slope 10 & P="$P $!"; sleep 1
  bench gray_paper table2 --protocol paper --sigmas 0.1,0.2,0.4 --methods alr,alr-clipped & Q="$Q $!"; sleep 1
  for S in 0.2 0.4; do
    bench color_paper_$S table2 --color --protocol paper --sigmas $S --methods alr,alr-clipped & Q="$Q $!"; sleep 1
  done
  for S in 0.01 0.03; do
    bench deblur_bsd68_$S deblur --sets bsd68 --sigmas $S --methods alr & Q="$Q $!"; sleep 1
  done
  for S in 0.05 0.1 0.2 0.3 0.4; do
    bench table1_$S table1 --models docs/models/table1 --sigmas $S & Q="$Q $!"; sleep 1
  done
  sleep ${CHECK_AFTER:-45}
  for p in $P; do kill -0 $p 2>/dev/null || { echo "a training ended early:"; tail -n 3 $R/train_*.log; }; done
  say "checked"; tail -qn 1 $M/*.csv
  wait $P; say "training done"; tail -qn 1 $M/*.csv; pack
  for n in gray_slope10 gray_more; do
    evaluate $n 0.1 8,20 0,0.7 & W="$W $!"; sleep 1
    evaluate $n 0.2 12,20 0,0.5 & W="$W $!"; sleep 1
    evaluate $n 0.4 20 0 & W="$W $!"; sleep 1
  done
  evaluate new_slope10 0.1 8,20 0,0.7 & W="$W $!"
fi
wait $W $Q  # named: a bare wait would also wait for tee
for f in $R/*/results.md; do echo "== $f"; grep -E "^\| " $f | head -12; done
pack; say "all done"
