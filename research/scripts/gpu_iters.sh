#!/usr/bin/env bash
# GPU recipe 10: longer solves where the shipped tables stop at 20 L-BFGS iterations, at the noise
# levels where ALR misses the paper's Table 2 row by the least: sigma 0.4 in colour (CBSD68, censored
# data term 21.50 against the paper's 21.58 dB; Gaussian term 20.16), sigma 0.4 in gray with the
# Gaussian term (20.46 against 21.58) and sigma 0.2 in gray with the censored term (24.54 against 24.88).
#   1. Calibration on the training side (12 crops: cbsd432 for color, set12 for gray), one process per
#      table: iterations 20 / 40 / 80, shaping kappa 0 / 0.5 (the columns of the shipped tables, so that
#      the new noise level merges into them); installed into model copies color_it / gray_it.
#   2. The test sets with the copies (paper protocol; standard where the Gaussian table changed); the
#      shipped models' rows of step 1 are the same-run reference.
# In the session that ran it (2026-11-28, H200) the calibrations took 375 s, so step 2 ran as two more
# calls on the warm machine (the same commands); one call needs about 600 s.
# Everything stops at DEADLINE seconds; what has finished is packed into $OUT/results.tar.gz as it goes.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_iters.sh   (QUICK=1: a CPU dry run)
D=${DEADLINE:-590}; N=${CAL_IMAGES:-12}; IT=${ITERS:-20,40,80}
source research/scripts/gpu_common.sh
Q=${QUICK:+--quick}
cal() {  # name model task sigma
  run $1 python3 -m alr bench calibrate --model $2 --tasks $3 --sigmas $4 --iters $IT --concavity 0,0.5 \
    --cal-images $N $Q -o $R/$1
}
t2() {  # name model protocol sigma methods [--color]
  run $1 python3 -m alr bench table2 --model $2 --protocol $3 --sigmas $4 --methods $5 $6 $Q -o $R/$1
}
for m in color gray; do cp src/alr/models/$m.safetensors src/alr/models/${m}_it.safetensors; done

W=""
cal cal_color_c04 color denoise-clipped 0.4 & W="$W $!"; sleep 1
cal cal_color_g04 color denoise 0.4 & W="$W $!"; sleep 1
cal cal_gray_g04 gray denoise 0.4 & W="$W $!"; sleep 1
cal cal_gray_c02 gray denoise-clipped 0.2 & W="$W $!"; sleep 1
# the shipped models' rows, same run
t2 old_color_04 color paper 0.4 alr,alr-clipped --color & W="$W $!"; sleep 1
t2 old_gray_04 gray paper 0.4 alr & W="$W $!"; sleep 1
t2 old_gray_std04 gray standard 0.4 alr & W="$W $!"; sleep 1
t2 old_gray_02 gray paper 0.2 alr-clipped & W="$W $!"
wait $W
for f in $R/cal_*/results.csv; do echo "== $f"; grep True $f; done
python3 research/scripts/install_tables.py --into color_it $R/cal_color_c04 $R/cal_color_g04
python3 research/scripts/install_tables.py --into gray_it $R/cal_gray_g04 $R/cal_gray_c02
cp src/alr/models/*_it.safetensors $M/; pack

W=""
t2 new_color_04c color_it paper 0.4 alr-clipped --color & W="$W $!"; sleep 1
t2 new_color_04g color_it paper 0.4 alr --color & W="$W $!"; sleep 1
t2 new_color_std04 color_it standard 0.4 alr --color & W="$W $!"; sleep 1
t2 new_gray_04 gray_it paper 0.4 alr & W="$W $!"; sleep 1
t2 new_gray_std04 gray_it standard 0.4 alr & W="$W $!"; sleep 1
t2 new_gray_02 gray_it paper 0.2 alr-clipped & W="$W $!"
wait $W
for f in $R/old_*/results.md $R/new_*/results.md; do echo "== $f"; grep -E "^\| " $f | tail -n +3; done
pack; say "all done"
