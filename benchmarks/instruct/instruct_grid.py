"""Instruction tuning of SmolLM2-135M on Natural Instructions: every method at equal budgets.

  LD_PRELOAD=libtcmalloc_minimal.so.4 \
      python -m benchmarks.instruct.instruct_grid --out benchmarks/results/instruct
  python -m benchmarks.instruct.instruct_grid --out benchmarks/results/instruct --report \
      --readme README.md

(tcmalloc, `apt install libtcmalloc-minimal4`, halves a CPU training step at these lengths:
README, Decoders; each cell records the allocator it ran with.)

The mixture is `configs/instruct.py:ni10` (10 trained tasks, 60 training, 10 validation
and 30 test rows each; 5 held-out tasks, 30 test rows each). The grid, in the order it runs
(`--phase` limits it to one phase):
1. `zero_shot`: the pretrained model, no tuning;
2. `lr`: each method at the equal trainable count (LoRA rank 24 on q/v_proj: 1,382,400
   entries, 1.03% of the weights; the mask methods and SIFT at that count; full fine-tuning
   trains everything) at the two learning rates of `METHODS`, seed 0;
3. `seeds`: each method at the learning rate with the best validation ROUGE-L (macro over
   tasks; the answer log-likelihood breaks ties), seeds 1..`--seeds - 1`;
4. `budget`: fish, random_mask and sift at `BUDGETS` (fractions of all weights) with their
   chosen learning rate, seed 0 (the score vs trainable fraction plot).
Each cell (method, budget, learning rate, seed) runs in a fresh process (its peak resident
memory is its own) with its workdir under `--workroot`, and is written to
`<out>/cell_results/<cell>.json` when it finishes: its command, the validation / test / held-out
macro scores and per-task test scores, wall time, optimizer-state bytes, trainable
entries and peak memory. A rerun skips finished cells, so an interrupted grid continues
where it stopped; a cell record written by another grid definition is an error.
`touch <workroot>/STOP` stops a running grid between cells (the running cell finishes and
is recorded). `--report` rebuilds `<out>/report.json`, the plot and (`--readme`) the README
table from the cell files only.

What this setting changes from the papers it checks (each method's own design note lists
its deviations from the method): SIFT (Song et al., ICML 2024) instruction-tunes LLaMA-7B
on Alpaca-style data and scores benchmarks such as MMLU; here a 135M decoder on 10 Natural
Instructions v1 tasks, scored by ROUGE-L on held-back rows and held-out tasks, with SIFT's
entries in the attention projections only (the decoder family's default). FISH-Tuning puts
Fisher-chosen entries inside LoRA on encoders; here inside LoRA on q_proj/v_proj of a
decoder. Every method sees one epoch of 600 rows; the Fisher estimates use 256 of them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import sys
import time
from typing import Any

import jax

from benchmarks.common import cli, readme_blocks
from benchmarks.common.machine import machine, peak_rss_mib
from configs import instruct
from fishjax.core.io import atomic_write
from fishjax.data.instructions import Mixture
from fishjax.models import load_model, load_tokenizer
from fishjax.train.instruct_eval import INSTRUCT_EVAL_FILE, evaluate_mixture
from fishjax.train.trainer import train_and_evaluate

README_BLOCK = "instruct-table"
# method -> its two learning rates (seed 0); chosen on validation.
METHODS: dict[str, tuple[float, float]] = {
    "full": (1e-5, 3e-5),
    "fish": (1e-4, 3e-4),
    "random_mask": (1e-4, 3e-4),
    "ird": (1e-4, 3e-4),
    "sift": (1e-4, 3e-4),
    "lora": (3e-4, 1e-3),
    "lora_fish": (3e-4, 1e-3),
}
EQUAL = instruct.EQUAL_COUNT / instruct.TOTAL_WEIGHTS  # the equal budget, as a fraction
BUDGETS = (0.001, 0.05)  # the budget curve's other points (fractions of all weights)
CURVE_METHODS = ("fish", "random_mask", "sift")
FISHER_SAMPLES = 256  # Fisher / IRD pool rows (of the 600 training rows)
TRAIN_PER_TASK = 60  # configs/instruct.py:ni10's; `--train_per_task` scales it (GPU script)
SPLITS = ("validation", "test", "heldout")
GRID_VERSION = 1  # bump when a cell's meaning changes: old cell files are then refused


def cell_id(method: str, budget: float | None, lr: float | None, seed: int) -> str:
    parts = [method]
    if budget is not None:
        parts.append(f"b{budget * 100:.3g}")
    if lr is not None:
        parts.append(f"lr{lr:.0e}")
    return "-".join([*parts, f"s{seed}"])


def overrides(method: str, budget: float | None, lr: float, seed: int,
              train_per_task: int = TRAIN_PER_TASK) -> list[str]:
    """The `--config.*` overrides of a cell, on top of configs/instruct.py:ni10."""
    out = [f"method.name={method}", f"train.learning_rate={lr}", f"seed={seed}",
           f"method.fisher.num_samples={FISHER_SAMPLES}",
           f"method.ird.pool_size={FISHER_SAMPLES}"]
    if train_per_task != TRAIN_PER_TASK:
        out.append(f"data.instruct.train_per_task={train_per_task}")
    if budget is not None and method in ("fish", "random_mask", "ird"):
        out.append(f"method.keep_ratio={budget}")
    if budget is not None and method == "sift":
        out.append(f"method.sift.rate={budget * instruct.TOTAL_WEIGHTS / instruct.SIFT_ELIGIBLE}")
    return out


def cell_budget(method: str) -> float | None:
    return None if method == "full" else EQUAL


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def make_config(overrides_: list[str]):
    config = instruct.get_config("ni10")
    for item in overrides_:
        key, value = item.split("=", 1)
        node = config
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = _value(value)
    return config


# -- one cell, in its own process ------------------------------------------------------------


def run_cell(cell: dict[str, Any], workroot: str) -> dict[str, Any]:
    """Trains and evaluates one cell (or evaluates the untuned model: zero_shot)."""
    t0 = time.perf_counter()
    workdir = os.path.join(workroot, cell["id"])
    if cell["method"] == "zero_shot":
        config = make_config(cell["overrides"])  # [] in this grid: ni10 as it is
        model = load_model(config.model.name, None, key=jax.random.PRNGKey(0))
        e = config.instruct_eval
        scores = evaluate_mixture(
            model.module, model.params, load_tokenizer(model.model_dir),
            Mixture.from_config(config.data.instruct), splits=SPLITS,
            prompt_format=config.data.prompt_format, max_length=config.data.max_length,
            max_new_tokens=e.max_new_tokens, batch_size=e.batch_size)
        os.makedirs(workdir, exist_ok=True)
        cli.write_json(os.path.join(workdir, INSTRUCT_EVAL_FILE), scores)
        results: dict[str, Any] = {"optimizer_state_bytes": 0, "train_s": 0.0,
                                   "method_summary": {"trainable_entries": 0}}
    else:
        config = make_config(cell["overrides"])
        results = train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, INSTRUCT_EVAL_FILE), encoding="utf-8") as f:
            scores = json.load(f)
    return {
        **{k: cell[k] for k in ("id", "method", "budget", "lr", "seed", "phase", "command")},
        "grid_version": GRID_VERSION,
        "macro": {s: scores[s]["macro"] for s in SPLITS if s in scores},
        "tasks": {s: scores[s]["tasks"] for s in ("test", "heldout") if s in scores},
        "prompts_cut": {s: scores[s]["prompts_cut"] for s in SPLITS if s in scores},
        "eval_s": {s: scores[s]["seconds"] for s in SPLITS if s in scores},
        "final_eval": results.get("final_eval"),
        "trainable_entries": results["method_summary"].get("trainable_entries"),
        "optimizer_state_bytes": results.get("optimizer_state_bytes"),
        "setup_s": results.get("setup_s"),
        "train_s": results.get("train_s"),
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mib": peak_rss_mib(),
        # the malloc the cell ran with: it changes wall time and resident memory
        "allocator": os.path.basename(os.environ.get("LD_PRELOAD", "")) or "glibc",
        "machine": machine(),
    }


# -- the grid -------------------------------------------------------------------------------


def _cell(method: str, budget: float | None, lr: float | None, seed: int, phase: str,
          out: str, train_per_task: int = TRAIN_PER_TASK) -> dict[str, Any]:
    cid = cell_id(method, budget, lr, seed)
    ov = [] if method == "zero_shot" else overrides(method, budget, lr, seed, train_per_task)
    scale = "" if train_per_task == TRAIN_PER_TASK else f" --train_per_task {train_per_task}"
    command = (f"python -m benchmarks.instruct.instruct_grid --out {out}{scale} --phase {phase} "
               f"--only {cid}")
    return {"id": cid, "method": method, "budget": budget, "lr": lr, "seed": seed,
            "phase": phase, "overrides": ov, "command": command}


def load_cells(out: str) -> dict[str, dict[str, Any]]:
    folder = os.path.join(out, "cell_results")
    cells = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                cell = json.load(f)
            if cell.get("grid_version") != GRID_VERSION:
                raise SystemExit(f"{folder}/{name}: written by grid version "
                                 f"{cell.get('grid_version')}, this is {GRID_VERSION}: move "
                                 "the old cells aside")
            cells[cell["id"]] = cell
    return cells


def validation_score(cell: dict[str, Any]) -> tuple[float, float]:
    """A cell's validation macro (ROUGE-L, then the answer log-likelihood to break ties)."""
    v = cell["macro"]["validation"]
    return v["rougeL"], v["answer_loglik"]


