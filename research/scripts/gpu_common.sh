# Shared prologue of the GPU recipes (sourced): environment, results folder $R (models in $M), a log
# in $OUT/log.txt, pack (results.tar.gz), retry (a CUDA start that failed), the device, say (a
# message with the elapsed time), left (seconds to the deadline $D) and run (a named command within it).
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
R=$OUT/r; M=$R/models; mkdir -p $M
exec > >(tee $OUT/log.txt) 2>&1
pack() {  # what has finished so far, in case the lease ends first; one process at a time
  ( flock 9; tar -czf $OUT/partial.tgz -C $OUT r && mv $OUT/partial.tgz $OUT/results.tar.gz ) 9>/tmp/gpu_pack.lock
}
retry() {  # log command...: run it again (up to 3 times) while CUDA fails to start (many processes
  local log=$1 rc i; shift  # creating their cuBLAS handles at once: CUBLAS_STATUS_ALLOC_FAILED)
  for i in 1 2 3; do
    "$@" > $log 2>&1; rc=$?
    grep -q CUBLAS_STATUS_ALLOC_FAILED $log || break; sleep 3
  done
  return $rc
}
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
start=$(date +%s)
say() { echo "$* at $(( $(date +%s) - start )) s"; }
left() { echo $(( D - ($(date +%s) - start) )); }  # seconds to the recipe's DEADLINE ($D)
run() {  # name command...: within the deadline, logged, packed
  local name=$1; shift
  retry $R/$name.log timeout $(left) "$@"; say "$name: exit $?"; pack
}
# The critic comparisons (gpu_smooth.sh, gpu_recipe.sh): await_trainings "PIDS" checks after
# CHECK_AFTER s that the background trainings still run, waits for them and packs; then
# evaluate_candidates NAME... gives each model $M/NAME.safetensors lambda, the iterations (8 / 20)
# and the shaping (kappa 0 / 0.7) at sigma 0.1 on $N set12 crops and measures it on BSD68 at sigma
# 0.1 (paper protocol), all in parallel, each within $E s; prints the tables and packs.
await_trainings() {
  sleep ${CHECK_AFTER:-45}
  for p in $1; do kill -0 $p 2>/dev/null || { echo "a training ended early:"; tail -n 3 $R/train_*.log; }; done
  say "checked"; tail -qn 1 $M/*.csv
  wait $1; say "training done"; tail -qn 1 $M/*.csv; pack
}
evaluate_one() {  # name
  local n=$1
  timeout $E bash -c "
    python3 -m alr bench calibrate --model $M/$n.safetensors --tasks denoise --sigmas 0.1 --cal-images $N \
      --iters 8,20 --concavity 0,0.7 ${DEVICE:+--device $DEVICE} ${CAL_ARGS} -o $R/cal_$n &&
    python3 -m alr bench table2 --model $R/cal_$n/$n.safetensors --protocol paper --sigmas 0.1 --methods alr \
      ${DEVICE:+--device $DEVICE} ${TABLE2_ARGS} -o $R/t2_$n" > $R/eval_$n.log 2>&1
  say "eval $n: exit $?"
}
evaluate_candidates() {
  local W="" n f
  for n in "$@"; do evaluate_one $n & W="$W $!"; done
  wait $W
  for f in $R/cal_*/results.md $R/t2_*/results.md; do [ -e "$f" ] && { echo "== $f"; grep -E "^\| " $f | tail -n +3; }; done
  pack; say "all done"
}
