#!/usr/bin/env bash
# GPU recipe 4: every ALR row of the README's tables for the shipped models (gray and color, Table 2
# both protocols with the clipped data term, deblurring, inpainting, SR), in parallel processes (one
# process is latency-bound; the GPU runs several at once). Baseline rows (BM3D, EPLL, TV) come from the
# CPU runs on the same seeded inputs. Seventeen processes share the GPU (one per table and noise level).
# Usage (device machine): ALR_DATA=DIR OUT=DIR bash research/scripts/gpu_eval.sh
# Each benchmark is bounded by EVAL_SECONDS and writes its tables after every noise level. A bench that
# failed for another reason than its time box is run once more at the end, alone.
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
E=${EVAL_SECONDS:-240}
source research/scripts/gpu_common.sh
bench() {  # run-folder bench-arguments...
  local name=$1; shift
  retry $R/$name.log timeout $E python3 -m alr bench "$@" ${BENCH_ARGS} -o $R/$name
  local rc=$?
  say "$name: exit $rc"
  [ $rc -eq 0 ] || [ $rc -eq 124 ] || echo "$*" > $R/$name.retry
  pack
}
P=""
for S in 0.1 0.2 0.4; do  # one process per noise level and table
  bench table2_paper_$S table2 --protocol paper --sigmas $S --methods alr,alr-clipped & P="$P $!"
  bench table2_standard_$S table2 --protocol standard --sigmas $S --methods alr & P="$P $!"
  bench color_paper_$S table2 --color --protocol paper --sigmas $S --methods alr,alr-clipped & P="$P $!"
  bench color_standard_$S table2 --color --protocol standard --sigmas $S --methods alr & P="$P $!"
done
bench deblur_set12 deblur --sets set12 --methods alr & P="$P $!"
bench inpaint inpaint --methods alr & P="$P $!"
bench sr sr --methods alr & P="$P $!"
bench deblur_bsd68_0.01 deblur --sets bsd68 --sigmas 0.01 --methods alr & P="$P $!"
bench deblur_bsd68_0.03 deblur --sets bsd68 --sigmas 0.03 --methods alr & P="$P $!"
wait $P  # named: a bare wait would also wait for tee
for f in $R/*.retry; do [ -e "$f" ] && bench $(basename $f .retry)_again $(cat $f); done
for f in $R/*/results.md $R/*/*/results.md; do [ -e "$f" ] && { echo "== $f"; grep -E "^\| " $f | head -20; }; done
pack; say "all done"