def chosen_lr(method: str, cells: dict[str, dict[str, Any]]) -> float | None:
    """The learning rate of `method`'s best validation cell at seed 0 and the equal budget,
    once every rate of its grid has a cell."""
    grid = [cells.get(cell_id(method, cell_budget(method), lr, 0)) for lr in METHODS[method]]
    if any(c is None for c in grid):
        return None
    return max(grid, key=validation_score)["lr"]


def planned(phase: str, cells: dict[str, dict[str, Any]], seeds: int, out: str,
            train_per_task: int = TRAIN_PER_TASK) -> list[dict[str, Any]]:
    """The cells of `phase` that can be defined now (seeds and budget cells wait for
    their method's learning-rate grid)."""
    def cell(*a):
        return _cell(*a, phase, out, train_per_task)

    if phase == "zero_shot":
        return [cell("zero_shot", None, None, 0)]
    if phase == "lr":
        return [cell(m, cell_budget(m), lr, 0) for m, lrs in METHODS.items() for lr in lrs]
    todo = []
    for m in METHODS:
        lr = chosen_lr(m, cells)
        if lr is None:
            continue
        if phase == "seeds":
            todo += [cell(m, cell_budget(m), lr, s) for s in range(1, seeds)]
        elif phase == "budget" and m in CURVE_METHODS:
            todo += [cell(m, b, lr, 0) for b in BUDGETS]
    return todo


