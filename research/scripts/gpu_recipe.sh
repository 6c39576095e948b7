#!/usr/bin/env bash
# GPU recipe 7: does the authors' released training recipe (github.com/jprost76/LocalReg:
# batch 32, Adam with its default betas 0.9 / 0.999, gradient penalty weight mu = 5, learning rate
# 1e-3 -> 1e-4) make a better gray critic than ours (batch 512-2048, betas 0.5 / 0.9, mu = 10)?
#   ours_init     the shipped gray trained further with our recipe (control: more steps)
#   lr_init       the shipped gray trained further with the authors' recipe (lr 1e-4 -> 1e-5)
#   lr_init_b256  the same at batch 256
#   lr_new        a new critic with the authors' recipe from scratch
#   lr_new_b256   the same at batch 256
# All on cbsd432 read as gray, sigma ~ U[0, 0.4]. Five trainings share the GPU for TRAIN_SECONDS;
# then each candidate gets lambda, the iterations (8 / 20) and the shaping (kappa 0 / 0.7) at
# sigma 0.1 on the 12 set12 crops and is measured on BSD68 at sigma 0.1 (paper protocol).
# Since measured on the CPU (README, Table 2, "The authors' released code"): from scratch the
# authors' recipe reaches the shipped gray's probe score in 20,000 steps and levels off there.
# Results (models included): $OUT/results.tar.gz, $OUT/log.txt.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_recipe.sh
# CPU dry run of the plumbing: TRAIN_SECONDS=5 CHECK_AFTER=2 CAL_ARGS=--quick TABLE2_ARGS=--quick \
#   DEVICE=cpu ALR_DATA=DIR OUT=/tmp/recipe bash research/scripts/gpu_recipe.sh
T=${TRAIN_SECONDS:-320}; E=${EVAL_SECONDS:-190}; N=${CAL_IMAGES:-12}
source research/scripts/gpu_common.sh
train() {  # name args...
  local name=$1; shift
  python3 -m alr train --clean $ALR_DATA/cbsd432 --channels 1 --sigma-range 0 0.4 --steps 100000000 \
    --max-seconds $T --ckpt-every 1000000000 ${DEVICE:+--device $DEVICE} -q -o $M/$name.safetensors "$@" \
    > $R/train_$name.log 2>&1
  rm -f $M/$name.safetensors.ckpt
}
G=src/alr/models/gray.safetensors
THEIRS="--betas 0.9 0.999 --mu 5"
NAMES="ours_init lr_init lr_init_b256 lr_new lr_new_b256"
train ours_init --init $G --batch-size 2048 --lr0 3e-4 --lr1 1e-5 & P="$!"
train lr_init --init $G --batch-size 32 --lr0 1e-4 --lr1 1e-5 $THEIRS & P="$P $!"
train lr_init_b256 --init $G --batch-size 256 --lr0 1e-4 --lr1 1e-5 $THEIRS & P="$P $!"
train lr_new --batch-size 32 --lr0 1e-3 --lr1 1e-4 $THEIRS & P="$P $!"
train lr_new_b256 --batch-size 256 --lr0 1e-3 --lr1 1e-4 $THEIRS & P="$P $!"
await_trainings "$P"
evaluate_candidates $NAMES
