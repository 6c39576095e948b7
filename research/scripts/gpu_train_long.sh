#!/usr/bin/env bash
# Second GPU recipe: one long single-process training of the gray critic (no other process sharing the GPU).
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
T=${TRAIN_SECONDS:-150}
python3 -m alr train --clean $ALR_DATA/bsd400 --sigma-range 0 0.4 --steps 1000000 --batch-size 1024 \
  --lr0 1e-3 --lr1 1e-5 --max-seconds $T --ckpt-every 10000000 -q -o $OUT/gray_long.safetensors
rm -f $OUT/gray_long.safetensors.ckpt; tail -n 2 $OUT/gray_long.csv
