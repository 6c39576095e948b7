#!/usr/bin/env bash
# GPU recipe 9: a second training stage for the shipped `color` critic, which had one stage of 200 s
# on a shared card (gray's stages 2 and 3 gained +0.28 / +0.37 / +0.25 dB on BSD68), and the paper's
# Table 2 setting as we read it (colour BSD68, see README "Which BSD68 the paper measured").
#   1. `color` trained further on cbsd432 (batch 2048, lr 3e-4 -> 1e-5 over TRAIN_SECONDS, alone on the
#      card), as gray's stage 3; meanwhile the shipped `color` on CBSD68 at sigma 0.1, paper protocol,
#      as the same-run reference.
#   2. Its tables on 12 cbsd432 crops, as the model card's: denoising with the iterations 12 / 20 and
#      the shaping 0 / 0.5 / 0.7 (one process per sigma), then the clipped-input table (inheriting
#      that solver), and the deblurring / inpainting / SR tables; installed into a model named color2.
#   3. CBSD68, paper protocol (alr, alr-clipped) and standard protocol (alr), sigma 0.1 / 0.2 / 0.4.
# Everything stops at DEADLINE seconds; what has finished is packed into $OUT/results.tar.gz as it goes.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_color.sh   (QUICK=1: a CPU dry run)
T=${TRAIN_SECONDS:-180}; D=${DEADLINE:-540}; N=${CAL_IMAGES:-12}
source research/scripts/gpu_common.sh
Q=${QUICK:+--quick}
cal() {  # name model calibrate-arguments...
  local name=$1 model=$2; shift 2
  run $name python3 -m alr bench calibrate --model $model --cal-images $N $Q "$@" -o $R/$name
}
bench() {  # name table2-arguments...
  local name=$1; shift
  run $name python3 -m alr bench table2 --color --model color2 $Q "$@" -o $R/$name
}
install() { python3 research/scripts/install_tables.py "$@" && cp src/alr/models/color2.safetensors $M/; pack; }

python3 -m alr train --clean $ALR_DATA/cbsd432 --channels 3 --init src/alr/models/color.safetensors \
  --sigma-range 0 0.4 --steps ${STEPS:-10000000} --batch-size ${BATCH:-2048} --lr0 3e-4 --lr1 1e-5 \
  --max-seconds $T --ckpt-every 100000000 -q -o $M/color2.safetensors > $R/train.log 2>&1 & P=$!
run color_old python3 -m alr bench table2 --color --protocol paper --sigmas 0.1 --methods alr,alr-clipped $Q \
  -o $R/color_old & O=$!
wait $P; say "training: exit $?"; tail -n 2 $M/color2.csv; rm -f $M/color2.safetensors.ckpt; pack
cp $M/color2.safetensors src/alr/models/color2.safetensors

W=""
for S in 0.05 0.1 0.2 0.4; do
  cal cal_d_$S $M/color2.safetensors --tasks denoise --sigmas $S --iters 12,20 --concavity 0,0.5,0.7 & W="$W $!"
  sleep 1
done
for t in deblur inpaint sr; do cal cal_$t $M/color2.safetensors --tasks $t & W="$W $!"; sleep 1; done
wait $W; install $R/cal_d_*/ $R/cal_deblur/ $R/cal_inpaint/ $R/cal_sr/

W=""
for S in 0.05 0.1 0.2 0.4; do cal cal_c_$S color2 --tasks denoise-clipped --sigmas $S & W="$W $!"; sleep 1; done
for S in 0.1 0.2 0.4; do bench std_$S --protocol standard --sigmas $S --methods alr & W="$W $!"; sleep 1; done
wait $W; install $R/cal_c_*/

W=""
for S in 0.1 0.2 0.4; do bench paper_$S --protocol paper --sigmas $S --methods alr,alr-clipped & W="$W $!"; sleep 1; done
wait $W $O  # named: a bare wait would also wait for tee
for f in $R/*/results.md; do echo "== $f"; grep -E "^\| " $f | tail -n +3; done
pack; say "all done"
