#!/usr/bin/env bash
# GPU recipe 4: every ALR row of the README's tables for the shipped models, in parallel processes
# (one process is latency-bound; the GPU runs several at once). Baseline rows (BM3D, EPLL) come
# from the CPU runs on the same seeded inputs; TV is rerun here where it is cheap.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash scripts/gpu_eval.sh
# Each benchmark is bounded by EVAL_SECONDS and writes its tables after every noise level / critic.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
E=${EVAL_SECONDS:-240}
R=$OUT/r; mkdir -p $R
exec > >(tee $OUT/log.txt) 2>&1
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
start=$(date +%s)
bench() {  # run-folder bench-arguments...
  local name=$1; shift
  timeout $E python3 -m alr bench "$@" -o $R/$name > $R/$name.log 2>&1
  echo "$name: exit $? at $(( $(date +%s) - start )) s"
}
bench table2_paper table2 --protocol paper --sigmas 0.1,0.2,0.4 --methods alr & P1=$!
bench table2_standard table2 --protocol standard --sigmas 0.1,0.2,0.4 --methods alr & P2=$!
bench deblur_set12 deblur --sets set12 --methods alr & P3=$!
bench deblur_bsd68 deblur --sets bsd68 --methods alr,tv & P4=$!
bench inpaint inpaint --methods alr & P5=$!
bench sr sr --methods alr & P6=$!
for S in 0.05,0.1 0.2,0.3 0.4; do bench table1_${S//,/_} table1 --models docs/models/table1 --sigmas $S & T="$T $!"; done
wait $P1 $P2 $P3 $P4 $P5 $P6 $T  # named: a bare wait would also wait for tee
for f in $R/*/results.md; do echo "== $f"; grep -E "^\| " $f | head -20; done
tar -czf $OUT/results.tar.gz -C $OUT r
