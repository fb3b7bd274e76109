#!/usr/bin/env bash
# The multi-source benchmark on one GPU, each design's fine-tunes shared out over PARTS
# processes (benchmarks/multisource/multisource_eval.py --part), then each design's report.
#
#   bash benchmarks/multisource/gpu_run.sh [DATA_DIR] [PARTS] [LOGS] [WHICH]
#
# WHICH=glue (the default): both GLUE designs (mrpc, sst2; DATA_DIR is the GLUE folder,
# default ../shared/data/glue) at the reference's lengths (the configs' defaults: 20 meta
# epochs, 5 per fine-tune); about 4 hours a design on 2 CPU cores, one 10-minute call on an
# H200. WHICH=ni: the Natural Instructions design (DATA_DIR: the task folders' folder,
# default ../shared/data/natural_instructions) with 10x the CPU run's data (every training
# row of each task instead of 40: about 8,000 rows), the CPU run's settings otherwise;
# not run yet (sized to fit one 10-minute call on an H200).
#
# Every step resumes: rerun the same command (on a GPU or CPU) to finish what a cut-off
# run left; finished fine-tunes are reused (their results.json and config.json suffice).
set -uo pipefail
which=${4:-glue}
if [ "$which" = ni ]; then
  data=${1:-../shared/data/natural_instructions}
else
  data=${1:-../shared/data/glue}
fi
parts=${2:-6}
logs=${3:-/tmp/fishjax_multisource_logs}
mkdir -p "$logs"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the processes share the GPU's memory
export TOKENIZERS_PARALLELISM=false
eval_cmd=(python -m benchmarks.multisource.multisource_eval)

design() {  # name, out folder, then the design's own arguments
  local d=$1 out=$2
  shift 2
  # Checkpoints are deleted when a run finishes (its artefact and results stay).
  local args=(--design "$d" --out "$out" --set train.keep_checkpoints=False "$@")
  echo "$(date +%T) $d: selection (meta-initialisation, features, calibration, estimates)"
  "${eval_cmd[@]}" "${args[@]}" --skip first_order,true_subsets,downstream,keep_scan \
    > "$logs/$d.selection.log" 2>&1 \
    || { echo "$d: selection failed: see $logs/$d.selection.log"; return 1; }
  echo "$(date +%T) $d: fine-tunes in $parts processes"
  for i in $(seq 0 $((parts - 1))); do
    "${eval_cmd[@]}" "${args[@]}" --part "$i/$parts" > "$logs/$d.part$i.log" 2>&1 \
      || echo "$d: part $i/$parts failed: see $logs/$d.part$i.log" &
  done
  wait
  echo "$(date +%T) $d: report"
  "${eval_cmd[@]}" "${args[@]}" > "$logs/$d.report.log" 2>&1 \
    || { echo "$d: report failed: see $logs/$d.report.log"; return 1; }
  echo "$(date +%T) $d: done"
}

if [ "$which" = ni ]; then
  design ni benchmarks/results/multisource_ni_gpu --ni_dir "$data" --seeds 0,1 \
    --keep_scan "" --true_subsets 20 --set sources.rows_per_source=None
else
  design mrpc benchmarks/results/multisource --glue_dir "$data" &
  design sst2 benchmarks/results/multisource_sst2 --glue_dir "$data" &
  wait
fi
