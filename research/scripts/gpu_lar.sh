#!/usr/bin/env bash
# GPU recipe for issue 26, one command per 15-minute lease (about 9 minutes of it), chained over leases:
#  1. alr train --recipe lar (the comparative study's local adversarial regularizer: 128-64-64-64-32-32
#     SiLU critic, paired patches, one-sided penalty 0.1) at sigma 0.1 on the study's data, the full-size
#     BSDS images in gray (cbsd432: BSDS500 less CBSD68, 481x321; LAR_CLEAN another folder), the study's length and
#     schedule (LAR_STEPS=45000 steps, lr 1e-3 -> 1e-4 over them, a check every 1125 steps), paused by
#     --stop-after after TRAIN_SECONDS (420) of each lease. The study's own validation PSNR was 2.0 dB below
#     its final one after 2,250 steps and 0.8 dB below after 7,900 (its training log), so a short run
#     measures nothing: a paused lease packs its checkpoint, and the next lease goes on from it
#     (RESUME_DIR: the unpacked lar_results.tar.gz of the last lease, carried to the device, e.g.
#     run(carry=["runs/lar_gpu"]) with RESUME_DIR=runs/lar_gpu). When the steps are done, the
#     checkpoint that restored 8 held-out training images best is kept and its input scale / weight fitted;
#  2. alr finetune (bilevel, Jacobian-free backpropagation) of that critic for FT_SECONDS (90);
#  3. each model's lambda calibrated at sigma 0.1 and 0.2 on set12 crops (alr bench calibrate), then
#     BSD68 gray at sigma 0.1 / 0.2, standard protocol (noise not clipped), beside the shipped gray and
#     BM3D. The benches seed each image's noise from its name and sigma, so the separate runs see the
#     same inputs. Once the steps are done BM3D runs on the CPU, the trained model's bench during the fine-tuning.
# What has finished is packed into $OUT/lar_results.tar.gz after every stage (models, logs, tables);
# everything stops at DEADLINE (540) seconds; the log is $OUT/lar_log.txt. A paused lease stops after step 1.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_lar.sh
# Dry run on the CPU, under 2 minutes (a width-8 critic, a few steps, sigma 0.1 on 4 test images cropped to 96x96):
#   QUICK=1 PYTHON=.venv/bin/python ALR_DATA=/work/shared/data OUT=/tmp/lar_out bash research/scripts/gpu_lar.sh
set -u
: "${ALR_DATA:?set ALR_DATA to the data folder}" "${OUT:?set OUT to the results folder}"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PYTHON:-python3}
CLEAN=${LAR_CLEAN:-$ALR_DATA/cbsd432}  # read in gray (--channels 1, ITU-R 601 luma, as the study's Grayscale)
W=${WORK:-/tmp/lar_work}; rm -rf $W; mkdir -p $W $OUT
exec > >(tee $OUT/lar_log.txt) 2>&1
if [ -n "${QUICK:-}" ]; then
  DEV=cpu; T=15; FT=10; D=115; SIG=0.1
  TRAIN="--widths 8,8 --max-images 40 --steps 30 --batch-size 64 --val-images 4 --val-every 15"; [ -n "${TRAIN_SECONDS:-}" ] && T=$TRAIN_SECONDS
  TUNE="--steps 3 --crop 32 --batch-size 2 --iters 15 --val-every 2 --max-images 40"
  BENCH="--quick"; CAL="--quick --cal-images 2"
else
  DEV=cuda; T=${TRAIN_SECONDS:-420}; FT=${FT_SECONDS:-90}; D=${DEADLINE:-540}; SIG=0.1,0.2
  TRAIN="--steps ${LAR_STEPS:-45000} --val-every 1125"; TUNE="--steps 10000000"; BENCH=""; CAL=""
  nvidia-smi -L
fi
start=$(date +%s)
say() { echo "[$(( $(date +%s) - start )) s] $*"; }
left() { echo $(( D - ($(date +%s) - start) )); }
pack() {  # the work folder so far, checkpoints included (the next lease resumes from them); one process at a time
  ( flock 9; tar -czf $OUT/lar_partial.tgz -C $W . && mv $OUT/lar_partial.tgz $OUT/lar_results.tar.gz
  ) 9>/tmp/gpu_lar.lock
}
step() {  # name command...: logged to $W/name.log, within the deadline, then packed
  local name=$1; shift
  timeout $(left) "$@" > $W/$name.log 2>&1; say "$name: exit $?"; pack
}
bench() {  # name model methods sigmas
  step bench_$1 $PY -m alr bench table2 --model $2 --methods $3 --sigmas $4 --protocol standard \
    --data $ALR_DATA --device $DEV $BENCH -o $W/bench_$1
}
calibrated() {  # name: the model $W/name.safetensors with lambda at sigma 0.1 and 0.2 (set12 crops)
  step cal_$1 $PY -m alr bench calibrate --model $W/$1.safetensors --tasks denoise --sigmas 0.1,0.2 \
    --data $ALR_DATA --device $DEV $CAL -o $W/cal_$1
}
$PY -c "import torch, alr; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'alr', alr.__file__)"
RESUME=""
if [ -n "${RESUME_DIR:-}" ]; then  # an earlier lease's training, to go on from
  cp $RESUME_DIR/lar.safetensors.ckpt $RESUME_DIR/lar.csv $W/ && RESUME=--resume
  say "resuming from $RESUME_DIR: $(tail -1 $W/lar.csv | cut -d, -f1) steps done"
fi
step train $PY -m alr train --recipe lar --clean $CLEAN ${NOISE:---sigma 0.1} --stop-after $T \
  $TRAIN $RESUME --device $DEV -q -o $W/lar.safetensors
grep -E "^(trained|kept|fitted|calibrated|paused)" $W/train.log
grep -q "^paused" $W/train.log && { say "paused: run again with RESUME_DIR set to the unpacked results"; exit 0; }
for S in ${SIG//,/ }; do bench bm3d_$S gray bm3d $S & B="${B:-} $!"; done  # one CPU process per noise level
bench gray gray alr $SIG & B="$B $!"
( calibrated lar && bench lar $W/cal_lar/lar.safetensors alr $SIG ) & B="$B $!"
step finetune $PY -m alr finetune --init $W/lar.safetensors --clean $CLEAN --sigma 0.1 \
  --max-seconds $FT $TUNE --device $DEV -q -o $W/lar_ft.safetensors
grep -E "^fine-tuned" $W/finetune.log
calibrated lar_ft && bench lar_ft $W/cal_lar_ft/lar_ft.safetensors alr $SIG
wait $B  # named: a bare wait would also wait for tee
for f in $W/bench_*/results.md; do echo "== $f"; grep -E "^\| " $f; done
pack; say "all done"