PHASES = ("zero_shot", "lr", "seeds", "budget")


def run_one(cell: dict[str, Any], args: argparse.Namespace,
            module: str = "benchmarks.instruct.instruct_grid") -> None:
    """Runs `cell` in a fresh process (`python -m module --cell_json ...`) and writes its
    record."""
    if cli.stop_requested(args.workroot):
        print(f"stop requested ({cli.stop_file(args.workroot)}): not starting {cell['id']}",
              file=sys.stderr, flush=True)
        return
    print(f"[{time.strftime('%H:%M:%S')}] cell {cell['id']}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = cli.run_module(module,
                          ["--cell_json", json.dumps(cell), "--workroot", args.workroot,
                           "--out", args.out],
                          capture_output=True, text=True, check=False)
    try:
        record = cli.child_result(proc.stdout)
    except cli.NoChildResult:
        raise SystemExit(f"cell {cell['id']} failed:\n{proc.stderr[-3000:]}") from None
    cli.write_json(os.path.join(args.out, "cell_results", f"{cell['id']}.json"), record)
    print(f"  {cell['id']} done in {time.perf_counter() - t0:.0f} s: "
          f"{json.dumps(record['macro'])}", file=sys.stderr, flush=True)


def run_grid(args: argparse.Namespace) -> None:
    """Every pending cell, phase by phase; `--jobs` cells of a phase at once."""
    phases = PHASES if args.phase == "all" else (args.phase,)
    cli.clear_stop_file(args.workroot)
    for phase in phases:
        if cli.stop_requested(args.workroot):
            return
        cells = load_cells(args.out)
        todo = [c for c in planned(phase, cells, args.seeds, args.out, args.train_per_task)
                if c["id"] not in cells and (not args.only or c["id"] == args.only)]
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for future in [pool.submit(run_one, c, args) for c in todo]:
                future.result()


