"""Multi-source selection on real data: is the first-order estimate right, does it find the
noisy sources, and does training on what it picks help?

  python -m benchmarks.multisource.multisource_eval --glue_dir=../shared/data/glue --task=mrpc \\
      --out=benchmarks/results/multisource
  python -m benchmarks.multisource.multisource_eval --report --out=benchmarks/results/multisource \\
      --readme README.md

The setting (`configs/select_sources.py` on `--task`): the task's training set, 10% held out
as the target, the rest cut into 20 groups, 8 of them with every label flipped; LoRA
(r=8, query/value) as meta-initialisation (1 epoch on all groups) and fine-tunes. Steps,
each resumable (its runs and files stay in `<out>/selection`):

1. The selection run (`fishjax.select_sources`): pool, meta-initialisation, features (p =
   200), c calibrated on 3 true fine-tunes, 1000 subsets of 10 groups estimated, rankings.
2. First-order check: Delta = the fitted direction of all 20 groups, scaled to
   |Delta| = c' |phi*| for c' in {0.01, 0.02, 0.05, 0.1, 0.2}; on the target examples, the
   relative error mean |f* + g^T Delta - f(phi* + Delta)| / mean |f(phi* + Delta)|, against
   the same error without the gradient term (f* alone). g^T Delta is exact here (g~ theta).
3. Estimated vs true: `--true_subsets` (20) random subsets of 10 groups (seeded; not the
   calibration ones), each fine-tuned for real from phi* (1 epoch): the relative RSS and
   Spearman correlation of the estimated against the true target loss, and the wall time
   of both routes (the estimator's call for all of them; the sum of the fine-tunes).
4. Noisy sources: each ranking's AUROC at telling the 8 noisy groups from the 12 clean
   ones (scores from step 1), and how many noisy groups each keeps.
5. Downstream: the base model fine-tuned once (LoRA, the task config's 3 epochs) on the 12
   groups the random ensemble keeps, on all 20, on 12 at random (seeded by the run seed),
   and on the 12 most gradient-similar; seeds 0, 1, 2; the dev main metric and the target
   loss.

`<out>/report.json` holds every number; `--report --readme README.md` rewrites the README's
`multisource-table` block from it (checked by tests/test_benchmark_multisource.py).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from benchmarks.common import cli, readme_blocks
from benchmarks.common.machine import machine
from benchmarks.grid import glue
from configs import select_sources as ms_config
from fishjax.core.io import atomic_write_json, read_json
from fishjax.core.tree import flatten_paths, unflatten_paths
from fishjax.data import get_task
from fishjax.select_sources import SourceSelection, true_vs_estimated
from fishjax.selection import multisource as ms

log = logging.getLogger("fishjax.benchmarks")

DEFAULT_OUT = "benchmarks/results/multisource"
README_BLOCK = "multisource-table"
CHECK_SCALES = (0.01, 0.02, 0.05, 0.1, 0.2)
SEEDS = (0, 1, 2)
ARMS = ("selected", "all", "random", "gradient_similarity")


def make_config(args):
    config = ms_config.get_config()
    task = get_task(args.task)
    glue_task = glue.cell_config(task.name, "lora", 0, glue.parse_args(
        ["--glue_dir", args.glue_dir, "--train_subset", "none", "--model", args.model]
        if args.glue_dir else ["--train_subset", "none", "--model", args.model]))
    config.task, config.data, config.model = task.name, glue_task.data, glue_task.model
    config.sources.noisy = args.noisy
    return config


def first_order_check(sel: SourceSelection, scales=CHECK_SCALES) -> list[dict]:
    """Relative errors of the first- and zeroth-order outputs at phi* + Delta (step 2)."""
    pool = sel.pool()
    src, tgt, phi_norm, projection = sel.features()
    rows, which = pool.source_of()
    src_of = which[np.argsort(rows)]
    k = len(pool.names)
    est = ms.estimate_subsets(src, src_of, tgt, np.ones((1, k), bool), projection.gram,
                              phi_norm, c=sel.s.C, offsets=sel.s.offsets,
                              iters=sel.s.solver_iters)
    theta = est.theta[0] * est.scale[0]  # |P theta| = |phi*|
    parts = sel.model_parts()
    base_delta = flatten_paths(projection.lift(theta))
    out = []
    for c in scales:
        moved = {**parts.params, "trainable": unflatten_paths({
            p[1:]: x + c * base_delta.get(p, 0.0) for p, x in
            flatten_paths({"trainable": parts.params["trainable"]}).items()})}
        f_new = parts.outputs(moved, tgt.ids)  # row by row as tgt.f (the old code paired
        # bucket-ordered outputs with row-ordered f*: its errors were meaningless)
        first = tgt.f + c * (tgt.g @ theta)
        scale = float(np.mean(np.abs(f_new)))
        out.append({"c": c, "first_order_error": float(np.mean(np.abs(first - f_new)) / scale),
                    "zeroth_order_error": float(np.mean(np.abs(tgt.f - f_new)) / scale),
                    "mean_abs_change": float(np.mean(np.abs(f_new - tgt.f)))})
        log.info("first-order check c=%g: %s", c, out[-1])
    return out


def true_subsets(sel: SourceSelection, n: int) -> dict:
    """Estimated vs true target loss of `n` random subsets (step 3)."""
    pool = sel.pool()
    k = len(pool.names)
    subsets = ms.sample_subsets(k, n, sel.s.subset_fraction, sel.s.seed + 3)
    src, tgt, phi_norm, projection = sel.features()
    rows, which = pool.source_of()
    scale = sel.calibration()["scale"]
    t0 = time.perf_counter()
    est = ms.estimate_subsets(src, which[np.argsort(rows)], tgt, subsets, projection.gram,
                              scale * phi_norm, c=sel.s.C, offsets=sel.s.offsets,
                              iters=sel.s.solver_iters)
    estimate_s = time.perf_counter() - t0
    runs, true_s = [], 0.0
    for i, row in enumerate(subsets):
        names = [pool.names[j] for j in np.flatnonzero(row)]
        t1 = time.perf_counter()
        run = sel.finetune(f"true/{i}", names, sel.s.finetune_epochs, from_meta=True)
        true_s += run.get("train_s") or (time.perf_counter() - t1)
        runs.append({"sources": names, "noisy": sum(n in pool.noisy for n in names),
                     "true_loss": run["final_eval"]["validation/loss"],
                     "estimated_loss": float(est.target_loss[i]),
                     "true_accuracy": run["final_eval"]["validation/accuracy"],
                     "estimated_accuracy": float(est.target_accuracy[i])})
    stats = true_vs_estimated([r["true_loss"] for r in runs],
                              [r["estimated_loss"] for r in runs])
    return {"runs": runs, **stats, "estimate_s": estimate_s, "true_s": true_s,
            "speedup": true_s / max(estimate_s, 1e-9)}


def downstream(sel: SourceSelection, ranking: dict, seeds=SEEDS) -> dict:
    """Step 5: the base fine-tuned on each arm's groups, for each seed."""
    pool = sel.pool()
    keep = len(ranking["ensemble"]["kept"])
    out: dict[str, list] = {arm: [] for arm in ARMS}
    epochs = sel.config.train.num_epochs
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        arms = {"selected": ranking["ensemble"]["kept"], "all": pool.names,
                "random": sorted(rng.choice(pool.names, keep, replace=False).tolist()),
                "gradient_similarity": ranking["gradient_similarity"]["kept"]}
        for arm in ARMS:
            run = sel.finetune(f"downstream/{arm}-s{seed}", arms[arm], epochs,
                               from_meta=False, seed=seed)
            main = sel.task.main_metric
            out[arm].append({"seed": seed, "sources": arms[arm],
                             "noisy": sum(n in pool.noisy for n in arms[arm]),
                             "dev": run["final_eval"][f"dev/{main}"],
                             "target_loss": run["final_eval"]["validation/loss"]})
    return out


