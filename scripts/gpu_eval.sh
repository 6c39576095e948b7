#!/usr/bin/env bash
# GPU recipe 4: every ALR row of the README's tables for the shipped models (gray and color, Table 2
# both protocols with the clipped data term, deblurring, inpainting, SR), in parallel processes (one
# process is latency-bound; the GPU runs several at once). Baseline rows (BM3D, EPLL, TV) come from the
# CPU runs on the same seeded inputs.
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash scripts/gpu_eval.sh
# Each benchmark is bounded by EVAL_SECONDS and writes its tables after every noise level; six
# processes solve at once (one batches 16 BSD68 images: up to about 15 GB of GPU memory). A bench that
# failed for another reason than its time box is run once more at the end, alone.
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
E=${EVAL_SECONDS:-240}
R=$OUT/r; mkdir -p $R
exec > >(tee $OUT/log.txt) 2>&1
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
start=$(date +%s)
bench() {  # run-folder bench-arguments...
  local name=$1; shift
  timeout $E python3 -m alr bench "$@" ${BENCH_ARGS} -o $R/$name > $R/$name.log 2>&1
  local rc=$?
  echo "$name: exit $rc at $(( $(date +%s) - start )) s"
  [ $rc -eq 0 ] || [ $rc -eq 124 ] || echo "$*" > $R/$name.retry
}
bench table2_paper table2 --protocol paper --sigmas 0.1,0.2,0.4 --methods alr,alr-clipped & P1=$!
bench table2_standard table2 --protocol standard --sigmas 0.1,0.2,0.4 --methods alr & P2=$!
bench color_paper table2 --color --protocol paper --sigmas 0.1,0.2,0.4 --methods alr,alr-clipped & P3=$!
bench color_standard table2 --color --protocol standard --sigmas 0.1,0.2,0.4 --methods alr & P4=$!
( bench deblur_set12 deblur --sets set12 --methods alr; bench inpaint inpaint --methods alr
  bench sr sr --methods alr ) & P5=$!
bench deblur_bsd68 deblur --sets bsd68 --methods alr & P6=$!
wait $P1 $P2 $P3 $P4 $P5 $P6  # named: a bare wait would also wait for tee
for f in $R/*.retry; do [ -e "$f" ] && bench $(basename $f .retry)_again $(cat $f); done
for f in $R/*/results.md $R/*/*/results.md; do [ -e "$f" ] && { echo "== $f"; grep -E "^\| " $f | head -20; }; done
tar -czf $OUT/results.tar.gz -C $OUT r; echo "all done at $(( $(date +%s) - start )) s"
