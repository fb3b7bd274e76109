#!/usr/bin/env bash
# Both multi-source designs (mrpc, sst2) on one GPU at the reference's lengths (the
# configs' defaults: 20 meta epochs, 5 per fine-tune), each design's fine-tunes shared out
# over PARTS processes (benchmarks/multisource/multisource_eval.py --part), then each
# design's report. Far too long for 2 CPU cores (about 4 hours a design); on one H200 it
# is meant to fit one 10-minute call.
#
#   bash benchmarks/multisource/gpu_run.sh [GLUE_DIR] [PARTS] [LOGS]
#
# Every step resumes: rerun the same command (on a GPU or CPU) to finish what a cut-off
# run left; finished fine-tunes are reused (their results.json and config.json suffice).
set -uo pipefail
glue=${1:-../shared/data/glue}
parts=${2:-6}
logs=${3:-/tmp/fishjax_multisource_logs}
mkdir -p "$logs"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the processes share the GPU's memory
export TOKENIZERS_PARALLELISM=false
# Checkpoints are deleted when a run finishes (its artefact and results stay).
common=(--glue_dir "$glue" --set train.keep_checkpoints=False)
eval_cmd=(python -m benchmarks.multisource.multisource_eval)

design() {  # name, out folder
  local d=$1 out=$2
  echo "$(date +%T) $d: selection (meta-initialisation, features, calibration, estimates)"
  "${eval_cmd[@]}" --design "$d" --out "$out" "${common[@]}" \
    --skip first_order,true_subsets,downstream,keep_scan > "$logs/$d.selection.log" 2>&1 \
    || { echo "$d: selection failed: see $logs/$d.selection.log"; return 1; }
  echo "$(date +%T) $d: fine-tunes in $parts processes"
  for i in $(seq 0 $((parts - 1))); do
    "${eval_cmd[@]}" --design "$d" --out "$out" "${common[@]}" --part "$i/$parts" \
      > "$logs/$d.part$i.log" 2>&1 || echo "$d: part $i/$parts failed: see $logs/$d.part$i.log" &
  done
  wait
  echo "$(date +%T) $d: report"
  "${eval_cmd[@]}" --design "$d" --out "$out" "${common[@]}" > "$logs/$d.report.log" 2>&1 \
    || { echo "$d: report failed: see $logs/$d.report.log"; return 1; }
  echo "$(date +%T) $d: done"
}

design mrpc benchmarks/results/multisource &
design sst2 benchmarks/results/multisource_sst2 &
wait