def report_table(report: dict) -> str:
    """The README block: downstream means, then the estimator's checks."""
    lines = ["| training groups | dev (mean ± std, 3 seeds) | noisy groups kept | target loss |",
             "|---|---|---|---|"]
    for arm in ARMS:
        runs = report.get("downstream", {}).get(arm) or []
        if not runs:
            continue
        dev = 100 * np.asarray([r["dev"] for r in runs])
        noisy = np.mean([r["noisy"] for r in runs])  # the random arm differs by seed
        lines.append(f"| {arm} ({len(runs[0]['sources'])}) | {dev.mean():.1f} ± {dev.std():.1f} "
                     f"| {noisy:.3g} | {np.mean([r['target_loss'] for r in runs]):.3f} |")
    t = report.get("true_subsets")
    lines += ["", "| check | value |", "|---|---|"]
    if t:
        lines += [f"| estimated vs true target loss, {t['n']} subsets: relative RSS | "
                  f"{t['relative_rss']:.4f} |",
                  f"| ... Spearman | {t['spearman']:.3f} |",
                  f"| ... estimate route / true route | {t['estimate_s']:.1f} s / "
                  f"{t['true_s']:.0f} s ({t['speedup']:.0f}x) |"]
    for rule, r in (report.get("ranking") or {}).items():
        if "noisy_auroc" in r:
            lines.append(f"| noisy groups, AUROC of {rule} | {r['noisy_auroc']:.3f} "
                         f"({r['noisy_kept']} noisy of {len(r['kept'])} kept) |")
    for row in report.get("first_order") or []:
        lines.append(f"| first-order error at c={row['c']:g} (without the gradient term) | "
                     f"{row['first_order_error']:.4f} ({row['zeroth_order_error']:.4f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=None)
    p.add_argument("--task", default="mrpc")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--noisy", type=int, default=8)
    p.add_argument("--true_subsets", type=int, default=20)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--skip", default="", help="comma list of steps to skip: "
                   "first_order,true_subsets,downstream")
    cli.add_readme(p, README_BLOCK, report="only rewrite --readme from <out>/report.json")
    p.add_argument("--compilation_cache", default=glue.DEFAULT_COMPILATION_CACHE)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("fishjax").setLevel(logging.INFO)
    report_path = os.path.join(args.out, "report.json")
    if args.report:
        report = read_json(report_path)
    else:
        glue.use_compilation_cache(args.compilation_cache)
        skip = set(filter(None, args.skip.split(",")))
        report = read_json(report_path) if os.path.exists(report_path) else {}
        sel = SourceSelection(make_config(args), os.path.join(args.out, "selection"))
        t0 = time.perf_counter()
        result = sel.estimate()
        report.update({"task": args.task, "selection": result["selection"],
                       "ranking": result["ranking"], "estimate_s": result["estimate_s"],
                       "calibration": sel.calibration(), "machine": machine(),
                       "selection_wall_s": time.perf_counter() - t0})
        atomic_write_json(report_path, report)
        steps = (("first_order", lambda: first_order_check(sel)),
                 ("true_subsets", lambda: true_subsets(sel, args.true_subsets)),
                 ("downstream", lambda: downstream(sel, result["ranking"])))
        for name, step in steps:
            if name not in skip:
                report[name] = step()
                atomic_write_json(report_path, report)
    table = report_table(report)
    print(table)
    if args.readme:
        readme_blocks.write(args.readme, README_BLOCK, report_path, table)
    return report


if __name__ == "__main__":
    main()
