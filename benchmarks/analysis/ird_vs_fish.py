"""IRD vs FISH on GLUE over the Fisher sample budget N0 and the keep ratio (resumable).

  python -m benchmarks.analysis.ird_vs_fish --glue_dir=../shared/data/glue --tasks=rte,mrpc \\
      --pools=256,1024 --keep_ratios=0.001,0.005 --seeds=0,1,2 \\
      --out=benchmarks/results/ird_vs_fish
  python -m benchmarks.analysis.ird_vs_fish --report --out=benchmarks/results/ird_vs_fish \\
      --readme README.md      # report only; rewrites the README's ird-table block

Each setting (N0, keep ratio) is a `benchmarks/grid/glue.py` grid of the methods `fish` and `ird`
(same protocol, learning rates and resumability) in its own folder `<out>/n<N0>-k<keep>/`:
FISH scores on N0 training examples (`method.fisher.num_samples`), IRD starts from a pool of
N0 (`method.ird.pool_size`, its other options at their defaults); both train the same mask
budget (`method.keep_ratio`, head in the budget). Overrides are passed only where they
differ from the configs' defaults, so with `--reuse=benchmarks/results/glue` the `fish`
cells of the main grid (N0 = 1024, keep 0.5%) are copied instead of rerun.

`<out>/results.md` (and `--json`): per task and setting, mean ± std over seeds of the task's
main metric for FISH and IRD, IRD - FISH, the seeds IRD wins, and IRD's selection cost
relative to FISH's: per-example backward passes and selection seconds (`fisher_seconds`).
Every cell is reported, including where IRD loses.
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks.common import cli, readme_blocks
from benchmarks.grid import glue
from benchmarks.grid.cells import cell_id, score_of
from configs import default
from fishjax.core.io import atomic_write_json, atomic_write_text, read_json

METHODS = ("fish", "ird")
# README block (benchmarks/common/readme_blocks.py): `<!-- ird-table:begin <out>/report.json -->`;
# its text is `markdown(report.json)`.
README_BLOCK = "ird-table"


def setting_dir(out: str, pool: int, keep: float) -> str:
    return os.path.join(out, f"n{pool}-k{keep:g}")


def overrides(pool: int, keep: float) -> list[str]:
    """`--set` assignments for a setting: only those that differ from the defaults."""
    d = default.get_config().method
    sets = []
    if pool != d.fisher.num_samples:
        sets.append(f"method.fisher.num_samples={pool}")
    if pool != d.ird.pool_size:
        sets.append(f"method.ird.pool_size={pool}")
    if keep != d.keep_ratio:
        sets.append(f"method.keep_ratio={keep}")
    return sets


def reuse_cells(source: str, target: str, sets: list[str], tasks: list[str],
                seeds: list[int]) -> int:
    """Copies finished `fish` cells with exactly these overrides from another grid."""
    src_path = os.path.join(source, "results.json")
    if not os.path.exists(src_path):
        raise SystemExit(f"--reuse: {src_path} not found")
    src = read_json(src_path)["cells"]
    path = os.path.join(target, "results.json")
    state = read_json(path) if os.path.exists(path) else {"cells": {}}
    n = 0
    for t in tasks:
        for s in seeds:
            cid = cell_id(t, "fish", s)
            cell = src.get(cid)
            if (cid in state["cells"] or not cell or cell.get("status") != "ok"
                    or list(cell.get("overrides", [])) != sets):
                continue
            state["cells"][cid] = {**cell, "reused_from": os.path.join(source, "results.json")}
            n += 1
    if n:
        atomic_write_json(path, state)
    return n


def _stat(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else "–"


def _ratio(a: list[float], b: list[float]) -> str:
    return f"{np.mean(a) / np.mean(b):.2f}x" if a and b and np.mean(b) > 0 else "–"


def comparison(out: str, tasks: list[str], pools: list[int], keeps: list[float]) -> dict:
    """Rows of the report: one per (task, N0, keep ratio), from the settings' results."""
    rows = []
    for t in tasks:
        for pool in pools:
            for keep in keeps:
                path = os.path.join(setting_dir(out, pool, keep), "results.json")
                cells = read_json(path)["cells"] if os.path.exists(path) else {}
                by = {m: {c["seed"]: c for c in cells.values()
                          if c["task"] == t and c["method"] == m and c["status"] == "ok"}
                      for m in METHODS}
                score = {m: {s: 100 * score_of(c) for s, c in by[m].items()}
                         for m in METHODS}
                paired = sorted(set(score["fish"]) & set(score["ird"]))
                cost = {m: {k: [c["method_summary"].get(k) for c in by[m].values()
                                if c["method_summary"].get(k) is not None]
                            for k in ("fisher_backward_passes", "fisher_seconds")}
                        for m in METHODS}
                rows.append({
                    "task": t, "pool": pool, "keep_ratio": keep,
                    "fish": [score["fish"][s] for s in sorted(score["fish"])],
                    "ird": [score["ird"][s] for s in sorted(score["ird"])],
                    "seeds_paired": paired,
                    "ird_minus_fish": [score["ird"][s] - score["fish"][s] for s in paired],
                    "cost": cost,
                })
    return {"rows": rows}


