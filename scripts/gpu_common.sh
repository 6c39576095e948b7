# Shared prologue of the GPU recipes (sourced): environment, results folder $R (models in $M), a log
# in $OUT/log.txt, pack (results.tar.gz), the device, and say (a message with the elapsed time).
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
R=$OUT/r; M=$R/models; mkdir -p $M
exec > >(tee $OUT/log.txt) 2>&1
pack() { tar -czf $OUT/results.tar.gz -C $OUT r; }
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
start=$(date +%s)
say() { echo "$* at $(( $(date +%s) - start )) s"; }
