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
   Also at the calibrated c the estimates use. The reference's instruction scripts fit the
   direction on 75% of the tasks and measure on 100 batches of 4 rows; here the direction
   is fitted on all sources and the reference's measure taken on 80 rows.
3. Estimated vs true: `--true_subsets` (20) random subsets of 10 groups (seeded; not the
   calibration ones), each fine-tuned for real from phi* (1 epoch): the relative RSS and
   Spearman correlation of the estimated against the true target loss, and the wall time
   of both routes (the estimator's call for all of them; the sum of the fine-tunes).
   Their own noise (`true_noise`): the first 2 of these subsets fine-tuned again at 2 more
   seeds (data order), the seed-to-seed std of the true loss beside its std over subsets
   (a ranking is only as good as that spread lets it be).
4. Noisy sources: each ranking's AUROC at telling the 8 noisy groups from the 12 clean
   ones (scores from step 1), and how many noisy groups each keeps.
5. Downstream: the base model fine-tuned once (LoRA, the task config's 3 epochs) on the 12
   groups the random ensemble keeps, on all 20, on 12 at random (seeded by the run seed),
   and on the 12 most gradient-similar; seeds 0, 1, 2; the dev main metric and the target
   loss.

Design "ni" (`--design ni --out benchmarks/results/multisource_ni`): the paper's own
setting, SmolLM2-135M choosing among 17 Natural Instructions tasks for an MC-TACO target
(4 of them corrupted: targets shuffled; `configs/select_sources.py`), LoRA rank 8 on the
attention and MLP projections; the target rows' loss is the mean negative log-likelihood
per answer token, the downstream score the target task's test ROUGE-L (greedy answers)
besides that loss. Run it with `--seeds 0,1 --keep_scan "" --true_subsets 20`.

`<out>/report.json` holds every number; `--report --readme README.md` rewrites the README's
`multisource-table` block from it (checked by tests/test_benchmark_multisource.py).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import time

import jax
import numpy as np

from benchmarks.common import cli, readme_blocks
from benchmarks.common.machine import machine, rss_mib
from benchmarks.grid import glue
from configs import select_sources as ms_config
from fishjax.core.io import atomic_write_json, read_json
from fishjax.core.tree import flatten_paths, unflatten_paths
from fishjax.data import get_task
from fishjax.data.metrics import auroc, spearman
from fishjax.data.mixture import parse_mix
from fishjax.select_sources import (
    SourceSelection,
    run_name,
    target_metric,
    true_vs_estimated,
)
from fishjax.selection import multisource as ms

log = logging.getLogger("fishjax.benchmarks")

DEFAULT_OUT = "benchmarks/results/multisource"
README_BLOCK = "multisource-table"
# The reference sweeps 0.02..0.1 (instruction) or 0.02..0.2 (its notebook version).
CHECK_SCALES = (0.02, 0.05, 0.1, 0.2)
# The reference measures its error on its first 10 batches of 8 training rows.
REFERENCE_TRAIN_ROWS = 80
SEEDS = (0, 1, 2)
ARMS = ("selected", "forward", "all", "random", "gradient_similarity", "clean_target_task")
KEEP_SCAN = (0.3, 0.5, 0.7, 0.9)
GLUE_MODEL, NI_MODEL = "minilm-l6", "smollm2-135m"


def is_ni(design: str) -> bool:
    """Whether the design's sources are instruction tasks (a decoder; kind "tasks")."""
    return design.startswith("ni")


def run_scores(sel: SourceSelection, run: dict) -> dict[str, float]:
    """A fine-tune's scores: on the target rows, the loss and the task's accuracy (a
    classifier's accuracy, a decoder's token accuracy); then the downstream score: GLUE's
    dev main metric, or the target task's test ROUGE-L (runs with the generation
    evaluation)."""
    e = run["final_eval"]
    generative = sel.task.generative
    out = {"target_loss": target_metric(e, "loss"),
           "target_accuracy": target_metric(e, sel.task.main_metric if generative
                                            else "accuracy")}
    if not generative:
        out["dev"] = e[f"dev/{sel.task.main_metric}"]
    elif run.get("instruct_eval"):
        out["target_rouge"] = run["instruct_eval"]["test"]["rougeL"]
    return out


def make_config(args):
    """The design's config (`configs/select_sources.py:<design>`), its GLUE folders under
    `--glue_dir` (its task folders under `--ni_dir`), and the command line's overrides."""
    config = ms_config.get_config(args.design)
    config.model.name = args.model or (NI_MODEL if is_ni(args.design) else GLUE_MODEL)
    if is_ni(args.design):
        if args.ni_dir:
            config.data.instruct.dir = args.ni_dir
    elif args.glue_dir:
        config.data.dir = os.path.join(args.glue_dir, get_task(config.task).glue_folder)
        config.data.mix = tuple(
            f"{e.task.name}:{e.rows or 'all'}:{os.path.join(args.glue_dir, e.task.glue_folder)}"
            for e in parse_mix(config.data.mix, get_task(config.task)))
    if args.design == "mrpc":
        config.sources.noisy = args.noisy
    for assignment in args.set:
        glue.apply_override(config, assignment)
    return config


def first_order_check(sel: SourceSelection, scales=None,
                      train_rows: int = REFERENCE_TRAIN_ROWS) -> list[dict]:
    """Errors of the first- and zeroth-order outputs at phi* + Delta (step 2), Delta along
    the fitted direction of all sources with |Delta| = c |phi*|, at each of `scales`
    (default: `CHECK_SCALES` and the calibrated c the estimates use, its row marked
    `calibrated`), two ways:
    ours, on the target rows: mean |f* + g~ theta - f(phi* + Delta)| / mean |f(phi* + Delta)|;
    the reference's (its fast_estimate_eval_approximation.py), on `train_rows` seeded source
    rows: mean over rows of (|f* + g~ theta - f_new| / max(|f_new|, |f*|))^2."""
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
    train = src.rows(np.sort(np.random.default_rng(sel.s.seed).choice(
        src.ids, min(train_rows, len(src.ids)), replace=False)))
    base_delta = flatten_paths(projection.lift(theta))
    calibrated = float(sel.calibration()["scale"])
    out = []
    for c in sorted({*CHECK_SCALES, calibrated} if scales is None else set(scales)):
        moved = {**parts.params, "trainable": unflatten_paths({
            p[1:]: x + c * base_delta.get(p, 0.0) for p, x in
            flatten_paths({"trainable": parts.params["trainable"]}).items()})}
        # each output beside its own row's f* (the old code paired bucket-ordered outputs
        # with row-ordered f*: its errors were meaningless)
        f_new = parts.outputs(moved, tgt.ids)
        first = tgt.f + c * (tgt.g @ theta)
        scale = float(np.mean(np.abs(f_new)))
        t_new = parts.outputs(moved, train.ids)
        t_first = train.f + c * (train.g @ theta)
        denom = np.maximum(np.maximum(np.abs(t_new), np.abs(train.f)), 1e-12)
        out.append({"c": c, "first_order_error": float(np.mean(np.abs(first - f_new)) / scale),
                    "zeroth_order_error": float(np.mean(np.abs(tgt.f - f_new)) / scale),
                    "mean_abs_change": float(np.mean(np.abs(f_new - tgt.f))),
                    "reference_first_order_error": float(np.mean(
                        (np.abs(t_first - t_new) / denom) ** 2)),
                    "reference_zeroth_order_error": float(np.mean(
                        (np.abs(train.f - t_new) / denom) ** 2)),
                    "reference_rows": int(len(train.ids)), "calibrated": c == calibrated})
        log.info("first-order check c=%g: %s", c, out[-1])
    return out


@dataclasses.dataclass(frozen=True)
class Job:
    """One real fine-tune of the benchmark (its own workdir under the selection's)."""

    name: str
    sources: tuple[str, ...]
    epochs: float
    from_meta: bool
    seed: int | None = None

    def run(self, sel: SourceSelection) -> dict:
        # The downstream runs (from the base) are the ones scored by generation.
        run = sel.finetune(self.name, list(self.sources), self.epochs,
                           from_meta=self.from_meta, seed=self.seed,
                           instruct_eval=not self.from_meta)
        # The NI run's one process stood at 22 GB resident (of 24) after ~28 fine-tunes
        # (2026-12-05). Each fine-tune compiles its own steps: their executables are freed
        # here, and the resident memory is logged after each run, to tell growth from run
        # to run from one run's peak (after the 17-source arm 18 GB stayed resident with
        # the caches freed: the allocator keeps freed pages for the next run).
        jax.clear_caches()
        gc.collect()
        log.info("%s: resident memory %.0f MiB after the fine-tune", self.name, rss_mib())
        return run


def true_subset_rows(sel: SourceSelection, n: int) -> np.ndarray:
    """The `n` random subsets whose true fine-tunes are compared with their estimates."""
    return ms.sample_subsets(len(sel.pool().names), n, sel.s.subset_fraction, sel.s.seed + 3)


def arms(sel: SourceSelection, ranking: dict, seed: int) -> dict[str, list[str]]:
    """Each downstream arm's sources for `seed` (only `random` depends on it)."""
    pool = sel.pool()
    keep = len(ranking["ensemble"]["kept"])
    rng = np.random.default_rng(1000 + seed)
    out = {"selected": ranking["ensemble"]["kept"], "forward": ranking["forward"]["kept"],
           "all": pool.names,
           "random": sorted(rng.choice(pool.names, keep, replace=False).tolist()),
           "gradient_similarity": ranking["gradient_similarity"]["kept"],
           "clean_target_task": clean_target_task(sel)}
    return {arm: out[arm] for arm in ARMS}


def clean_target_task(sel: SourceSelection) -> list[str]:
    """The oracle's choice: the target task's own sources without flipped labels (with
    instruction tasks as sources: the target task's own rows, the "target only" arm)."""
    pool = sel.pool()
    if sel.s.kind == "tasks":
        return [sel.s.target_task]
    own = sel.task.name + "-"
    return [n for n in pool.names if n not in pool.noisy
            and (sel.s.kind == "groups" or n.startswith(own))]


def keep_scan_sources(sel: SourceSelection, ranking: dict, fraction: float) -> list[str]:
    """The ensemble's best `fraction` of the sources."""
    scores = ranking["ensemble"]["scores"]
    names = list(scores)
    keep = ms.keep_count(len(names), fraction)
    top = ms.top_sources(np.asarray([scores[n] for n in names]), keep, lower_is_better=False)
    return [names[i] for i in top]


def jobs(sel: SourceSelection, ranking: dict, args) -> list[Job]:
    """Every real fine-tune of steps 3 to 5, in a fixed order."""
    pool = sel.pool()
    out = [Job(f"true/{i}", tuple(pool.names[j] for j in np.flatnonzero(row)),
               sel.s.finetune_epochs, True)
           for i, row in enumerate(true_subset_rows(sel, args.true_subsets))]
    out += noise_jobs(sel, args.true_subsets)
    epochs = sel.config.train.num_epochs
    for seed in args.seeds:
        out += [Job(downstream_name(arm, names, seed), tuple(names), epochs, False, seed)
                for arm, names in arms(sel, ranking, seed).items()]
    out += [Job(keep_name(f, names), tuple(names), epochs, False, 0)
            for f in args.keep_scan for names in [keep_scan_sources(sel, ranking, f)]]
    return out


# Arms whose sources follow the estimates or the kept count (and so the estimate settings):
# their run names carry a digest of the sources, so a changed setting trains anew instead
# of reusing a run.
SELECTED_ARMS = ("selected", "forward", "random", "gradient_similarity")


def downstream_name(arm: str, names, seed: int) -> str:
    prefix = f"downstream/{arm}"
    return f"{run_name(prefix, names) if arm in SELECTED_ARMS else prefix}-s{seed}"


def keep_name(fraction: float, names) -> str:
    return run_name(f"keep/{fraction:g}", names)


def true_subsets(sel: SourceSelection, n: int) -> dict:
    """Estimated vs true target scores of `n` random subsets (step 3)."""
    pool = sel.pool()
    subsets = true_subset_rows(sel, n)
    src, tgt, phi_norm, projection = sel.features()
    rows, which = pool.source_of()
    scale = sel.calibration()["scale"]
    t0 = time.perf_counter()
    est = ms.estimate_subsets(src, which[np.argsort(rows)], tgt, subsets, projection.gram,
                              scale * phi_norm, c=sel.s.C, offsets=sel.s.offsets,
                              iters=sel.s.solver_iters)
    estimate_s = time.perf_counter() - t0
    runs, true_s, untimed = [], 0.0, 0
    for i, row in enumerate(subsets):
        names = [pool.names[j] for j in np.flatnonzero(row)]
        t1 = time.perf_counter()
        run = sel.finetune(f"true/{i}", names, sel.s.finetune_epochs, from_meta=True)
        # A run resumed across sessions: its whole training time (train_s is the last
        # process's share); runs from before that was recorded count their last share only.
        total = run.get("train_s_total")
        untimed += total is None
        true_s += total or run.get("train_s") or (time.perf_counter() - t1)
        scores = run_scores(sel, run)
        runs.append({"sources": names, "noisy": sum(n in pool.noisy for n in names),
                     "true_loss": scores["target_loss"],
                     "estimated_loss": float(est.target_loss[i]),
                     "true_accuracy": scores["target_accuracy"],
                     "estimated_accuracy": float(est.target_accuracy[i])})
    stats = true_vs_estimated([r["true_loss"] for r in runs],
                              [r["estimated_loss"] for r in runs])
    out = {"runs": runs, **stats, "estimate_s": estimate_s, "true_s": true_s,
           "runs_without_total_time": untimed,
           "speedup": true_s / max(estimate_s, 1e-9)}
    if not sel.task.generative:  # a decoder's token accuracy is not what f > 0 estimates
        acc = true_vs_estimated([r["true_accuracy"] for r in runs],
                                [r["estimated_accuracy"] for r in runs])
        out.update({"accuracy_spearman": acc["spearman"],
                    "accuracy_relative_rss": acc["relative_rss"]})
    return out


# The true fine-tunes' own noise: the first NOISE_SUBSETS true subsets fine-tuned again at
# NOISE_SEEDS more seeds (offsets from the config's seed, which the true fine-tunes use).
NOISE_SUBSETS, NOISE_SEEDS = 2, (1, 2)


def noise_jobs(sel: SourceSelection, n_true: int, subsets: int = NOISE_SUBSETS) -> list[Job]:
    """The true subsets 0 .. `subsets`-1 again, from phi*, at each of the other seeds."""
    pool = sel.pool()
    rows = true_subset_rows(sel, n_true)[:subsets]
    return [Job(f"true_seed/{i}-s{sel.config.seed + k}",
                tuple(pool.names[j] for j in np.flatnonzero(row)), sel.s.finetune_epochs,
                True, sel.config.seed + k)
            for i, row in enumerate(rows) for k in NOISE_SEEDS]


def true_noise(sel: SourceSelection, true: dict, subsets: int = NOISE_SUBSETS) -> dict:
    """How much of the true target losses' spread over subsets is the fine-tune's own
    noise: the first `subsets` true subsets fine-tuned again at other seeds (data order),
    their pooled seed-to-seed std beside the std over all true subsets. A ranking of the
    subsets can only be as good as that spread lets it: at a ratio near 1 the true scores
    are mostly noise."""
    losses = [[r["true_loss"]] for r in true["runs"][:subsets]]
    for job in noise_jobs(sel, true["n"], subsets):
        i = int(job.name.split("/")[1].split("-")[0])
        losses[i].append(run_scores(sel, job.run(sel))["target_loss"])
    within = float(np.sqrt(np.mean([np.var(x, ddof=1) for x in losses])))
    across = float(np.std([r["true_loss"] for r in true["runs"]], ddof=1))
    return {"subsets": subsets, "seeds": 1 + len(NOISE_SEEDS), "losses": losses,
            "within_std": within, "across_std": across, "ratio": within / across}


def downstream(sel: SourceSelection, ranking: dict, seeds=SEEDS) -> dict:
    """Step 5: the base fine-tuned on each arm's sources, for each seed."""
    pool = sel.pool()
    out: dict[str, list] = {arm: [] for arm in ARMS}
    epochs = sel.config.train.num_epochs
    for seed in seeds:
        for arm, names in arms(sel, ranking, seed).items():
            run = Job(downstream_name(arm, names, seed), tuple(names), epochs, False,
                      seed).run(sel)
            out[arm].append({"seed": seed, "sources": names,
                             "noisy": sum(n in pool.noisy for n in names),
                             **run_scores(sel, run)})
    return out


def keep_scan(sel: SourceSelection, ranking: dict, fractions) -> list[dict]:
    """The ensemble's kept share scanned: each share's sources fine-tuned from the base
    (seed 0), scored on dev and on the target rows."""
    pool = sel.pool()
    out = []
    for f in fractions:
        names = keep_scan_sources(sel, ranking, f)
        run = Job(keep_name(f, names), tuple(names), sel.config.train.num_epochs, False,
                  0).run(sel)
        out.append({"keep_fraction": f, "sources": names,
                    "noisy": sum(n in pool.noisy for n in names), **run_scores(sel, run)})
    return out


def report_table(report: dict) -> str:
    """The README block: downstream means, the keep scan, then the estimator's checks."""
    ni = is_ni(report.get("design", ""))
    score, accuracy = (("target test ROUGE-L", "target token accuracy") if ni
                       else ("dev", "target accuracy"))
    lines = [f"| training sources | {score} (mean ± std over seeds) | {accuracy} | noisy kept "
             "| target loss |", "|---|---|---|---|---|"]
    for arm in ARMS:
        runs = report.get("downstream", {}).get(arm) or []
        if not runs:
            continue
        dev = np.asarray([r["target_rouge"] if ni else 100 * r["dev"] for r in runs])
        acc = [100 * r["target_accuracy"] for r in runs if "target_accuracy" in r]
        if ni and arm == "clean_target_task":
            arm = "target task only"
        noisy = np.mean([r["noisy"] for r in runs])  # the random arm differs by seed
        lines.append(f"| {arm} ({len(runs[0]['sources'])}) | {dev.mean():.1f} ± {dev.std():.1f} "
                     f"| {f'{np.mean(acc):.1f}' if acc else '-'} | {noisy:.3g} "
                     f"| {np.mean([r['target_loss'] for r in runs]):.3f} |")
    if report.get("keep_scan"):
        lines += ["", f"| ensemble keeps | sources | noisy kept | {score} (seed 0) | "
                  f"{accuracy} |", "|---|---|---|---|---|"]
        lines += [f"| {r['keep_fraction']:g} | {len(r['sources'])} | {r['noisy']} | "
                  f"{r['target_rouge'] if ni else 100 * r['dev']:.1f} | "
                  f"{100 * r['target_accuracy']:.1f} |" for r in report["keep_scan"]]
    t = report.get("true_subsets")
    lines += ["", "| check | value |", "|---|---|"]
    if t:
        lines += [f"| estimated vs true target loss, {t['n']} subsets: relative RSS | "
                  f"{t['relative_rss']:.4f} |",
                  f"| ... Spearman (loss) | {t['spearman']:.3f} |"]
        if "accuracy_spearman" in t:
            lines.append(f"| ... Spearman (accuracy) | {t['accuracy_spearman']:.3f} |")
        lines.append(f"| ... estimate route / true route | {t['estimate_s']:.1f} s / "
                     f"{t['true_s']:.0f} s ({t['speedup']:.0f}x) |")
        noise = report.get("true_noise")
        if noise:
            lines.append(f"| ... true target loss: seed-to-seed std of one subset "
                         f"({noise['subsets']} subsets x {noise['seeds']} seeds) / std over "
                         f"the {t['n']} subsets | {noise['within_std']:.4f} / "
                         f"{noise['across_std']:.4f} ({noise['ratio']:.2f}) |")
        if "features_s" in report:
            lines.append(f"| features + 1,000 estimates / one real fine-tune (mean of "
                         f"{t['n']}) | {report['features_s'] + report['estimate_s']:.1f} s / "
                         f"{t['true_s'] / t['n']:.1f} s |")
    for rule, r in (report.get("ranking") or {}).items():
        if "noisy_auroc" in r:
            lines.append(f"| noisy sources, AUROC of {rule} | {r['noisy_auroc']:.3f} "
                         f"({r['noisy_kept']} noisy of {len(r['kept'])} kept) |")
    effects = source_effects(report)
    if effects:
        lines.append(f"| per-source effect from the true fine-tunes: Spearman with the "
                     f"ensemble's scores | {effects['spearman_true_vs_ensemble']:.3f} |")
        for label, what in (("noisy", "any share flipped"),
                            ("strongly_noisy", "half or more flipped")):
            if f"{label}_auroc_ensemble" in effects:
                lines.append(f"| noisy sources ({what}): AUROC of the ensemble / of the true "
                             f"effects | {effects[f'{label}_auroc_ensemble']:.3f} / "
                             f"{effects[f'{label}_auroc_true_effect']:.3f} |")
    lines += _first_order_lines(report)
    rows = goals(report)
    if rows:
        lines += ["", "| goal | measured | verdict |", "|---|---|---|"]
        lines += [f"| {g['goal']} | {g['measured']} | {'met' if g['met'] else 'not met'} |"
                  for g in rows]
    return "\n".join(lines) + "\n"


# The goals: Spearman of estimated vs true subset losses, the chosen rule's AUROC
# at finding the noisy sources, the selected arm vs all sources (points of the downstream
# score), and features + 1,000 estimates against one real fine-tune.
GOAL_SPEARMAN, GOAL_AUROC, GOAL_GAIN = 0.7, 0.9, 1.0


def goals(report: dict) -> list[dict]:
    """Each goal the report has the figures for: what was measured and whether it is met."""
    out = []
    t = report.get("true_subsets") or {}
    if "spearman" in t:
        out.append({"goal": f"Spearman, estimated vs true target loss >= {GOAL_SPEARMAN}",
                    "measured": f"{t['spearman']:.3f} ({t['n']} subsets)",
                    "met": t["spearman"] >= GOAL_SPEARMAN})
    rule = (report.get("settings") or {}).get("rule", "ensemble")
    r = (report.get("ranking") or {}).get(rule) or {}
    if "noisy_auroc" in r:
        out.append({"goal": f"AUROC of {rule} at finding the noisy sources >= {GOAL_AUROC}",
                    "measured": f"{r['noisy_auroc']:.3f}", "met": r["noisy_auroc"] >= GOAL_AUROC})
    down = report.get("downstream") or {}
    if down.get("selected") and down.get("all"):
        ni = is_ni(report.get("design", ""))

        def score(run):
            return run["target_rouge"] if ni else 100 * run["dev"]
        sel = float(np.mean([score(x) for x in down["selected"]]))
        every = float(np.mean([score(x) for x in down["all"]]))
        out.append({"goal": f"selected >= all sources + {GOAL_GAIN:g} point "
                            f"({'target test ROUGE-L' if ni else 'dev'})",
                    "measured": f"{sel:.1f} vs {every:.1f} ({sel - every:+.1f})",
                    "met": sel - every >= GOAL_GAIN})
    if "features_s" in report and t.get("n"):
        cost = report["features_s"] + report["estimate_s"]
        one = t["true_s"] / t["n"]
        out.append({"goal": "features + 1,000 estimates < one real fine-tune (mean of the "
                            "true fine-tunes)",
                    "measured": f"{cost:.0f} s vs {one:.0f} s ({cost / one:.2f}x)",
                    "met": cost < one})
    return out


def _first_order_lines(report: dict) -> list[str]:
    lines = []
    for row in report.get("first_order") or []:
        ref = (f"; reference's mean squared relative error on {row['reference_rows']} "
               f"training rows {row['reference_first_order_error']:.4f} "
               f"({row['reference_zeroth_order_error']:.4f})"
               if "reference_first_order_error" in row else "")
        c = f"{row['c']:.3g}" + (", the calibrated c" if row.get("calibrated") else "")
        lines.append(f"| first-order error at c={c} (without the gradient term) | "
                     f"{row['first_order_error']:.4f} ({row['zeroth_order_error']:.4f}){ref} |")
    return lines


def source_effects(report: dict) -> dict | None:
    """Each source's effect on the target as the true fine-tunes measure it (a ridge fit of
    minus the true target loss on the 30 subsets' indicators) beside the estimated one (the
    same fit on the estimates) and the ensemble's score; the AUROC of the ensemble and of
    the true effects at finding the noisy sources (any flipped share) and the strongly
    noisy ones (half or more flipped). None without true fine-tunes."""
    runs = (report.get("true_subsets") or {}).get("runs")
    if not runs or "ranking" not in report:
        return None
    scores = report["ranking"]["ensemble"]["scores"]
    names = list(scores)
    x = np.asarray([[n in r["sources"] for n in names] for r in runs], np.float64)
    true = ms.ridge_scores(x, -np.asarray([r["true_loss"] for r in runs]))
    est = ms.ridge_scores(x, -np.asarray([r["estimated_loss"] for r in runs]))
    ens = np.asarray([scores[n] for n in names])
    noisy = (report.get("pool") or {}).get("noisy") or {}
    out = {"effects": {n: {"true": float(t), "estimated": float(e)}
                       for n, t, e in zip(names, true, est, strict=True)},
           "spearman_true_vs_ensemble": spearman(true, ens),
           "spearman_true_vs_estimated": spearman(true, est)}
    for label, flag in (("noisy", [n in noisy for n in names]),
                        ("strongly_noisy", [noisy.get(n, 0.0) >= 0.5 for n in names])):
        flag = np.asarray(flag)
        if 0 < flag.sum() < len(flag):
            out[f"{label}_auroc_ensemble"] = auroc(-ens, flag)
            out[f"{label}_auroc_true_effect"] = auroc(-true, flag)
    return out


def parse_part(text: str) -> tuple[int, int] | None:
    """`--part i/n` -> (i, n): this process runs jobs i, i + n, ... (None: all, in turn)."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise SystemExit(f"--part must be i/n with 0 <= i < n, got {text!r}") from None
    return i, n


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=None)
    p.add_argument("--design", default="mrpc", choices=ms_config.DESIGNS)
    p.add_argument("--model", default=None,
                   help=f"default: {GLUE_MODEL} (GLUE designs), {NI_MODEL} (ni designs)")
    p.add_argument("--ni_dir", default=None, help="ni designs: the task folders' folder")
    p.add_argument("--noisy", type=int, default=8, help="mrpc design: flipped groups")
    p.add_argument("--true_subsets", type=int, default=30)
    p.add_argument("--seeds", type=lambda t: tuple(int(x) for x in t.split(",")),
                   default=SEEDS)
    p.add_argument("--keep_scan", type=lambda t: tuple(float(x) for x in t.split(",") if x),
                   default=KEEP_SCAN)
    p.add_argument("--set", action="append", default=[],
                   help="config override field=value (repeatable), e.g. sources.meta_epochs=1")
    p.add_argument("--part", default="", help="i/n: run only this share of the fine-tunes "
                   "of steps 3-5 (processes in parallel), then stop; a run without it "
                   "reuses every finished one and writes the report")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--skip", default="", help="comma list of steps to skip: "
                   "first_order,true_subsets,true_noise,downstream,keep_scan")
    cli.add_readme(p, README_BLOCK, report="only rewrite --readme from <out>/report.json")
    p.add_argument("--compilation_cache", default=glue.DEFAULT_COMPILATION_CACHE)
    args = p.parse_args(argv)
    part = parse_part(args.part)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("fishjax").setLevel(logging.INFO)
    report_path = os.path.join(args.out, "report.json")
    if args.report:
        report = read_json(report_path)
    else:
        glue.use_compilation_cache(args.compilation_cache)
        skip = set(filter(None, args.skip.split(",")))
        sel = SourceSelection(make_config(args), os.path.join(args.out, "selection"))
        t0 = time.perf_counter()
        result = sel.estimate()
        if part is not None:
            todo = jobs(sel, result["ranking"], args)[part[0]::part[1]]
            for k, job in enumerate(todo):
                log.info("part %s: fine-tune %d of %d (%s)", args.part, k + 1, len(todo),
                         job.name)
                job.run(sel)
            return {}
        report = read_json(report_path) if os.path.exists(report_path) else {}
        report.update({"design": args.design, "task": sel.task.name,
                       "pool": pool_summary(sel), "selection": result["selection"],
                       "ranking": result["ranking"], "estimate_s": result["estimate_s"],
                       "calibration": sel.calibration(), "machine": machine(),
                       "settings": sel.config.sources.to_dict(),
                       "features_s": sel.features()[0].seconds,
                       "selection_wall_s": time.perf_counter() - t0})
        atomic_write_json(report_path, report)
        steps = (("first_order", lambda: first_order_check(sel)),
                 ("true_subsets", lambda: true_subsets(sel, args.true_subsets)),
                 ("true_noise", lambda: true_noise(sel, report["true_subsets"])),
                 ("downstream", lambda: downstream(sel, result["ranking"], args.seeds)),
                 ("keep_scan", lambda: keep_scan(sel, result["ranking"], args.keep_scan)))
        for name, step in steps:
            if name == "true_noise" and "true_subsets" not in report:
                continue  # it re-runs some of the true subsets
            if name not in skip:
                report[name] = step()
                atomic_write_json(report_path, report)
    table = report_table(report)
    print(table)
    if args.readme:
        readme_blocks.write(args.readme, README_BLOCK, report_path, table)
    return report


def pool_summary(sel: SourceSelection) -> dict:
    """The sources by kind: the target task's clean ones, the noisy ones (with their
    flipped share), the other tasks' ones; rows per source; target rows."""
    pool = sel.pool()
    clean = clean_target_task(sel)
    return {"sources": len(pool.names), "target_rows": len(pool.target),
            "rows": {n: len(r) for n, r in pool.sources.items()},
            "clean_target_task": clean,
            "noisy": {n: (len(pool.flips[n]) / len(pool.sources[n]) if pool.flips else 1.0)
                      for n in pool.noisy},
            "other_task": [n for n in pool.names if n not in clean and n not in pool.noisy]}


if __name__ == "__main__":
    main()
