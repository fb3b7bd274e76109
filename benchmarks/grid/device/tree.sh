#!/usr/bin/env bash
# Keeps the large committed result files out of a `device` call's transfer (its limit is
# 64 MiB with the carried folders; the tracked tree is ~95 MB, most of it adapters and
# features the evidence grid does not read), and puts them back.
#   bash benchmarks/grid/device/tree.sh shrink    # before the calls: nothing is deleted,
#   bash benchmarks/grid/device/tree.sh restore   # the files leave git's index only
# Do not commit between the two: the commit would record the files as deleted.
set -euo pipefail
git_dir=$(git rev-parse --git-dir)
case "${1:-}" in
  shrink)
    [ -e "$git_dir/fishjax-drop.txt" ] && { echo "already shrunk: run restore first" >&2; exit 1; }
    git diff --cached --quiet || { echo "staged changes: commit them first" >&2; exit 1; }
    cp "$git_dir/info/exclude" "$git_dir/fishjax-exclude.bak" 2>/dev/null || : > "$git_dir/fishjax-exclude.bak"
    keep='^benchmarks/results/(evidence|xpeft_eval)/'
    { git ls-files benchmarks/results | grep -v -E "$keep"
      echo benchmarks/results/xpeft_eval/banks/all.safetensors; } > "$git_dir/fishjax-drop.txt"
    sed 's|^|/|' "$git_dir/fishjax-drop.txt" >> "$git_dir/info/exclude"
    git rm -q --cached --pathspec-from-file="$git_dir/fishjax-drop.txt"
    echo "tree that travels: $(git ls-files -co --exclude-standard -z | xargs -0 du -cb | tail -1)";;
  restore)
    [ -e "$git_dir/fishjax-drop.txt" ] || { echo "nothing to restore" >&2; exit 1; }
    # only the dropped entries come back, from HEAD: nothing else in the index changes
    git reset -q --pathspec-from-file="$git_dir/fishjax-drop.txt"
    mv "$git_dir/fishjax-exclude.bak" "$git_dir/info/exclude"
    rm -f "$git_dir/fishjax-drop.txt"; git status --short | head;;
  *) echo "usage: bash benchmarks/grid/device/tree.sh shrink|restore" >&2; exit 2;;
esac
