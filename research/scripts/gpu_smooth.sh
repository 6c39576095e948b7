#!/usr/bin/env bash
# GPU recipe 6: does a smooth activation or patch augmentation make a better gray critic?
#   r_init      the shipped gray trained further on cbsd432 read as gray (control: more steps)
#   r_init_aug  the same with --augment (random flips / quarter turns of the patches)
#   s_init      the shipped gray's weights under SiLU, trained further the same way
#   r_new / s_new / s_new_aug  new critics on cbsd432: ReLU (control), SiLU, SiLU with --augment
# Six trainings share the GPU for TRAIN_SECONDS; then each candidate gets lambda, the iterations
# (8 / 20) and the shaping (kappa 0 / 0.7) at sigma 0.1 on the 12 set12 crops and is measured on
# BSD68 at sigma 0.1 (paper protocol). Results (models included): $OUT/results.tar.gz, $OUT/log.txt.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_smooth.sh
T=${TRAIN_SECONDS:-320}; E=${EVAL_SECONDS:-190}; B=${BATCH:-2048}; N=${CAL_IMAGES:-12}
source research/scripts/gpu_common.sh
train() {  # name args...
  local name=$1; shift
  python3 -m alr train --clean $ALR_DATA/cbsd432 --channels 1 --sigma-range 0 0.4 --steps 10000000 \
    --batch-size $B --lr1 1e-5 --max-seconds $T --ckpt-every 100000000 -q -o $M/$name.safetensors "$@" \
    > $R/train_$name.log 2>&1
  rm -f $M/$name.safetensors.ckpt
}
G=src/alr/models/gray.safetensors
NAMES="r_init r_init_aug s_init r_new s_new s_new_aug"
train r_init --init $G --lr0 3e-4 & P="$!"
train r_init_aug --init $G --lr0 3e-4 --augment & P="$P $!"
train s_init --init $G --lr0 3e-4 --activation silu & P="$P $!"
train r_new --lr0 1e-3 & P="$P $!"
train s_new --lr0 1e-3 --activation silu & P="$P $!"
train s_new_aug --lr0 1e-3 --activation silu --augment & P="$P $!"
await_trainings "$P"
evaluate_candidates $NAMES
