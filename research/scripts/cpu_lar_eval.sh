#!/usr/bin/env bash
# Issue 26 without a GPU, after cpu_lar_chain.sh has written research/models/lar_chain/lar.safetensors
# (the finished run: best check judged, scale fitted, calibrated at sigma 0.1): the measurements the
# issue's targets name, on the CPU, one stage at a time (run nothing beside it):
#   1. the model's lambda calibrated at sigma 0.1 and 0.2 on set12 crops (alr bench calibrate, as gpu_lar.sh);
#   2. BSD68 gray at sigma 0.1 / 0.2, standard protocol (noise not clipped), the model and BM3D in the
#      same run (alr bench table2; each image's noise is seeded by its name and sigma, so the shipped
#      gray's committed rows, docs/results/table2_standard_per_image.csv, saw the same inputs);
#   3. the default restore's time against BM3D (benchmarks/restore_speed.py --short).
# A stage that finished leaves runs/lar_eval/NAME.done and is skipped when the script runs again, so
# a session that ends mid-way loses only the stage it was in. Summaries are copied to
# research/models/lar_chain/eval/ (commit them).
#
#   ALR_DATA=DIR bash research/scripts/cpu_lar_eval.sh
#   QUICK=1 MODEL=FILE ALR_DATA=DIR bash research/scripts/cpu_lar_eval.sh     # dry run, a few minutes
set -euo pipefail
: "${ALR_DATA:?set ALR_DATA to the data folder}"
KEEP=research/models/lar_chain W=${WORK:-runs/lar_eval}
MODEL=${MODEL:-$KEEP/lar.safetensors}
[ -f "$MODEL" ] || { echo "no finished model at $MODEL: run research/scripts/cpu_lar_chain.sh to its end"; exit 2; }
PY=$(command -v python || echo .venv/bin/python)
if [ -n "${QUICK:-}" ]; then Q="--quick"; CALQ="--quick --cal-images 2"; S="--short --images 1"; W=$W.quick
else Q=""; CALQ=""; S="--short --images 2"; fi
mkdir -p $W
stage() {  # name command...: run once, logged to $W/name.log
  local name=$1; shift
  [ -f $W/$name.done ] && { echo "$name: done before"; return; }
  echo "[$(date +%H:%M)] $name"
  "$@" > $W/$name.log 2>&1 && touch $W/$name.done
}
stage calibrate $PY -m alr bench calibrate --model "$MODEL" --tasks denoise --sigmas 0.1,0.2 --data "$ALR_DATA" \
  --device cpu $CALQ -o $W/cal
CAL=$W/cal/$(basename "$MODEL")
stage bench_lar $PY -m alr bench table2 --model "$CAL" --methods alr,bm3d --sigmas 0.1,0.2 --protocol standard \
  --data "$ALR_DATA" --device cpu $Q -o $W/bench_lar
stage speed env ALR_BENCH_OUT=$W/speed $PY benchmarks/restore_speed.py --model "$CAL" --data "$ALR_DATA" $S
if [ -z "${QUICK:-}" ]; then
  mkdir -p $KEEP/eval
  cp $W/bench_lar/results.md $KEEP/eval/bench_lar.md
  cp $W/speed/restore_speed.json $KEEP/eval/
fi
for f in $W/bench_*/results.md; do echo "== $f"; grep -E "^\| " $f; done
grep -A7 "^## restore_speed" $W/speed.log || true
