#!/usr/bin/env bash
# The instruction-tuning grid (benchmarks/instruct/instruct_grid.py) with 10x the training
# data (600 rows per task where a task has them; the validation and test rows are the CPU
# grid's, so the figures compare), on one GPU, the cells of each phase in JOBS processes.
# Not run yet: no device was lent to the task that wrote it; sized to fit one 10-minute
# call on an H200 (28 cells, a few minutes each, 8 at a time).
#
#   bash benchmarks/instruct/gpu_run.sh [OUT] [JOBS]
#
# Resumes like the CPU grid: rerun the same command to finish what a cut-off run left.
set -uo pipefail
out=${1:-benchmarks/results/instruct_gpu}
jobs=${2:-8}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the processes share the GPU's memory
export TOKENIZERS_PARALLELISM=false
python -m benchmarks.instruct.instruct_grid --out "$out" --train_per_task 600 \
  --jobs "$jobs" --workroot /tmp/fishjax-instruct-gpu
python -m benchmarks.instruct.instruct_grid --out "$out" --report