# -- the report -----------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
               if len(values) > 1 else 0.0)


def report(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per method: the validation scores of each tried rate, the chosen rate, and test /
    held-out scores over the seeds at that rate; the budget curve's points."""
    rows = {}
    zero = cells.get(cell_id("zero_shot", None, None, 0))
    if zero:
        rows["zero_shot"] = {"seeds": [0], "lr": None, "validation_by_lr": {},
                             **{s: {k: [v, 0.0] for k, v in zero["macro"][s].items()}
                                for s in SPLITS},
                             "trainable_entries": 0, "optimizer_state_bytes": 0,
                             "peak_rss_mib": zero["peak_rss_mib"], "wall_s": zero["wall_s"]}
    for m, lrs in METHODS.items():
        b = cell_budget(m)
        tried = {lr: cells[cell_id(m, b, lr, 0)] for lr in lrs if cell_id(m, b, lr, 0) in cells}
        lr = chosen_lr(m, cells)
        if lr is None:
            if tried:
                rows[m] = {"lr": None, "validation_by_lr": {
                    f"{k:.0e}": c["macro"]["validation"] for k, c in tried.items()}}
            continue
        runs = [c for c in cells.values() if c["method"] == m and c["budget"] == b
                and c["lr"] == lr]
        runs.sort(key=lambda c: c["seed"])
        row = {"lr": lr, "seeds": [c["seed"] for c in runs],
               "validation_by_lr": {f"{k:.0e}": c["macro"]["validation"]
                                    for k, c in tried.items()},
               "trainable_entries": runs[0]["trainable_entries"],
               "optimizer_state_bytes": runs[0]["optimizer_state_bytes"],
               "peak_rss_mib": max(c["peak_rss_mib"] for c in runs),
               "wall_s": sum(c["wall_s"] for c in runs) / len(runs)}
        for s in SPLITS:
            row[s] = {k: list(_mean_std([c["macro"][s][k] for c in runs]))
                      for k in runs[0]["macro"][s]}
        rows[m] = row
    curve = [{"method": c["method"], "budget": c["budget"], "seed": c["seed"],
              "trainable_entries": c["trainable_entries"],
              "fraction": c["trainable_entries"] / instruct.TOTAL_WEIGHTS,
              "test_rougeL": c["macro"]["test"]["rougeL"],
              "heldout_rougeL": c["macro"]["heldout"]["rougeL"]}
             for c in cells.values() if c["method"] in CURVE_METHODS and c["seed"] == 0
             and c["lr"] == chosen_lr(c["method"], cells)]
    curve.sort(key=lambda r: (r["method"], r["fraction"]))
    return {"methods": rows, "curve": curve, "cells": len(cells), "claims": claims(rows)}


# (claim, A, B, the least A - B in test ROUGE-L points for it to hold; None: A - B > 0); the issue's
# expectations on this scale, checked rather than assumed.
SCORE_CLAIMS = (
    ("SIFT within 2 points of full fine-tuning", "sift", "full", -2.0),
    ("FISH within 2 points of full fine-tuning", "fish", "full", -2.0),
    ("FISH >= random mask at equal count", "fish", "random_mask", 0.0),
    ("LoRA-FISH >= LoRA at equal count", "lora_fish", "lora", 0.0),
)
STATE_GOAL = 0.03  # SIFT's optimizer state <= 3% of full fine-tuning's


def claims(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim whose methods have test scores: both sides (mean, std, seeds), A - B, and
    whether it holds on the means. "every tuned method beats zero-shot" compares the
    weakest tuned method with zero-shot."""
    scored = {m: r for m, r in rows.items() if "test" in r}
    pairs = list(SCORE_CLAIMS)
    tuned = [m for m in METHODS if m in scored]
    if tuned and "zero_shot" in scored:
        weakest = min(tuned, key=lambda m: scored[m]["test"]["rougeL"][0])
        pairs.insert(0, ("every tuned method beats zero-shot (the weakest shown)", weakest,
                         "zero_shot", None))
    out = []
    for claim, a, b, least in pairs:
        if a not in scored or b not in scored:
            continue
        (am, ast), (bm, bst) = scored[a]["test"]["rougeL"], scored[b]["test"]["rougeL"]
        out.append({"claim": claim, "a": a, "b": b, "a_mean": am, "a_std": ast,
                    "a_seeds": len(scored[a]["seeds"]), "b_mean": bm, "b_std": bst,
                    "b_seeds": len(scored[b]["seeds"]), "difference": am - bm,
                    "goal": "> 0" if least is None else f">= {least:g}",
                    "holds": am - bm > 0 if least is None else am - bm >= least})
    if "sift" in scored and scored.get("full", {}).get("optimizer_state_bytes"):
        share = scored["sift"]["optimizer_state_bytes"] / scored["full"]["optimizer_state_bytes"]
        out.append({"claim": "SIFT's optimizer state <= 3% of full fine-tuning's",
                    "a": "sift", "b": "full", "share": share, "goal": f"<= {STATE_GOAL:.0%}",
                    "holds": share <= STATE_GOAL})
    return out


def table(rep: dict[str, Any]) -> str:
    full = rep["methods"].get("full", {}).get("optimizer_state_bytes")
    lines = ["| method | trainable | lr (validation ROUGE-L per rate) | seeds | test ROUGE-L | "
             "test EM | test answer log-lik. | held-out ROUGE-L | held-out EM | optimizer "
             "state | peak RSS | wall / cell |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in ("zero_shot", *METHODS):  # fixed order: report.json's keys are sorted
        if m not in rep["methods"]:
            continue
        r = rep["methods"][m]
        tried = ", ".join(f"{lr}: {v['rougeL']:.1f}" for lr, v in sorted(  # by rate: the
            r["validation_by_lr"].items(), key=lambda kv: float(kv[0])))  # JSON sorts text
        if "test" not in r:
            lines.append(f"| {m} | | ({tried}) | (pending) | | | | | | | | |")
            continue

        def f(split, key, digits=1, r=r):
            mean, std = r[split][key]
            return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(r["seeds"]) > 1 \
                else f"{mean:.{digits}f}"
        state = r["optimizer_state_bytes"]
        share = f" ({100 * state / full:.2f}%)" if full and state else ""
        lr = "-" if r["lr"] is None else f"{r['lr']:.0e}"
        lines.append(
            f"| {m} | {100 * r['trainable_entries'] / instruct.TOTAL_WEIGHTS:.2f}% | {lr}"
            f"{f' ({tried})' if tried else ''} | {len(r['seeds'])} | {f('test', 'rougeL')} | "
            f"{f('test', 'exact_match')} | {f('test', 'answer_loglik', 3)} | "
            f"{f('heldout', 'rougeL')} | {f('heldout', 'exact_match')} | "
            f"{state / 2**20:.1f} MiB{share} | {r['peak_rss_mib'] / 1024:.1f} GiB | "
            f"{r['wall_s'] / 60:.0f} min |")
    return "\n".join(lines) + "\n" + claims_table(rep.get("claims", []))


def claims_table(rows: list[dict[str, Any]]) -> str:
    """The claims under the table: test ROUGE-L mean ± std (seeds), A - B, the verdict."""
    if not rows:
        return ""

    def side(c, x):
        if c[x + "_seeds"] == 1:
            return f"{c[x]} {c[x + '_mean']:.1f} (1 seed)"
        return f"{c[x]} {c[x + '_mean']:.1f} ± {c[x + '_std']:.1f} ({c[x + '_seeds']} seeds)"
    lines = ["", "Claims (test ROUGE-L on the 10 trained tasks, mean ± std over seeds at "
             "each method's chosen rate; verdicts on the means):", "",
             "| claim | A | B | A - B | goal | verdict |", "|---|---|---|---|---|---|"]
    for c in rows:
        verdict = "holds" if c["holds"] else "does not hold"
        if "share" in c:
            lines.append(f"| {c['claim']} | {c['a']} | {c['b']} | {c['share']:.2%} of B | "
                         f"{c['goal']} | {verdict} |")
        else:
            lines.append(f"| {c['claim']} | {side(c, 'a')} | {side(c, 'b')} | "
                         f"{c['difference']:+.1f} | {c['goal']} | {verdict} |")
    return "\n".join(lines) + "\n"


def plot(rep: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m in CURVE_METHODS:
        pts = [r for r in rep["curve"] if r["method"] == m]
        if pts:
            ax.plot([100 * r["fraction"] for r in pts], [r["test_rougeL"] for r in pts],
                    marker="o", label=m)
    for m, style in (("full", "--"), ("zero_shot", ":")):
        r = rep["methods"].get(m, {})
        if "test" in r:
            ax.axhline(r["test"]["rougeL"][0], linestyle=style, color="gray", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("trainable weights (% of SmolLM2-135M, log scale)")
    ax.set_ylabel("test ROUGE-L (10 NI tasks)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--out", default="benchmarks/results/instruct")
    parser.add_argument("--workroot", default="/tmp/fishjax-instruct",
                        help="the cells' workdirs (checkpoints while a cell runs)")
    parser.add_argument("--phase", default="all", choices=("all", *PHASES))
    parser.add_argument("--only", default=None, help="run only this cell id")
    parser.add_argument("--seeds", type=int, default=2, help="seeds at the chosen rate")
    parser.add_argument("--jobs", type=int, default=1, help="cells of a phase run at once")
    parser.add_argument("--train_per_task", type=int, default=TRAIN_PER_TASK,
                        help="training rows per task (the GPU script: 10x)")
    parser.add_argument("--report", action="store_true",
                        help="rebuild report.json, the plot and the README table; run nothing")
    parser.add_argument("--cell_json", help=argparse.SUPPRESS)
    cli.add_readme(parser, README_BLOCK)
    args = parser.parse_args(argv)
    if args.cell_json:
        cli.print_child_result(run_cell(json.loads(args.cell_json), args.workroot))
        return
    if not args.report:
        run_grid(args)
    rep = report(load_cells(args.out))
    cli.write_json(os.path.join(args.out, "report.json"), rep)
    if rep["curve"]:
        plot(rep, os.path.join(args.out, "budget_curve.png"))
    if args.readme:
        readme_blocks.write(args.readme, README_BLOCK, os.path.join(args.out, "report.json"),
                            table(rep))
    print(table(rep))


if __name__ == "__main__":
    main()
