"""Merges `benchmarks/grid/glue.py` result folders into one, e.g. a grid run as parallel processes.

  python -m benchmarks.grid.merge_results --out benchmarks/results/glue_gpu /tmp/part_a /tmp/part_b

A grid can be split over processes (different tasks, methods or seeds, each with its own
`--out`) to fill a GPU, then merged: every finished cell of each source's `results.json`
is copied into `<out>/results.json` with its cell folder (`<src>/cells/<id>/`, without
checkpoints or exports) under `<out>/cells/`, its `workdir` rewritten and `merged_from`
recorded. A cell that ran a registered method with exactly the overrides of a
`METHOD_VARIANTS` entry (e.g. `lora_fish` with `--set method.peft.selection=random`) is
the same run as that variant and is filed under the variant's name. A validation-protocol
cell (`--select_on=validation`) is filed by its learning rate too, and its `row_split`,
when the file is a grid's carved split, is pointed at `<out>/splits/` (copied from
`<src>/splits/` if `<out>` has none), refused unless the file there holds the same rows
(sha256). A cell `<out>` already holds with the
same result is left as it is. Two sources with
different finished results for one cell are an error (nothing is written; `--replace`
starts `<out>` afresh instead of merging into it); cells that failed are skipped. Then
`python -m benchmarks.grid.glue --report --out <out>` writes the table.
"""

from __future__ import annotations

import argparse
import os
import shutil

from benchmarks.common import cli
from benchmarks.grid import glue
from benchmarks.grid import validation_protocol as vp
from benchmarks.grid.cells import cell_id
from fishjax.core.io import atomic_write_json, file_sha256, read_json

SKIP = shutil.ignore_patterns("checkpoints", "best", "export")
_VOLATILE = ("workdir", "merged_from", "method", "base_method")


def canonical_method(cell: dict) -> str:
    """The grid method a cell ran: a METHOD_VARIANTS name when its method and overrides are
    exactly what `glue.py --methods=<variant>` records, else its own method."""
    plain = argparse.Namespace(set=[], no_method_overrides=False)
    for name, (base, _) in glue.METHOD_VARIANTS.items():
        if (cell["method"] == base
                and list(cell.get("overrides", [])) == glue.cell_overrides(name, plain)):
            return name
    return cell["method"]


def _same(a: dict, b: dict) -> bool:
    def strip(c: dict) -> dict:
        kept = {k: v for k, v in c.items() if k not in _VOLATILE}
        if isinstance(kept.get("row_split"), dict):  # the same rows wherever the file lies
            kept["row_split"] = {k: v for k, v in kept["row_split"].items() if k != "path"}
        return kept
    return strip(a) == strip(b)


def _row_split_in(out: str, src: str, cid: str, split: dict, splits: dict[str, str]) -> dict:
    """A cell's `row_split` record pointed at `<out>/splits/` (the file copied there from
    `<src>/splits/` when `out` has none): the same rows, by sha256, or an error."""
    name = os.path.basename(split["path"])
    target = os.path.join(out, "splits", name)
    have = target if os.path.exists(target) else splits.get(target) or os.path.join(
        src, "splits", name)
    if not os.path.exists(have):  # a split of its own elsewhere (--row_split): kept
        return split
    if file_sha256(have) != split.get("sha256"):
        raise SystemExit(f"cell {cid} in {src} trained on other rows than {have} holds; "
                         "nothing written")
    if have != target:
        splits[target] = have
    return {**split, "path": target}


def merge(out: str, sources: list[str], replace: bool = False) -> dict:
    """Merges the finished cells of `sources` into `out` (see the module doc); returns the
    merged state. `replace`: `out`'s earlier cells are dropped (a rerun of the parts)."""
    path = os.path.join(out, "results.json")
    state = read_json(path) if os.path.exists(path) and not replace else {"cells": {}}
    plan = []  # (source cell folder or None, new id, merged cell)
    splits: dict[str, str] = {}  # split files to copy into <out>/splits: {target: source}
    for src in sources:
        src_path = os.path.join(src, "results.json")
        if not os.path.isfile(src_path):
            raise SystemExit(f"{src_path}: not found")
        if os.path.abspath(src) == os.path.abspath(out):
            raise SystemExit(f"{src}: a source cannot be the output folder")
        for old_id, cell in read_json(src_path)["cells"].items():
            if cell.get("status") != "ok":
                continue
            method = canonical_method(cell)
            # validation-protocol cells are one per learning rate: their id names it
            validation = cell.get("select_on") == "validation"
            new_id = vp.cell_id(cell["task"], method, cell["learning_rate"], cell["seed"]) \
                if validation else cell_id(cell["task"], method, cell["seed"])
            have = state["cells"].get(new_id)
            if have is not None and have.get("status") == "ok":
                if not _same(have, cell):
                    raise SystemExit(f"cell {new_id}: {src_path} has a different finished "
                                     f"result than {have.get('merged_from') or path}; "
                                     "nothing written")
                continue  # already merged (or the source started from out's own cells)
            if validation and cell.get("row_split"):
                cell = {**cell, "row_split": _row_split_in(out, src, new_id, cell["row_split"],
                                                           splits)}
            folder = os.path.join(src, "cells", old_id)
            # A cell without its folder here (e.g. reused from another grid) keeps its path.
            has_folder = os.path.isdir(folder)
            workdir = os.path.join(out, "cells", new_id) if has_folder else cell.get("workdir")
            merged = {**cell, "method": method, "base_method": cell.get("base_method",
                                                                         cell["method"]),
                      "workdir": workdir, "merged_from": src_path}
            state["cells"][new_id] = merged
            plan.append((folder if has_folder else None, workdir))
    if replace:
        shutil.rmtree(os.path.join(out, "cells"), ignore_errors=True)
    for target, source in splits.items():
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
    for folder, workdir in plan:
        if folder is not None:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.copytree(folder, workdir, ignore=SKIP)
    os.makedirs(out, exist_ok=True)
    atomic_write_json(path, state)
    print(f"{path}: {len(plan)} cells merged from {len(sources)} folders, "
          f"{len(state['cells'])} in all")
    return state


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--out", required=True, help="the merged folder (created or extended)")
    p.add_argument("sources", nargs="+", help="glue.py output folders")
    p.add_argument("--replace", action="store_true",
                   help="drop <out>'s earlier cells instead of merging into them (a rerun)")
    args = p.parse_args(argv)
    return merge(args.out, args.sources, replace=args.replace)


if __name__ == "__main__":
    main()