def markdown(report: dict) -> str:
    lines = ["| task | N0 | keep | FISH | IRD | IRD - FISH (paired) | IRD wins | "
             "backward passes IRD/FISH | selection time IRD/FISH |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        d = r["ird_minus_fish"]
        wins = f"{sum(x > 0 for x in d)}/{len(d)}" if d else "–"
        c = r["cost"]
        lines.append(
            f"| {r['task']} | {r['pool']} | {100 * r['keep_ratio']:g}% | "
            f"{_stat(r['fish'])} (n={len(r['fish'])}) | {_stat(r['ird'])} (n={len(r['ird'])})"
            f" | {(f'{np.mean(d):+.1f} ± {np.std(d):.1f}') if d else '–'} | {wins} | "
            f"{_ratio(c['ird']['fisher_backward_passes'], c['fish']['fisher_backward_passes'])}"
            f" | {_ratio(c['ird']['fisher_seconds'], c['fish']['fisher_seconds'])} |")
    return "\n".join(lines) + "\n"


def run_setting(args, pool: int, keep: float, seed: int, tasks: list[str],
                seeds: list[int]) -> None:
    """One seed of one setting: a glue.py grid of fish and ird (finished cells skipped)."""
    sets = overrides(pool, keep)
    out = setting_dir(args.out, pool, keep)
    if args.reuse:
        n = reuse_cells(args.reuse, out, sets, tasks, seeds)
        if n:
            print(f"{out}: reused {n} fish cells from {args.reuse}", flush=True)
    argv = ["--tasks", ",".join(tasks), "--methods", ",".join(METHODS), "--seeds", str(seed),
            "--out", out]
    if args.glue_dir:
        argv += ["--glue_dir", args.glue_dir]
    for s in sets:
        argv += ["--set", s]
    glue.main(argv)


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=None)
    p.add_argument("--tasks", default="rte,mrpc")
    p.add_argument("--pools", default="256,1024", help="N0 values")
    p.add_argument("--keep_ratios", default="0.001,0.005")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="benchmarks/results/ird_vs_fish")
    p.add_argument("--reuse", default=None,
                   help="a glue.py output folder whose matching fish cells are copied")
    p.add_argument("--report", action="store_true", help="only rewrite the report")
    cli.add_json(p, help="also write the report here")
    cli.add_readme(p, README_BLOCK,
                   help=f"rewrite this README's {README_BLOCK} block for <out>/report.json")
    args = p.parse_args(argv)
    tasks = args.tasks.split(",")
    pools = [int(x) for x in args.pools.split(",")]
    keeps = [float(x) for x in args.keep_ratios.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    if any(n < 1 for n in pools) or any(not 0 < k < 1 for k in keeps):
        raise SystemExit("--pools must be >= 1 and --keep_ratios in (0, 1)")
    # fail before the grid, not after it
    cli.check_readme(args.readme, README_BLOCK, os.path.join(args.out, "report.json"))
    if not args.report:
        # Seed-major (as glue.py): a partial run already compares every setting.
        for seed in seeds:
            for pool in pools:
                for keep in keeps:
                    run_setting(args, pool, keep, seed, tasks, seeds)
    report = comparison(args.out, tasks, pools, keeps)
    table = markdown(report)
    atomic_write_text(os.path.join(args.out, "results.md"), table)
    atomic_write_json(os.path.join(args.out, "report.json"), report)
    cli.write_json(args.json, report)
    if args.readme:
        report_path = os.path.join(args.out, "report.json")
        readme_blocks.write(args.readme, README_BLOCK, report_path, table)
        print(f"{args.readme}: {README_BLOCK} block rewritten from {report_path}")
    print(table)
    return report


if __name__ == "__main__":
    main()
