#!/usr/bin/env bash
# Third GPU recipe: continue the shipped / Table 1 critics for longer (and two probes of the
# recipe), then measure every candidate on BSD68 with lambda calibrated on set12 crops.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_continue.sh
# Six trainings share the GPU (one process reaches ~40 steps/s whatever the batch, so batches
# are large and the processes many). `wait` names its PIDs: a bare one would also wait for tee. Everything lands in $OUT/results.tar.gz and $OUT/log.txt.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
T=${TRAIN_SECONDS:-300}; E=${EVAL_SECONDS:-150}; B=${BATCH:-1024}
R=$OUT/r; M=$R/models; mkdir -p $M
exec > >(tee $OUT/log.txt) 2>&1
pack() { tar -czf $OUT/results.tar.gz -C $OUT r; }
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
start=$(date +%s)
T1=src/alr/models; T2=docs/models/table1
train() {  # name args...
  local name=$1; shift
  python3 -m alr train --clean $ALR_DATA/bsd400 --steps 10000000 --lr1 1e-5 --max-seconds $T \
    --ckpt-every 100000000 -q -o $M/$name.safetensors "$@" > $R/train_$name.log 2>&1
  rm -f $M/$name.safetensors.ckpt
}
train gray_c --init $T1/gray.safetensors --sigma-range 0 0.4 --batch-size $B --lr0 3e-4 & P1=$!
train c01_c --init $T2/critic_0.1_long.safetensors --sigma 0.1 --batch-size $B --lr0 3e-4 & P2=$!
train c02_c --init $T2/critic_0.2.safetensors --sigma 0.2 --batch-size $B --lr0 3e-4 & P3=$!
train c04_c --init $T2/critic_0.4.safetensors --sigma 0.4 --batch-size $B --lr0 3e-4 & P4=$!
train c01_b256 --init $T2/critic_0.1_long.safetensors --sigma 0.1 --batch-size 256 --lr0 3e-4 & P5=$!
train c01_w128 --sigma 0.1 --width 128 --batch-size $B --lr0 1e-3 & P6=$!
sleep ${CHECK_AFTER:-45}
for p in $P1 $P2 $P3 $P4 $P5 $P6; do
  if ! kill -0 $p 2>/dev/null; then echo "a training died early:"; tail -n 5 $R/train_*.log; pack; exit 3; fi
done
echo "all six trainings alive at $(( $(date +%s) - start )) s"; tail -qn 1 $M/*.csv
wait $P1 $P2 $P3 $P4 $P5 $P6; echo "training done at $(( $(date +%s) - start )) s"; tail -qn 1 $M/*.csv; pack

evaluate() {  # name protocol sigmas
  local name=$1 proto=$2 sig=$3
  timeout $E bash -c "python3 -m alr bench calibrate --model $M/$name.safetensors --tasks denoise --sigmas $sig \
      -o $R/cal_$name && python3 -m alr bench table2 --model $R/cal_$name/$name.safetensors --protocol $proto \
      --sigmas $sig --methods alr -o $R/t2_$name" > $R/eval_$name.log 2>&1
}
evaluate gray_c both 0.1,0.2,0.4 & Q1=$!
evaluate c01_c both 0.1 & Q2=$!
evaluate c02_c paper 0.2 & Q3=$!
evaluate c04_c paper 0.4 & Q4=$!
evaluate c01_b256 paper 0.1 & Q5=$!
evaluate c01_w128 paper 0.1 & Q6=$!
wait $Q1 $Q2 $Q3 $Q4 $Q5 $Q6; echo "evaluation done at $(( $(date +%s) - start )) s"
for f in $R/t2_*/results.md; do echo "== $f"; grep -E "^\| (alr|method)" $f; done
pack
