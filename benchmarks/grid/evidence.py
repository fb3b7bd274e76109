"""Encoder evidence on the validation protocol: each method at the learning rate its own
held-out rows chose, 3 seeds, budget curves, RTE as the hard case, the FISH reference recipe.

  python -m benchmarks.grid.evidence --glue_dir=../shared/data/glue --estimate
  python -m benchmarks.grid.evidence --glue_dir=../shared/data/glue \\
      --out=benchmarks/results/evidence
  python -m benchmarks.grid.evidence --out=benchmarks/results/evidence --report \\
      --readme README.md

Five parts, each a `benchmarks/grid/glue.py --select_on=validation` grid in its own folder
under `--out` (resumable: a rerun skips finished cells), run in the order of `STAGES`:
`main`'s SST-2 cells first, then `budget` (which waits for their rates), then the rest of
`main` (MRPC), `rte`, `xpeft`, `reference`; so SST-2's every claim and the budget curve
are in after about 6 of the grid's estimated 21 CPU hours (it ran in 11.4 on 2 Intel Xeon
cores, 164 cells, 2026-12-06).
- `main`: SST-2 (the fixed 4,500-row subset, `--train_subset sst2=4500`: 4,050 training and
  450 validation rows; length 64) and MRPC (length 128) x `METHODS` x seeds 0, 1, 2. Every
  rate of the method's grid (`validation_protocol.LR_GRIDS`, 3 values, extended past an
  edge that scores best, at most twice) on seed 0, the rate best on the validation rows
  (a seeded 10% of the training rows, at most 500, never trained on) on seeds 1, 2.
- `budget`: SST-2 x fish, random_mask, ird and sift at 0.1%, 2% and 5% of all parameters
  (`<method>_b<percent>`, glue.py's BUDGET_VARIANTS; 0.5% is `main`'s), seeds
  `BUDGET_SEEDS`, each at the rate its 0.5% method chose on SST-2 in `main` (so it waits
  for that choice).
- `rte`: RTE, the hard case (a frozen MiniLM's best linear read-out is below the majority
  class; README, X-PEFT), x full, fish, sift, seeds 0, 1, 2; the claims read its SIFT vs
  full too.
- `xpeft`: SST-2 and MRPC (main's rows) x X-PEFT over a bank without the task (the other
  task's four shard adapters, `glue.XPEFT_LEAVE_OUT_BANK`; no bank adapter saw the cell's
  task), in the mixing variant `xpeft_choice` reads off the X-PEFT experiment's
  leave-out grid (best validation score at seed 0, mean over its two tasks), seeds 0, 1,
  2, rates `XPEFT_LR_GRID` (the head's; the scores train at 1e-2); it waits for that
  choice. `head_only` on the same rates and rows says what the bank adds to the head.
- `reference`: MRPC x `fish_reference` (configs/fish_reference.py: lr 5e-5, batch 16, 7
  epochs, no warmup or weight decay, empirical Fisher over 1,024 rows, budget rounded
  down), its own rate only, seeds 0, 1, 2; like every part it trains without the
  validation rows.
`--report` rebuilds `<out>/report.json` (each part's selection: chosen rate, validation
score of every tried rate, dev scores over the seeds, majority-class marks), the budget
curve `<out>/budget_curve.png` (dev vs trainable fraction, log x axis) and, with
`--readme`, the README's `evidence` block, from the parts' results.json files only: the
claims with verdicts (`CLAIMS`) and the curve at `BUDGET_SEEDS` on every point.
Every part reads the encoder by mean pooling (`glue.MEAN_POOLING`: what all-MiniLM-L6-v2
was trained for; the converged probes of the X-PEFT experiment score 77.3 on SST-2 dev by
the token mean and 65.1 by the pooler output), the heads of every method alike.
`touch <out>/STOP` stops the run between cells (the running cell finishes and is written).
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
from benchmarks.xpeft import xpeft_eval
from fishjax.core.io import atomic_write, atomic_write_json, read_json

log = logging.getLogger("fishjax.benchmarks")

DEFAULT_OUT = "benchmarks/results/evidence"
README_BLOCK = "evidence"
METHODS = ("full", "fish", "random_mask", "ird", "sift", "bitfit", "lora",
           "lora_fish_warmup", "adapter")
CURVE_METHODS = ("fish", "random_mask", "ird", "sift")
BUDGET_SEEDS = "0"
SEEDS = "0,1,2"
SST2_ROWS = 4500  # 10% of them (450) are the validation rows: 4,050 trained
PARTS = ("main", "budget", "rte", "xpeft", "reference")
# The run order: (part, the tasks of this stage; None: the part's own). `main` on SST-2
# first: the budget part waits for its rates, and SST-2's claims need no MRPC cell; `main`
# then goes on with MRPC in the same folder (its SST-2 cells are done and skipped).
STAGES = (("main", "sst2"), ("budget", None), ("main", None), ("rte", None),
          ("xpeft", None), ("reference", None))
# X-PEFT's part: the leave-out grid whose variant it runs, and its rates (the head's, as in
# that experiment: only the head and the adapter scores train).
XPEFT_LEAVE_OUT = os.path.join(xpeft_eval.DEFAULT_OUT, "leave_out", "results.json")
XPEFT_LR_GRID = "3e-3/1e-2/3e-2"
WAITS_FOR = {"budget": "main's SST-2 rates of " + ", ".join(CURVE_METHODS),
             "xpeft": f"the X-PEFT experiment's leave-out grid ({XPEFT_LEAVE_OUT}) to choose "
                      "its variant"}
# The claims the reading checks: (claim, method A, method B, the least A - B in dev points
# for it to hold; None: A - B > 0). A's dev minus B's, means over the seeds both have.
CLAIMS = (("FISH beats a random mask at equal count", "fish", "random_mask", None),
          ("IRD beats FISH", "ird", "fish", None),
          ("SIFT within 1 point of full fine-tuning", "sift", "full", -1.0),
          ("LoRA-FISH (warm-up) >= LoRA", "lora_fish_warmup", "lora", 0.0),
          # `xpeft`: the xpeft part's method, whichever variant it ran
          ("X-PEFT (bank without the task) within 1 point of an adapter", "xpeft", "adapter",
           -1.0),
          # the X-PEFT experiment's second line: the bank adds 3 points to the head alone
          ("X-PEFT (bank without the task) 3 points above the head alone", "xpeft",
           "head_only", 3.0))


def budget_methods() -> list[str]:
    return [f"{m}_b{p:g}" for m in CURVE_METHODS for p in glue.CURVE_BUDGETS]


def xpeft_choice(leave_out: str = XPEFT_LEAVE_OUT) -> str | None:
    """The grid method of the `xpeft` part: the leave-out variant of the X-PEFT experiment
    with the best validation score at its chosen rate (seed 0), mean over its tasks (ties:
    the first in `xpeft_eval.LEAVE_OUT_METHODS`), as its `xpeft_leaveout_*` name; None until
    every variant is chosen on every task of that grid."""
    if not os.path.exists(leave_out):
        return None
    selection = read_json(leave_out).get("selection", {})
    means = {}
    for m in xpeft_eval.LEAVE_OUT_METHODS:
        scores = [(sel.get(m) or {}).get("validation_by_lr", {}).get(
            vp.lr_id((sel.get(m) or {}).get("chosen_lr") or 0.0)) for sel in selection.values()]
        if len(scores) < len(xpeft_eval.TASKS) or None in scores:
            return None
        means[m] = float(np.mean(scores))
    best = max(xpeft_eval.LEAVE_OUT_METHODS, key=lambda m: (means[m], -list(means).index(m)))
    return best.replace("xpeft_", "xpeft_leaveout_", 1)


def part_plan(part: str, lr_grid: str = "") -> tuple[str, str, str, str]:
    """(tasks, methods, seeds, --lr_grid) of one part, comma lists (`xpeft`: `lr_grid` is
    the variant's name; `budget`: the inherited rates)."""
    tasks, methods, seeds = {
        "main": ("sst2,mrpc", ",".join(METHODS), SEEDS),
        "budget": ("sst2", ",".join(budget_methods()), BUDGET_SEEDS),
        "rte": ("rte", "full,fish,sift", SEEDS),
        "xpeft": ("sst2,mrpc", f"{lr_grid},head_only", SEEDS),
        "reference": ("mrpc", "fish_reference", SEEDS),
    }[part]
    if part == "reference":
        lr_grid = "fish_reference=5e-5"
    elif part == "xpeft":  # the head alone on the X-PEFT head's rates: what the bank adds
        lr_grid = ",".join(f"{m}={XPEFT_LR_GRID}" for m in methods.split(","))
    return tasks, methods, seeds, lr_grid


def part_argv(part: str, args, lr_grid: str = "", tasks: str | None = None,
              methods: str | None = None, out: str | None = None,
              stop_dir: str | None = None) -> list[str]:
    """The glue.py command line of one part (`xpeft`: `lr_grid` is the variant's name;
    `tasks`, `methods`: a share of the part's, None: all of them; `out`, `stop_dir`: another
    folder than `<args.out>/<part>` and `args.out`, for a share run apart)."""
    own_tasks, own_methods, seeds, lr_grid = part_plan(part, lr_grid)
    return ["--select_on", "validation", "--model", args.model,
            *(["--glue_dir", args.glue_dir] if args.glue_dir else []),
            "--tasks", tasks or own_tasks, "--methods", methods or own_methods,
            "--seeds", seeds, "--train_subset", f"sst2={SST2_ROWS}",
            "--out", out or os.path.join(args.out, part), "--stop_dir", stop_dir or args.out,
            *(["--lr_grid", lr_grid] if lr_grid else []),
            *[x for s in (*glue.MEAN_POOLING, *args.set) for x in ("--set", s)]]


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


def part_grid(part: str, out: str) -> str | None:
    """The `--lr_grid` a part runs with ("" for its own), None while it waits: `budget` for
    main's SST-2 rates, `xpeft` for the X-PEFT experiment's choice of variant."""
    if part == "budget":
        return inherited_rates(out)
    if part == "xpeft":
        return xpeft_choice()
    return ""


def run(args) -> None:
    if not args.estimate:
        cli.clear_stop_file(args.out)
    for part, tasks in STAGES:
        if tasks and args.estimate:
            continue  # the part's full stage counts these cells
        if cli.stop_requested(args.out):  # `touch <out>/STOP`: also between a part's cells
            log.warning("stop requested (%s)", cli.stop_file(args.out))
            return
        grid = part_grid(part, args.out)
        if grid is None and args.estimate:  # any rate or variant costs about the same
            grid = (",".join(f"{m}=1e-3" for m in budget_methods()) if part == "budget"
                    else "xpeft_leaveout_soft")
        elif grid is None:
            log.warning("%s: waiting for %s", part, WAITS_FOR[part])
            continue
        log.info("part %s%s", part, f" ({tasks})" if tasks else "")
        basis = args.estimate_from
        if part == "budget" and not basis and os.path.exists(main_results := os.path.join(
                args.out, "main", "results.json")):
            basis = main_results  # its own cells are none yet: time them by main's SST-2
        est = ["--estimate", *(["--estimate_from", basis] if basis else [])] \
            if args.estimate else []
        glue.main(part_argv(part, args, grid, tasks) + est)


# -- the report ------------------------------------------------------------------------------


def part_state(out: str, part: str) -> dict[str, Any]:
    path = os.path.join(out, part, "results.json")
    return read_json(path) if os.path.exists(path) else {"cells": {}, "selection": {}}


def curve_points(main: dict, budget: dict) -> list[dict[str, Any]]:
    """(method, percent, trainable fraction, dev mean and std over `BUDGET_SEEDS` at the
    chosen rate) for the curve methods on SST-2: 0.5% from `main` (its other seeds left
    out, so every point has the same seeds), the others from `budget`; and full
    fine-tuning from `main` as the `full` point at 100%."""
    seeds = {int(s) for s in BUDGET_SEEDS.split(",")}
    points = []
    for m in (*CURVE_METHODS, "full"):  # full fine-tuning: the curve's end, at 100%
        for percent, state, name in [(0.5 if m != "full" else 100.0, main, m),
                                     *((p, budget, f"{m}_b{p:g}") for p in glue.CURVE_BUDGETS
                                       if m != "full")]:
            sel = state.get("selection", {}).get("sst2", {}).get(name)
            if not sel or not sel["dev_scores"] or sel["chosen_lr"] is None:
                continue
            cells = [c for c in state["cells"].values() if c.get("task") == "sst2"
                     and c.get("method") == name and c.get("status") == "ok"
                     and c.get("learning_rate") == sel["chosen_lr"] and c["seed"] in seeds]
            devs = [d for d in (vp.score_of(c) for c in cells) if d is not None]
            if not devs:
                continue
            points.append({"method": m, "percent": percent,
                           "fraction": trainable_fraction(cells[0], state["cells"]),
                           "dev_mean": float(np.mean(devs)), "dev_std": float(np.std(devs)),
                           "seeds": len(devs), "lr": sel["chosen_lr"]})
    return points


def chosen_dev_by_seed(state: dict) -> dict[str, dict[str, dict[int, float]]]:
    """{task: {method: {seed: dev}}}: each method's finished cells at its chosen rate."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for task, sel in state.get("selection", {}).items():
        for method, entry in sel.items():
            devs = {c["seed"]: vp.score_of(c) for c in state["cells"].values()
                    if c.get("task") == task and c.get("method") == method
                    and c.get("status") == "ok" and entry.get("chosen_lr") is not None
                    and c.get("learning_rate") == entry["chosen_lr"]}
            out.setdefault(task, {})[method] = {s: d for s, d in devs.items() if d is not None}
    return out


def claim_scores(main: dict, xpeft: dict, rte: dict | None = None
                 ) -> dict[str, dict[str, dict[int, float]]]:
    """Dev scores by seed per task and method: main's, the `rte` part's (its own task: the
    claims whose methods it runs, SIFT vs full, read the hard case too), and the xpeft
    part's method as `xpeft`."""
    out = chosen_dev_by_seed(main)
    for task, per_method in chosen_dev_by_seed(rte or {}).items():
        out.setdefault(task, {}).update(per_method)
    for task, per_method in chosen_dev_by_seed(xpeft).items():
        for method, devs in per_method.items():  # the variant the part ran, and head_only
            out.setdefault(task, {})["head_only" if method == "head_only" else "xpeft"] = devs
    return out


def claims(scores: dict[str, dict[str, dict[int, float]]]) -> list[dict[str, Any]]:
    """Each claim per task: both methods' dev mean ± std and A minus B (x 100), over the
    seeds both have (a grid under way has run some methods' seeds 1 and 2 and not others';
    a 3-seed mean against one seed would not be the same comparison)."""
    rows = []
    for claim, a, b, least in CLAIMS:
        for task, per_method in scores.items():
            da, db = per_method.get(a) or {}, per_method.get(b) or {}
            common = sorted(set(da) & set(db))
            if not common:
                continue
            sa, sb = [da[s] for s in common], [db[s] for s in common]
            diff = 100 * float(np.mean(sa) - np.mean(sb))
            spread = 100 * max(float(np.std(sa)), float(np.std(sb)))
            margin = diff - (least or 0.0)  # how far the means are past the claim's line
            rows.append({"claim": claim, "task": task, "a": a, "b": b,
                         "a_mean": 100 * float(np.mean(sa)), "a_std": 100 * float(np.std(sa)),
                         "b_mean": 100 * float(np.mean(sb)), "b_std": 100 * float(np.std(sb)),
                         "seeds": len(common), "difference": diff,
                         "goal": "> 0" if least is None else f">= {least:g}",
                         "holds": diff > 0 if least is None else diff >= least,
                         # the means' difference within the larger seed std of the line
                         "within_spread": abs(margin) <= spread + 1e-9})
    return rows


def report(out: str) -> dict[str, Any]:
    parts = {p: part_state(out, p) for p in PARTS}
    return {"parts": {p: {"selection": s.get("selection", {}),
                          "cells": sum(c.get("status") == "ok" for c in s["cells"].values()),
                          "devices": devices(s["cells"])}
                      for p, s in parts.items()},
            "curve": curve_points(parts["main"], parts["budget"]),
            "claims": claims(claim_scores(parts["main"], parts["xpeft"], parts["rte"]))}


def devices(cells: dict[str, dict]) -> dict[str, dict[str, int]]:
    """{task: {device: finished cells}}: what each task's cells ran on (a grid can finish
    on another machine than it started, e.g. evidence_parallel.py on a lent GPU)."""
    out: dict[str, dict[str, int]] = {}
    for c in cells.values():
        if c.get("status") == "ok":
            per = out.setdefault(c["task"], {})
            device = c.get("device", "unknown")  # cells from before it was recorded
            per[device] = per.get(device, 0) + 1
    return out


def devices_text(per_task: dict[str, dict[str, int]], tasks: list[str]) -> str:
    """`sst2 on cpu (52); mrpc on ...`, in the table's task order."""
    return "; ".join(f"{t} on " + ", ".join(f"{d} ({n})" for d, n in sorted(
        per_task[t].items())) for t in tasks if t in per_task) or "no cells"


def readme_text(rep: dict[str, Any]) -> str:
    """The README block: main, RTE and reference tables, the budget table, the claims."""
    out = []
    for part, title in (("main", f"SST-2 ({SST2_ROWS:,} rows, 10% of them validation) and "
                                 "MRPC"), ("rte", "RTE (hard case)"),
                        ("xpeft", "X-PEFT over a bank without the task, and the head "
                                  "alone, main's rows"),
                        ("reference", "FISH reference recipe, MRPC"),
                        ("budget", "Budget curve cells, SST-2")):
        sel = rep["parts"][part]["selection"]
        if not sel:
            continue
        tasks = list(sel)
        methods = list(dict.fromkeys(m for t in tasks for m in sel[t]))
        out.append(f"{title} ({rep['parts'][part]['cells']} cells; "
                   f"{devices_text(rep['parts'][part].get('devices', {}), tasks)}):\n\n"
                   + vp.markdown_table(sel, tasks, methods))
    if rep["claims"]:
        lines = ["| claim | task | A: dev | B: dev | A - B | goal | verdict |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {c['claim']} | {c['task']} | {c['a']} {c['a_mean']:.1f} ± "
                  f"{c['a_std']:.1f} | {c['b']} {c['b_mean']:.1f} ± {c['b_std']:.1f} | "
                  f"{c['difference']:+.1f} | {c['goal']} | {verdict(c)} |"
                  for c in rep["claims"]]
        out.append("Claims (dev x 100, mean ± std at each method's chosen rate over the seeds "
                   "both methods have; "
                   "the verdict on the means, \"within seed spread\" when the means' difference "
                   "is within the larger of the two seed stds of the claim's line):\n\n"
                   + "\n".join(lines) + "\n")
    if rep["curve"]:
        out.append(f"Budget curve (SST-2 dev, seeds {BUDGET_SEEDS} at every point, log x): "
                   "![budget curve](benchmarks/results/evidence/budget_curve.png)\n")
    return "\n".join(out) or "(no cells yet)\n"


def verdict(claim: dict[str, Any]) -> str:
    text = "holds" if claim["holds"] else "does not hold"
    if claim["seeds"] < 2:
        return text + " (1 seed)"
    return text + (" (within seed spread)" if claim["within_spread"] else "")


def plot(rep: dict[str, Any], path: str) -> None:
    """SST-2 dev vs trainable fraction (log x), one line per curve method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in (*CURVE_METHODS, "full"):
        pts = sorted((p for p in rep["curve"] if p["method"] == m and p["fraction"]),
                     key=lambda p: p["fraction"])
        if pts and m == "full":  # one point at 100%, and its level across the plot
            ax.axhline(100 * pts[0]["dev_mean"], color="grey", linestyle="--", linewidth=1)
            ax.plot([100 * pts[0]["fraction"]], [100 * pts[0]["dev_mean"]], "k*",
                    markersize=10, label="full fine-tuning")
        elif pts:
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
    cli.check_readme(args.readme, README_BLOCK, os.path.join(args.out, "report.json"))
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
