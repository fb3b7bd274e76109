"""Encoder evidence on the validation protocol: each method at the learning rate its own
held-out rows chose, 3 seeds, budget curves, RTE as the hard case, the FISH reference recipe.

  python -m benchmarks.grid.evidence --glue_dir=../shared/data/glue --estimate
  python -m benchmarks.grid.evidence --glue_dir=../shared/data/glue \\
      --out=benchmarks/results/evidence
  python -m benchmarks.grid.evidence --out=benchmarks/results/evidence --report \\
      --readme README.md

Four parts, each a `benchmarks/grid/glue.py --select_on=validation` grid in its own folder
under `--out` (resumable: a rerun skips finished cells), run in this order:
- `main`: SST-2 (the fixed 4,000-row subset, `--train_subset sst2=4000`, length 64) and
  MRPC (length 128) x `METHODS` x seeds 0, 1, 2. Every rate of the method's grid
  (`validation_protocol.LR_GRIDS`, 3 values) on seed 0, the rate best on the validation
  rows (a seeded 10% of the training rows, at most 500, never trained on) on seeds 1, 2.
- `budget`: SST-2 x fish, random_mask, ird and sift at 0.1%, 2% and 5% of all parameters
  (`<method>_b<percent>`, glue.py's BUDGET_VARIANTS; 0.5% is `main`'s), seeds
  `BUDGET_SEEDS`, each at the rate its 0.5% method chose on SST-2 in `main` (so it waits
  for that choice).
- `rte`: RTE, the hard case (a frozen MiniLM's best linear read-out is below the majority
  class; README, X-PEFT), x full, fish, sift, seeds 0, 1, 2.
- `reference`: MRPC x `fish_reference` (configs/fish_reference.py: lr 5e-5, batch 16, 7
  epochs, no warmup or weight decay, empirical Fisher over 1,024 rows, budget rounded
  down), its own rate only, seeds 0, 1, 2; like every part it trains without the
  validation rows.
`--report` rebuilds `<out>/report.json` (each part's selection: chosen rate, validation
score of every tried rate, dev scores over the seeds, majority-class marks), the budget
curve `<out>/budget_curve.png` (dev vs trainable fraction, log x axis) and, with
`--readme`, the README's `evidence` block, from the parts' results.json files only.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from benchmarks.common import cli, readme_blocks
from benchmarks.grid import glue
from benchmarks.grid import validation_protocol as vp
from benchmarks.grid.cells import trainable_fraction
from fishjax.core.io import atomic_write, atomic_write_json, read_json

log = logging.getLogger("fishjax.benchmarks")

DEFAULT_OUT = "benchmarks/results/evidence"
README_BLOCK = "evidence"
METHODS = ("full", "fish", "random_mask", "ird", "sift", "bitfit", "lora",
           "lora_fish_warmup", "adapter")
CURVE_METHODS = ("fish", "random_mask", "ird", "sift")
BUDGET_SEEDS = "0"
SEEDS = "0,1,2"
# The claims the reading checks: (claim, method A, method B), A's dev minus B's.
CLAIMS = (("FISH vs random mask at equal count", "fish", "random_mask"),
          ("IRD vs FISH", "ird", "fish"),
          ("SIFT vs full fine-tuning", "sift", "full"),
          ("LoRA-FISH (warm-up) vs LoRA", "lora_fish_warmup", "lora"))


def budget_methods() -> list[str]:
    return [f"{m}_b{p:g}" for m in CURVE_METHODS for p in glue.CURVE_BUDGETS]


def part_argv(part: str, args, lr_grid: str = "") -> list[str]:
    """The glue.py command line of one part."""
    tasks, methods, seeds = {
        "main": ("sst2,mrpc", ",".join(METHODS), SEEDS),
        "budget": ("sst2", ",".join(budget_methods()), BUDGET_SEEDS),
        "rte": ("rte", "full,fish,sift", SEEDS),
        "reference": ("mrpc", "fish_reference", SEEDS),
    }[part]
    if part == "reference":
        lr_grid = "fish_reference=5e-5"
    return ["--select_on", "validation", "--model", args.model,
            *(["--glue_dir", args.glue_dir] if args.glue_dir else []),
            "--tasks", tasks, "--methods", methods, "--seeds", seeds,
            "--train_subset", "sst2=4000", "--out", os.path.join(args.out, part),
            *(["--lr_grid", lr_grid] if lr_grid else []),
            *[x for s in args.set for x in ("--set", s)]]


def inherited_rates(out: str) -> str | None:
    """`--lr_grid` for the budget part: each curve method's 0.5% rate chosen on SST-2 in
    `main` (None until every one is chosen)."""
    path = os.path.join(out, "main", "results.json")
    if not os.path.exists(path):
        return None
    selection = read_json(path).get("selection", {}).get("sst2", {})
    chosen = {m: (selection.get(m) or {}).get("chosen_lr") for m in CURVE_METHODS}
    if any(v is None for v in chosen.values()):
        return None
    return ",".join(f"{m}_b{p:g}={chosen[m]}" for m in CURVE_METHODS
                    for p in glue.CURVE_BUDGETS)


def run(args) -> None:
    for part in ("main", "budget", "rte", "reference"):
        grid = ""
        if part == "budget":
            grid = inherited_rates(args.out)
            if grid is None:
                if args.estimate:  # any rate costs the same
                    grid = ",".join(f"{m}=1e-3" for m in budget_methods())
                else:
                    log.warning("budget: waiting for main's SST-2 rates of %s",
                                ", ".join(CURVE_METHODS))
                    continue
        log.info("part %s", part)
        est = ["--estimate", *(["--estimate_from", args.estimate_from]
                               if args.estimate_from else [])] if args.estimate else []
        glue.main(part_argv(part, args, grid) + est)


# -- the report ------------------------------------------------------------------------------


def _part(out: str, part: str) -> dict[str, Any]:
    path = os.path.join(out, part, "results.json")
    return read_json(path) if os.path.exists(path) else {"cells": {}, "selection": {}}


def curve_points(main: dict, budget: dict) -> list[dict[str, Any]]:
    """(method, percent, trainable fraction, dev mean and std over the chosen-rate seeds)
    for the curve methods on SST-2: 0.5% from `main`, the others from `budget`."""
    points = []
    for m in CURVE_METHODS:
        for percent, state, name in [(0.5, main, m), *((p, budget, f"{m}_b{p:g}")
                                                       for p in glue.CURVE_BUDGETS)]:
            sel = state.get("selection", {}).get("sst2", {}).get(name)
            if not sel or not sel["dev_scores"] or sel["chosen_lr"] is None:
                continue
            cells = [c for c in state["cells"].values() if c.get("task") == "sst2"
                     and c.get("method") == name and c.get("status") == "ok"
                     and c.get("learning_rate") == sel["chosen_lr"]]
            fraction = trainable_fraction(cells[0], state["cells"]) if cells else None
            points.append({"method": m, "percent": percent, "fraction": fraction,
                           "dev_mean": float(np.mean(sel["dev_scores"])),
                           "dev_std": float(np.std(sel["dev_scores"])),
                           "seeds": len(sel["dev_scores"]), "lr": sel["chosen_lr"]})
    return points


def claims(main: dict) -> list[dict[str, Any]]:
    """Each claim per task: both methods' dev mean ± std and A minus B (x 100)."""
    rows = []
    for claim, a, b in CLAIMS:
        for task, sel in main.get("selection", {}).items():
            sa, sb = (sel.get(a) or {}).get("dev_scores"), (sel.get(b) or {}).get("dev_scores")
            if not sa or not sb:
                continue
            rows.append({"claim": claim, "task": task, "a": a, "b": b,
                         "a_mean": 100 * float(np.mean(sa)), "a_std": 100 * float(np.std(sa)),
                         "b_mean": 100 * float(np.mean(sb)), "b_std": 100 * float(np.std(sb)),
                         "difference": 100 * float(np.mean(sa) - np.mean(sb))})
    return rows


