#!/usr/bin/env bash
# Issue 26 without a GPU: the comparative study's LAR training (alr train --recipe lar, its 45,000 steps
# and schedule, on its data: the full-size BSDS images in gray, cbsd432; exactly as gpu_lar.sh trains
# it) run on the CPU across sessions. Each call resumes from the state kept in the repository
# (research/models/lar_chain/: checkpoint and log), trains until the given clock time, pauses
# (--stop-after), copies the state back and redraws research/figures/lar_chain.png, to be committed
# (to end it earlier, send alr a stop signal: pkill -TERM -f "alr train"; the step ends and is kept).
# Two threads do about 2,600 steps an hour (1.4 s a step), so the run takes about 17 hours of CPU;
# run nothing beside it (a one-thread job beside its two threads more than halves its speed).
#
#   ALR_DATA=DIR bash research/scripts/cpu_lar_chain.sh 09:45     # pause at 09:45 today
#
# The state is device-independent: a GPU lease can go on from it with
# RESUME_DIR=research/models/lar_chain bash research/scripts/gpu_lar.sh (carry nothing extra).
# Once the 45,000 steps are done, alr train selects the best checkpoint, fits the input scale and
# calibrates lambda (about 25 minutes); the clock time bounds that too: past it, the run pauses between
# those stages and the next call does them again from the kept checkpoint. The finished model is
# copied to research/models/lar_chain/lar.safetensors.
set -euo pipefail
{  # read whole before it runs: a git pull or an edit during the hours it runs cannot change it
: "${ALR_DATA:?set ALR_DATA to the data folder}"
[ $# -eq 1 ] || { echo "usage: $0 HH:MM (the clock time to pause at)"; exit 2; }
KEEP=research/models/lar_chain W=runs/lar_chain
seconds=$(( $(date -d "$1" +%s) - $(date +%s) ))
[ "$seconds" -gt 600 ] || { echo "$1 is less than 10 minutes away"; exit 2; }
mkdir -p $KEEP $W
RESUME=""
if [ -f $KEEP/lar.safetensors.ckpt ]; then
  cp $KEEP/lar.safetensors.ckpt $KEEP/lar.csv $W/ && RESUME=--resume
  last=$(tail -1 $W/lar.csv | cut -d, -f1)
  echo "resuming after step $last"
  # the end of the run (about 25 min, not checkpointed) is redone whole if the clock time cuts it
  [ "$last" -lt 44000 ] || [ "$seconds" -ge 2400 ] || { echo "the end of the run needs about 40 minutes: give a later time"; exit 2; }
fi
ALR=$(command -v alr || echo .venv/bin/alr)
status=0  # a stop signal to alr (pkill -TERM -f "alr train") ends the step and writes the checkpoint: keep it too
"$ALR" train --recipe lar --clean "$ALR_DATA/cbsd432" --channels 1 --sigma 0.1 --steps 45000 --val-every 1125 \
  --stop-after "$seconds" $RESUME --device cpu -o $W/lar.safetensors 2>&1 | tee -ia $W/train.log || status=$?
cp $W/lar.safetensors.ckpt $W/lar.csv $KEEP/
PY="$(dirname "$ALR")/python"
if [ -f $W/lar.safetensors ] && "$PY" -c "import sys, alr; from alr.pretrained import unfinished
sys.exit(unfinished(alr.load(sys.argv[1])) is not None)" $W/lar.safetensors; then
  cp $W/lar.safetensors $KEEP/ && echo "the finished model (checked, fitted, calibrated) is $KEEP/lar.safetensors"
fi
"$PY" research/scripts/plot_lar_chain.py || true  # research/figures/lar_chain.png
echo "kept in $KEEP: step $(tail -1 $KEEP/lar.csv | cut -d, -f1) of 45000; commit it"
exit $status
}
