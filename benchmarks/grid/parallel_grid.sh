#!/usr/bin/env bash
# The committed GPU grids as they ran on one H100: 8 processes sharing the GPU, each with
# its own output folder, then merged into benchmarks/results/{glue_gpu,ird_vs_fish_gpu} and
# reported (tables in README.md, plots). About 20 minutes on an H100; far too long for CPU.
#
#   bash benchmarks/grid/parallel_grid.sh ../shared/data/glue [PARTS_DIR]
#
# Rerunning with the same PARTS_DIR resumes every part (finished cells are skipped); the
# merge replaces the committed folders' cells with the parts' (`--replace`).
set -euo pipefail
glue_dir=${1:?usage: bash benchmarks/grid/parallel_grid.sh GLUE_DIR [PARTS_DIR]}
parts=${2:-/tmp/fishjax_grid_parts}
mkdir -p "$parts"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # processes share the GPU's memory
export TOKENIZERS_PARALLELISM=false

rest=full,fish,ird,sift,bitfit,random_mask,dora,dora_fish
peft=lora,lora_fish,adapter,adapter_fish
baselines=lora_fish_random,lora_fish_reversed,adapter_fish_random,adapter_fish_reversed
grid() {  # name, glue.py arguments
  local name=$1; shift
  python -m benchmarks.grid.glue --glue_dir="$glue_dir" --out="$parts/$name" "$@" \
    > "$parts/$name.log" 2>&1 || echo "part $name failed: see $parts/$name.log" >&2
}
for task in rte mrpc; do
  grid "peft_$task" --tasks=$task --methods=$peft,$baselines --seeds=0,1,2 &
  grid "rest_$task" --tasks=$task --methods=$rest --seeds=0,1,2 &
  python -m benchmarks.analysis.ird_vs_fish --glue_dir="$glue_dir" --tasks=$task \
    --out="$parts/ivf_$task" > "$parts/ivf_$task.log" 2>&1 &
done
grid sst2_s0 --tasks=sst2 --methods=$peft,$rest --seeds=0 &
grid sst2_s12 --tasks=sst2 --methods=$peft,$rest --seeds=1,2 &
wait

python -m benchmarks.grid.merge_results --replace --out benchmarks/results/glue_gpu "$parts"/peft_rte \
  "$parts"/peft_mrpc "$parts"/rest_rte "$parts"/rest_mrpc "$parts"/sst2_s0 "$parts"/sst2_s12
python -m benchmarks.grid.glue --report --plots --out benchmarks/results/glue_gpu --readme README.md
for setting in n256-k0.001 n256-k0.005 n1024-k0.001 n1024-k0.005; do
  python -m benchmarks.grid.merge_results --replace --out "benchmarks/results/ird_vs_fish_gpu/$setting" \
    "$parts/ivf_rte/$setting" "$parts/ivf_mrpc/$setting"
done
python -m benchmarks.analysis.ird_vs_fish --report --out benchmarks/results/ird_vs_fish_gpu --readme README.md
