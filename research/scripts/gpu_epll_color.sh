#!/usr/bin/env bash
# GPU recipe 6: the EPLL rows of the color Table 2 (CBSD68, both protocols), one process per protocol and
# noise level, with the 3-channel GMM shipped in src/alr/models/epll_gmm_3ch.safetensors (fitted on
# cbsd432 on the CPU, model card). Color EPLL takes about 40 s per image on 2 CPU threads (408 solves).
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_epll_color.sh
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
E=${EVAL_SECONDS:-200}
R=$OUT/r; mkdir -p $R
exec > >(tee $OUT/log.txt) 2>&1
nvidia-smi -L; start=$(date +%s)
for P in paper standard; do
  for S in ${SIGMAS:-0.1 0.2 0.4}; do
    ( timeout $E python3 -m alr bench table2 --color --protocol $P --sigmas $S --methods epll ${BENCH_ARGS} \
        -o $R/epll_${P}_$S > $R/epll_${P}_$S.log 2>&1; echo "epll $P $S: exit $? at $(( $(date +%s) - start )) s" ) & W="$W $!"
  done
done
wait $W  # named: a bare wait would also wait for tee
for f in $R/*/results.md; do echo "== $f"; grep -E "^\| (paper|standard)" $f; done
tar -czf $OUT/results.tar.gz -C $OUT r