def report(out: str) -> dict[str, Any]:
    parts = {p: _part(out, p) for p in ("main", "budget", "rte", "reference")}
    return {"parts": {p: {"selection": s.get("selection", {}),
                          "cells": sum(c.get("status") == "ok" for c in s["cells"].values())}
                      for p, s in parts.items()},
            "curve": curve_points(parts["main"], parts["budget"]),
            "claims": claims(parts["main"])}


def readme_text(rep: dict[str, Any]) -> str:
    """The README block: main, RTE and reference tables, the budget table, the claims."""
    out = []
    for part, title in (("main", "SST-2 (4,000 rows) and MRPC"), ("rte", "RTE (hard case)"),
                        ("reference", "FISH reference recipe, MRPC"),
                        ("budget", "Budget curve cells, SST-2")):
        sel = rep["parts"][part]["selection"]
        if not sel:
            continue
        tasks = list(sel)
        methods = list(dict.fromkeys(m for t in tasks for m in sel[t]))
        out.append(f"{title} ({rep['parts'][part]['cells']} cells):\n\n"
                   + vp.markdown_table(sel, tasks, methods))
    if rep["claims"]:
        lines = ["| claim | task | A: dev | B: dev | A - B |", "|---|---|---|---|---|"]
        lines += [f"| {c['claim']} | {c['task']} | {c['a']} {c['a_mean']:.1f} ± "
                  f"{c['a_std']:.1f} | {c['b']} {c['b_mean']:.1f} ± {c['b_std']:.1f} | "
                  f"{c['difference']:+.1f} |" for c in rep["claims"]]
        out.append("Claims (dev x 100, mean ± std over seeds at each method's chosen rate):"
                   "\n\n" + "\n".join(lines) + "\n")
    return "\n".join(out) or "(no cells yet)\n"


def plot(rep: dict[str, Any], path: str) -> None:
    """SST-2 dev vs trainable fraction (log x), one line per curve method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in CURVE_METHODS:
        pts = sorted((p for p in rep["curve"] if p["method"] == m and p["fraction"]),
                     key=lambda p: p["fraction"])
        if pts:
            ax.errorbar([100 * p["fraction"] for p in pts], [100 * p["dev_mean"] for p in pts],
                        yerr=[100 * p["dev_std"] for p in pts], marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("trainable entries, % of all parameters (log)")
    ax.set_ylabel("SST-2 dev accuracy x 100")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=None)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--set", action="append", default=[],
                   help="config override key=value for every cell")
    p.add_argument("--estimate", action="store_true",
                   help="print each part's expected wall time, run nothing")
    p.add_argument("--estimate_from", default=None,
                   help="a results.json whose CPU cells calibrate --estimate (e.g. "
                   "benchmarks/results/glue/results.json)")
    cli.add_readme(p, README_BLOCK, report="only rebuild report.json, the plot and "
                   "--readme from the parts' results.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("fishjax").setLevel(logging.INFO)
    if not args.report:
        run(args)
        if args.estimate:
            return {}
    rep = report(args.out)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "report.json"), rep)
    if rep["curve"]:
        plot(rep, os.path.join(args.out, "budget_curve.png"))
    if args.readme:
        readme_blocks.write(args.readme, README_BLOCK, os.path.join(args.out, "report.json"),
                            readme_text(rep))
    print(readme_text(rep))
    return rep


if __name__ == "__main__":
    main()
