#!/usr/bin/env bash
# One-shot GPU recipe: train the shipped critics, calibrate lambda, run the GPU-side benchmarks.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_run.sh
# Everything lands in $OUT/results.tar.gz (re-packed after each phase) and $OUT/log.txt.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
T=${TRAIN_SECONDS:-200}
R=$OUT/r; M=$R/models; mkdir -p $M
pack() { tar -czf $OUT/results.tar.gz -C $OUT r; }
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
start=$(date +%s)
train() {  # name clean-folder channels batch noise-args...
  local name=$1 clean=$2 ch=$3 bs=$4; shift 4
  python3 -m alr train --clean $ALR_DATA/$clean --channels $ch "$@" --steps 400000 --batch-size $bs \
    --lr0 1e-3 --lr1 1e-5 --max-seconds $T --ckpt-every 1000000 -q -o $M/$name.safetensors > $R/train_$name.log 2>&1
  rm -f $M/$name.safetensors.ckpt
}
train gray bsd400 1 512 --sigma-range 0 0.4 &
train color cbsd432 3 512 --sigma-range 0 0.4 &
for s in 0.05 0.1 0.2 0.4; do train critic_$s bsd400 1 256 --sigma $s & done
wait; cp $M/gray.safetensors $M/critic_range.safetensors
echo "training done at $(( $(date +%s) - start )) s"; tail -n 2 $M/*.csv; pack
python3 -m alr bench calibrate --model $M/gray.safetensors -o $R/cal_gray > $R/cal_gray.log 2>&1 &
python3 -m alr bench calibrate --model $M/color.safetensors -o $R/cal_color > $R/cal_color.log 2>&1 &
wait; echo "calibration done at $(( $(date +%s) - start )) s"; cat $R/cal_*/results.md; pack
G=$R/cal_gray/gray.safetensors
python3 -m alr bench table2 --model $G --methods alr,tv -o $R/table2 > $R/table2.log 2>&1 && pack &
python3 -m alr bench deblur --model $G --methods alr,tv -o $R/deblur > $R/deblur.log 2>&1 &
python3 -m alr bench inpaint --model $G -o $R/inpaint > $R/inpaint.log 2>&1 &
python3 -m alr bench sr --model $G -o $R/sr > $R/sr.log 2>&1 &
python3 -m alr bench table1 --models $M -o $R/table1 > $R/table1.log 2>&1 &
wait -n; wait -n; wait -n; wait -n; pack
echo "benchmarks at $(( $(date +%s) - start )) s"; cat $R/table2/results.md
wait; pack; echo "all done at $(( $(date +%s) - start )) s"
