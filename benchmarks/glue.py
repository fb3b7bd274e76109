"""Grid of fine-tuning runs: methods x GLUE tasks x seeds, resumable, with a Markdown table.

  python benchmarks/glue.py --glue_dir=../shared/data/glue --tasks=rte,mrpc \\
      --methods=full --seeds=0,1,2 --out=benchmarks/results/glue

Each cell (task, method, seed) runs `train_and_evaluate` with the task's config from
`configs/glue_<task>.py` into `<out>/cells/<task>-<method>-s<seed>/`. Finished cells are
recorded in `<out>/results.json` (written atomically after every cell) and skipped on a
rerun; a cell that crashes is recorded with its error and the grid goes on (rerun to retry
it). `<out>/results.md` holds the table: mean ± std over seeds of each task's main metric.

Protocol: each task's config (3 epochs, batch 32, length buckets, AdamW with warmup and
linear decay; `configs/glue_<task>.py`), the reported score is the dev metric after the
last epoch (no checkpoint picking on dev). Learning rate per method (`--method_lr`): 1e-4
for `full` (picked on RTE seed 0 between 3e-5 and 1e-4, see configs/glue_rte.py) and 5e-4
for the sparse methods (fish, random_mask, bitfit, ird, sift) — a common choice for sparse updates,
not tuned here.

`--set key=value` overrides config fields for every cell (e.g. `--set train.num_epochs=1`);
`--json PATH` also writes the results there.
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import shutil
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fishjax.data import get_task  # noqa: E402

log = logging.getLogger("fishjax.benchmarks")
from fishjax.io_utils import atomic_write_json, atomic_write_text, read_json  # noqa: E402


def cell_id(task: str, method: str, seed: int) -> str:
    return f"{task}-{method}-s{seed}"


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config, assignment: str) -> None:
    if "=" not in assignment:
        raise SystemExit(f"--set expects key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        if p not in node:
            raise SystemExit(f"--set {key}: the config has no section {p!r}")
        node = node[p]
    if leaf not in node:
        raise SystemExit(f"--set {key}: the config has no such field")
    node[leaf] = parse_value(value)


def cell_config(task: str, method: str, seed: int, args):
    import importlib

    config = importlib.import_module(f"configs.glue_{task}").get_config()
    config.seed = seed
    config.method.name = method
    config.model.name = args.model
    if args.glue_dir:
        config.data.dir = os.path.join(args.glue_dir, get_task(task).glue_folder)
    lrs = dict(item.split("=") for item in args.method_lr.split(",") if item)
    if method in lrs:
        config.train.learning_rate = float(lrs[method])
    for assignment in args.set:
        apply_override(config, assignment)
    return config


def run_cell(task: str, method: str, seed: int, args) -> dict:
    from fishjax.trainer import train_and_evaluate

    config = cell_config(task, method, seed, args)
    workdir = os.path.join(args.out, "cells", cell_id(task, method, seed))
    t0 = time.perf_counter()
    res = train_and_evaluate(config, workdir)
    if not args.keep_checkpoints:  # ~0.3 GB per cell; logs, results and masks stay
        for sub in ("checkpoints", "best", "export"):
            shutil.rmtree(os.path.join(workdir, sub), ignore_errors=True)
    spec = get_task(task)
    best = res["best"] or {}
    return {
        "status": "ok",
        "task": task,
        "method": method,
        "seed": seed,
        "main_metric": spec.main_metric,
        "final": res["final_eval"],
        "best": best.get("metrics"),
        "best_step": best.get("step"),
        "trainable_entries": res["method_summary"]["trainable_entries"],
        "method_summary": res["method_summary"],
        "total_steps": res["total_steps"],
        "wall_s": time.perf_counter() - t0,
        "train_s": res["train_s"],
        "setup_s": res["setup_s"],
        "learning_rate": config.train.learning_rate,
        "overrides": list(args.set),
        "workdir": workdir,
    }


def score_of(cell: dict) -> float | None:
    """The reported score of a cell: its final dev main metric (no dev-set model picking)."""
    final = cell.get("final") or {}
    key = cell["main_metric"]
    if key not in final:  # MNLI: metrics are prefixed by the eval split
        key = next((k for k in final if k.endswith("/" + cell["main_metric"])), None)
    return None if key is None else float(final[key])


def markdown_table(cells: dict[str, dict], tasks: list[str], methods: list[str]) -> str:
    """Rows: methods; columns: tasks; entries: 100 x mean ± std over seeds (n seeds)."""
    lines = ["| method | " + " | ".join(f"{t} ({get_task(t).main_metric})" for t in tasks)
             + " |", "|---" * (len(tasks) + 1) + "|"]
    for m in methods:
        row = [m]
        for t in tasks:
            scores = [score_of(c) for c in cells.values()
                      if c["task"] == t and c["method"] == m and c["status"] == "ok"]
            scores = [100 * s for s in scores if s is not None]
            row.append(f"{np.mean(scores):.1f} ± {np.std(scores):.1f} (n={len(scores)})"
                       if scores else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--glue_dir", default=None, help="folder with one subfolder per GLUE task")
    p.add_argument("--tasks", default="rte")
    p.add_argument("--methods", default="full")
    p.add_argument("--seeds", default="0")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--out", default="benchmarks/results/glue")
    p.add_argument("--method_lr",
                   default="full=1e-4,fish=5e-4,random_mask=5e-4,bitfit=5e-4,ird=5e-4,sift=5e-4",
                   help="per-method peak learning rate, method=lr,...")
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--json", default=None, help="also write results.json here")
    p.add_argument("--report", action="store_true",
                   help="only rewrite results.md from results.json (runs nothing)")
    p.add_argument("--keep_checkpoints", action="store_true",
                   help="keep each cell's checkpoints and export (deleted by default)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("fishjax").setLevel(logging.INFO)  # progress; not orbax's file log

    tasks = [get_task(t).name for t in args.tasks.split(",")]
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    results_path = os.path.join(args.out, "results.json")
    state = read_json(results_path) if os.path.exists(results_path) else {"cells": {}}
    cells = state["cells"]

    # Seed-major order: every method on every task for seed 0 first, so a partial grid
    # already compares methods.
    grid = [(t, m, s) for s in seeds for t in tasks for m in methods]
    if args.report:
        todo = []
    else:
        todo = [g for g in grid if cells.get(cell_id(*g), {}).get("status") != "ok"]
    finished = sum(cells.get(cell_id(*g), {}).get("status") == "ok" for g in grid)
    log.info("%d cells, %d already finished, %d to run", len(grid), finished, len(todo))
    for i, (t, m, s) in enumerate(todo):
        cid = cell_id(t, m, s)
        log.info("[%d/%d] %s", i + 1, len(todo), cid)
        try:
            cells[cid] = run_cell(t, m, s, args)
        except Exception as e:  # one broken cell must not stop the grid
            cells[cid] = {"status": "error", "task": t, "method": m, "seed": s,
                          "main_metric": get_task(t).main_metric, "error": repr(e),
                          "traceback": traceback.format_exc()}
            log.error("%s failed: %r", cid, e)
        atomic_write_json(results_path, state)
        atomic_write_text(os.path.join(args.out, "results.md"),
                          markdown_table(cells, tasks, methods))

    table = markdown_table(cells, tasks, methods)
    atomic_write_text(os.path.join(args.out, "results.md"), table)
    if args.json:
        atomic_write_json(args.json, state)
    print(table)
    return state


if __name__ == "__main__":
    main()
