"""`benchmarks/grid/glue.py --select_on=validation`: learning rates chosen on a held-out split of
the training set, never on GLUE dev.

  python -m benchmarks.grid.glue --select_on=validation --glue_dir=../shared/data/glue \\
      --tasks=rte,mrpc --methods=full,fish,lora --seeds=0,1,2 --out=benchmarks/results/glue_val

Protocol (the default `--select_on=dev_last` protocol of glue.py stays as it was):
- Validation split: per task, a seeded share of the training rows (`--validation_fraction`
  0.1, at most `--validation_cap` 500 rows, `np.random.default_rng(--validation_seed)`),
  held out of training for every cell (`fishjax.data.row_split`: the trainer evaluates
  it as the eval split `validation` beside dev). Written once to
  `<out>/splits/<task>-validation.json`.
- Learning rates: each method's `LR_GRIDS` entry (or `--lr_grid method=a/b/c,...`), three
  values spanning 3-10x around the usual choice for the method (full fine-tuning: 3e-5
  to 1e-4). The first seed runs
  every value; when the best is an edge of the grid, strictly better than its neighbour,
  one more rate a grid step past that edge runs on the first seed, at most
  `MAX_EXTENSIONS` times (`tried_rates`; a rate at the edge says the optimum may lie
  outside the grid, and the sparse methods' optimum often lies above the usual choice).
  The value with the best final validation main metric (ties: the smaller rate) is then
  run with the other seeds. The reported score is dev's final main metric
  at the chosen rate, mean ± std over the seeds; every tried rate's validation score is in
  `results.json` (`selection`) and in the table.
- A row whose every dev score equals the majority-class score (predicting the commonest
  dev label) is marked `= majority`: it did not learn.
Cells are `<task>-<method>-lr<lr>-s<seed>` in the same results.json / cells layout as
glue.py, resumable the same way.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks.grid.cells import score_of
from fishjax.core.io import read_json
from fishjax.data import get_task, load_split
from fishjax.data.metrics import compute_metrics
from fishjax.data.row_split import VALIDATION, make_row_split, save_row_split

# Learning-rate grids per registered method (a variant uses its base method's).
LR_GRIDS: dict[str, tuple[float, ...]] = {
    "full": (3e-5, 5e-5, 1e-4),
    **{m: (2e-4, 6e-4, 2e-3) for m in ("fish", "random_mask", "bitfit", "ird", "sift",
                                       "lora", "lora_fish", "dora", "dora_fish")},
    **{m: (3e-4, 1e-3, 3e-3) for m in ("adapter", "adapter_fish", "xpeft", "head_only")},
    # a recipe with its own rate (configs/fish_reference.py): that rate only
    "fish_reference": (5e-5,),
}
FRACTION, CAP, SPLIT_SEED = 0.1, 500, 0
MAX_EXTENSIONS = 2  # rates added past a grid edge that scores best (`tried_rates`)


def lr_id(lr: float) -> str:
    return f"{lr:g}"


def cell_id(task: str, method: str, lr: float, seed: int) -> str:
    return f"{task}-{method}-lr{lr_id(lr)}-s{seed}"


def parse_lr_grid(text: str) -> dict[str, tuple[float, ...]]:
    """`method=a/b/c,...` -> {method: (a, b, c)} over LR_GRIDS."""
    out = dict(LR_GRIDS)
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        method, sep, values = item.partition("=")
        try:
            rates = tuple(float(v) for v in values.split("/"))
        except ValueError:
            rates = ()
        if not sep or not rates or any(r <= 0 for r in rates):
            raise SystemExit(f"--lr_grid expects method=lr/lr/...,... with rates > 0, got "
                             f"{item!r}")
        out[method] = rates
    return out


def grid_of(method: str, base: str, grids: dict[str, tuple[float, ...]]) -> tuple[float, ...]:
    if method in grids:
        return grids[method]
    if base in grids:
        return grids[base]
    raise SystemExit(f"no learning-rate grid for {method!r}: pass --lr_grid {method}=a/b/c")


def validation_rows(n: int, fraction: float = FRACTION, cap: int = CAP,
                    seed: int = SPLIT_SEED) -> np.ndarray:
    """The held-out rows of a training split of n rows (sorted)."""
    if not 0 < fraction < 1 or cap < 1:
        raise SystemExit(f"validation split: fraction {fraction} must be in (0, 1), cap >= 1")
    size = max(1, min(cap, int(round(fraction * n))))
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def ensure_split(task: str, n_rows: int, out: str, fraction: float, cap: int,
                 seed: int) -> str:
    """The row split file of `task` (train: every row but the validation ones)."""
    path = os.path.join(out, "splits", f"{task}-validation.json")
    val = validation_rows(n_rows, fraction, cap, seed)
    if os.path.exists(path):
        saved = read_json(path)
        if saved.get(VALIDATION) != val.tolist():
            raise SystemExit(f"{path} holds another validation split (other fraction, cap, "
                             "seed or data): use another --out")
        return path
    train = np.setdiff1d(np.arange(n_rows), val)
    return save_row_split(path, make_row_split(train, validation=val, source=path))


def validation_score(cell: dict) -> float | None:
    final = cell.get("final") or {}
    key = f"{VALIDATION}/{cell['main_metric']}"
    return None if key not in final else float(final[key])


def _seed_scores(cells: dict[str, dict], task: str, method: str, rates: tuple[float, ...],
                 seed: int) -> dict[str, float | None]:
    """{rate: validation score of the seed's cell, None while it is unfinished}."""
    out = {}
    for lr in rates:
        c = cells.get(cell_id(task, method, lr, seed), {})
        out[lr_id(lr)] = validation_score(c) if c.get("status") == "ok" else None
    return out


def _best(rates: tuple[float, ...], scores: dict[str, float | None]) -> float:
    return max(rates, key=lambda lr: (scores[lr_id(lr)], -lr))  # ties: the smaller rate


def next_rate(rates: tuple[float, ...], upward: bool) -> float:
    """One step past the sorted grid's edge, the step its geometric mean one, rounded to one
    significant digit (2e-4, 6e-4, 2e-3 -> 6e-3 up, 6e-5 down)."""
    step = (rates[-1] / rates[0]) ** (1 / (len(rates) - 1))
    return float(f"{(rates[-1] * step if upward else rates[0] / step):.0e}")


def tried_rates(cells: dict[str, dict], task: str, method: str, rates: tuple[float, ...],
                seed: int) -> tuple[float, ...]:
    """The grid's rates, sorted, plus one rate past an edge each time the finished grid's
    best is that edge, strictly better than its neighbour (at most `MAX_EXTENSIONS`): a
    best rate at the edge of the grid says the optimum may lie outside it."""
    rates = tuple(sorted(rates))
    for _ in range(MAX_EXTENSIONS if len(rates) > 1 else 0):
        scores = _seed_scores(cells, task, method, rates, seed)
        if any(v is None for v in scores.values()):
            break
        best, v = _best(rates, scores), [scores[lr_id(lr)] for lr in rates]
        # strictly better than its neighbour: a tie (e.g. every rate at the majority class)
        # says nothing about the rates past the edge
        if best == rates[-1] and v[-1] > v[-2]:
            rates = rates + (next_rate(rates, True),)
        elif best == rates[0] and v[0] > v[1]:
            rates = (next_rate(rates, False),) + rates
        else:
            break
    return rates


def choose_lr(cells: dict[str, dict], task: str, method: str, rates: tuple[float, ...],
              seed: int) -> tuple[float | None, dict[str, float | None]]:
    """(chosen rate or None while a tried rate is unfinished, {rate: validation score}) over
    `tried_rates`: the grid and its extensions."""
    tried = _seed_scores(cells, task, method, tried_rates(cells, task, method, rates, seed),
                         seed)
    if any(v is None for v in tried.values()):
        return None, tried
    return _best(tuple(float(k) for k in tried), tried), tried


def todo(tasks: list[str], methods: list[str], seeds: list[int], rates_of,
         cells: dict[str, dict]) -> list[tuple[str, str, float, int]]:
    """Cells to run now: every rate with the first seed; the chosen rate with the others
    once its choice is known (call again after each cell)."""
    first, rest = seeds[0], seeds[1:]
    out = []
    for t in tasks:
        for m in methods:
            rates = rates_of(m)
            out += [(t, m, lr, first) for lr in tried_rates(cells, t, m, rates, first)
                    if cells.get(cell_id(t, m, lr, first), {}).get("status") != "ok"]
    for t in tasks:
        for m in methods:
            chosen, _ = choose_lr(cells, t, m, rates_of(m), first)
            if chosen is not None:
                out += [(t, m, chosen, s) for s in rest
                        if cells.get(cell_id(t, m, chosen, s), {}).get("status") != "ok"]
    return out


def majority_score(task: str, data_dir: str | None) -> float | None:
    """The dev main metric of always predicting the commonest dev label (None: regression
    or no local data)."""
    spec = get_task(task)
    if spec.is_regression or not data_dir:
        return None
    split = spec.eval_splits[0]
    labels = load_split(spec, split, data_dir).labels
    common = np.bincount(labels).argmax()
    metrics = compute_metrics(spec, np.full(labels.shape, common), labels)
    return float(metrics[spec.main_metric])


def selection_summary(cells: dict[str, dict], tasks, methods, seeds, rates_of) -> dict:
    out: dict[str, Any] = {}
    for t in tasks:
        for m in methods:
            chosen, tried = choose_lr(cells, t, m, rates_of(m), seeds[0])
            dev = [d for d in (score_of(cells[cell_id(t, m, chosen, s)]) for s in seeds
                               if chosen is not None and
                               cells.get(cell_id(t, m, chosen, s), {}).get("status") == "ok")
                   if d is not None]
            majority = next((c.get("majority_dev") for c in cells.values()
                             if c.get("task") == t and c.get("majority_dev") is not None), None)
            out.setdefault(t, {})[m] = {
                "chosen_lr": chosen, "validation_by_lr": tried, "dev_scores": dev,
                "majority_dev": majority,
                "at_majority": bool(dev) and majority is not None and all(
                    abs(d - majority) < 1e-9 for d in dev)}
    return out


def _edge_mark(chosen: str, by_lr: list[tuple[str, float | None]]) -> str:
    """' (grid top)' / ' (grid bottom)' when every rate ran and the chosen one is the
    largest / smallest tried: the best rate may lie outside the grid."""
    if len(by_lr) < 2 or any(v is None for _, v in by_lr):
        return ""
    return {by_lr[-1][0]: " (grid top)", by_lr[0][0]: " (grid bottom)"}.get(chosen, "")


def markdown_table(summary: dict, tasks: list[str], methods: list[str]) -> str:
    """Rows: methods; per task: dev 100 x mean ± std (n) at the chosen rate, the rate, and
    every tried rate's validation score."""
    header = []
    for t in tasks:
        header += [f"{t} dev ({get_task(t).main_metric})", f"{t} lr (validation by lr)"]
    lines = ["| method | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for m in methods:
        row = [m]
        for t in tasks:
            e = summary[t][m]
            dev = [100 * d for d in e["dev_scores"]]
            text = f"{np.mean(dev):.1f} ± {np.std(dev):.1f} (n={len(dev)})" if dev else "–"
            if e["at_majority"]:
                text += " = majority"
            by_lr = sorted(e["validation_by_lr"].items(), key=lambda kv: float(kv[0]))
            tried = ", ".join(f"{k}: {'–' if v is None else f'{100 * v:.1f}'}"
                              for k, v in by_lr)
            chosen = "–" if e["chosen_lr"] is None else lr_id(e["chosen_lr"])
            chosen += _edge_mark(chosen, by_lr)
            row += [text, f"{chosen} ({tried})"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
