#!/usr/bin/env bash
# GPU recipe 7: the unrolled probe (research/scripts/probe_unrolled.py) at GPU scale. The shipped gray is
# fine-tuned through K = 8 explicit gradient steps, paired noisy / clean bsd400 crops, half of the
# noisy ones clipped, for TRAIN_SECONDS each, four runs side by side: one per noise level of Table 2
# (sigma within 10% of 0.1, 0.2, 0.4) and one over the range 0.05-0.45. Then each is measured on
# BSD68 (alr bench table2 --methods alr) with its own learnt steps and lambda, as saved where it
# scored best on the set12 probe crops (every EVAL_EVERY steps and at the end): the noise-level runs
# at their sigma under both protocols, the range run at the three sigma (paper protocol).
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_unrolled.sh
# Measured on an H100 (README, "The unrolled probe"): at batch 32 of 64x64 crops the four runs
# share the GPU at 1.7 s a step (180 steps in 300 s, too few); BATCH=8 CROP=48 gave one run alone
# 1,348 steps in 170 s.
# Dry run on a CPU: PATH=.venv/bin:$PATH TRAIN_SECONDS=15 BENCH_ARGS=--quick PROBE_ARGS="--eval-images 1".
T=${TRAIN_SECONDS:-300}; D=${DEADLINE:-520}; B=${BATCH:-32}; C=${CROP:-64}
source research/scripts/gpu_common.sh
train() {  # name sigma-low sigma-high
  retry $R/train_$1.log timeout $(( T + 120 )) python3 research/scripts/probe_unrolled.py --sigma-range $2 $3 \
    --eval-sigmas 0.1 0.2 0.4 --clip --lr 2e-4 --lr1 1e-5 --batch $B --crop $C --seconds $T --eval-every ${EVAL_EVERY:-1000} \
    ${PROBE_ARGS} -o $M/$1.safetensors
  say "train $1: exit $?"; pack
}
bench() {  # name model protocol sigmas
  run $1 python3 -m alr bench table2 --model $M/$2.safetensors --methods alr \
    --protocol $3 --sigmas $4 ${BENCH_ARGS} -o $R/$1
}
P=""
train s01 0.09 0.11 & P="$P $!"; sleep 1
train s02 0.18 0.22 & P="$P $!"; sleep 1
train s04 0.36 0.44 & P="$P $!"; sleep 1
train range 0.05 0.45 & P="$P $!"
wait $P; say "training done"; grep -h "^step" $R/train_*.log | tail -n 8
Q=""
for p in paper standard; do
  bench s01_$p s01 $p 0.1 & Q="$Q $!"; sleep 1
  bench s02_$p s02 $p 0.2 & Q="$Q $!"; sleep 1
  bench s04_$p s04 $p 0.4 & Q="$Q $!"; sleep 1
done
bench range_paper range paper 0.1,0.2,0.4 & Q="$Q $!"
wait $Q  # named: a bare wait would also wait for tee
for f in $R/*/results.md; do echo "== $f"; grep -E "^\| " $f | head -8; done
pack; say "all done"
