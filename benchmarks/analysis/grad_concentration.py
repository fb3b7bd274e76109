"""How concentrated is the task gradient? Share of ||g||^2 held by the top x% of components.

  python -m benchmarks.analysis.grad_concentration --glue_dir=../shared/data/glue --task=rte \\
      --batches=8 --json benchmarks/results/grad_concentration.json \\
      --plot benchmarks/results/grad_concentration.png

SIFT (Song et al., ICML 2024) motivates sparse increments by the observation that for a
pretrained model about 1% of the gradient's components carry ~99% of its squared norm,
and that this does not hold for a randomly initialised one. This script measures it on
`--model` (default `minilm-l6`) and on the same architecture randomly initialised
(`fishjax.models.init_params`, Hugging Face-style normal(0.02) kernels), both with a fresh
classification head from the same key, on real GLUE training batches (seeded shuffle of
the train split, sequence length `--max_length`, dropout off).

For each batch gradient g (mean loss of the batch) and each x in `--fractions` (default
0.1%, 1%, 5%): the share sum of the largest ceil(x * n) g_i^2 / sum of all g_i^2,
- per tensor (every parameter leaf), and
- globally over parameter groups: `all` (every parameter), `encoder` (the transformer
  layers: no embedding tables, whose rows for tokens absent from a batch get exactly zero
  gradient, and no pooler/classifier head), `sift_eligible` (SIFT's GLUE tensors:
  attention q/k/v/output kernels and biases).
Shares are averaged over the batches (mean, std); the same is reported for the gradient
accumulated over all batches (`accumulated`). JSON keys: `fractions`, then per model
(`pretrained`, `random_init`): `global[group][x] = {mean, std}`, `accumulated[group][x]`,
`per_tensor[path][x]` (mean over batches), `per_tensor_summary[x] = {min, median, max}`
over tensors, and `curve[group]` (share on a log grid of x, for the plot).
"""

from __future__ import annotations

import math
import os
import re
import time

import jax
import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from fishjax import objectives
from fishjax.core.tree import leaf_paths
from fishjax.data import get_task, iterate_batches, load_split, tokenize_split
from fishjax.models import (
    init_params,
    load_model,
    load_tokenizer,
)

SIFT_ELIGIBLE = r"attention/(self/(query|key|value)|output/dense)/(kernel|bias)$"
GROUPS = {"all": None, "encoder": r"^encoder/", "sift_eligible": SIFT_ELIGIBLE}
CURVE_X = np.logspace(-5, 0, 26)  # 0.001% .. 100%


def top_share(sorted_desc_cumsum: np.ndarray, x: float) -> float:
    """Share of the total held by the top ceil(x * n) entries (from a descending cumsum)."""
    n = sorted_desc_cumsum.size
    total = sorted_desc_cumsum[-1]
    if total <= 0:
        return float("nan")
    k = min(n, max(1, math.ceil(x * n)))
    return float(sorted_desc_cumsum[k - 1] / total)


def desc_cumsum(sq: np.ndarray) -> np.ndarray:
    return np.cumsum(np.sort(sq, kind="stable")[::-1], dtype=np.float64)


def analyse(grads: dict[str, np.ndarray], fractions: list[float]) -> dict:
    """Shares per tensor and per group of one gradient ({path: array})."""
    sq = {p: np.square(g.astype(np.float64)).ravel() for p, g in grads.items()}
    per_tensor = {}
    for p, s in sq.items():
        cs = desc_cumsum(s)
        per_tensor[p] = {str(x): top_share(cs, x) for x in fractions}
    groups, curve = {}, {}
    for name, pattern in GROUPS.items():
        sel = [s for p, s in sq.items() if pattern is None or re.search(pattern, p)]
        cs = desc_cumsum(np.concatenate(sel))
        groups[name] = {str(x): top_share(cs, x) for x in fractions}
        curve[name] = [top_share(cs, x) for x in CURVE_X]
    return {"per_tensor": per_tensor, "global": groups, "curve": curve}


def _mean_std(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v))}


def run_model(params, loss_fn, batches, fractions) -> dict:
    grad_fn = jax.jit(jax.grad(loss_fn))
    paths = leaf_paths(params)
    per_batch, acc = [], None
    t0 = time.perf_counter()
    for batch in batches:
        g = [np.asarray(x) for x in jax.tree_util.tree_leaves(grad_fn(params, batch))]
        acc = g if acc is None else [a + b for a, b in zip(acc, g, strict=True)]
        per_batch.append(analyse(dict(zip(paths, g, strict=True)), fractions))
    accumulated = analyse(dict(zip(paths, acc, strict=True)), fractions)
    out = {
        "global": {grp: {str(x): _mean_std([r["global"][grp][str(x)] for r in per_batch])
                         for x in fractions} for grp in GROUPS},
        "accumulated": accumulated["global"],
        "per_tensor": {p: {str(x): float(np.nanmean([r["per_tensor"][p][str(x)]
                                                     for r in per_batch]))
                           for x in fractions} for p in paths},
        "curve": {grp: np.nanmean([r["curve"][grp] for r in per_batch], axis=0).tolist()
                  for grp in GROUPS},
        "seconds": time.perf_counter() - t0,
    }
    out["per_tensor_summary"] = {}
    for x in fractions:
        v = np.asarray([out["per_tensor"][p][str(x)] for p in paths], np.float64)
        v = v[~np.isnan(v)]  # tensors with an all-zero gradient
        out["per_tensor_summary"][str(x)] = {
            "min": float(v.min()), "median": float(np.median(v)), "max": float(v.max()),
            "tensors": int(v.size)}
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"pretrained": "-", "random_init": "--"}
    colors = {"all": "C0", "encoder": "C1", "sift_eligible": "C2"}
    for model, ls in styles.items():
        for grp, c in colors.items():
            ax1.plot(100 * CURVE_X, result[model]["curve"][grp], ls, color=c,
                     label=f"{model}: {grp}")
    for x in result["fractions"]:
        ax1.axvline(100 * x, color="0.85", lw=0.8, zorder=0)
    ax1.set_xscale("log")
    ax1.set_xlabel("top x% of components (by |g|)")
    ax1.set_ylabel("share of ||g||^2")
    ax1.set_title(f"{result['model']} on {result['task']}: mean over {result['batches']} batches")
    ax1.legend(fontsize=7, loc="lower right")
    ax1.grid(alpha=0.3)

    fr = [str(x) for x in result["fractions"]]
    data, labels, positions = [], [], []
    for i, x in enumerate(fr):
        for j, model in enumerate(styles):
            v = [t[x] for t in result[model]["per_tensor"].values() if not math.isnan(t[x])]
            data.append(v)
            positions.append(3 * i + j)
            labels.append(f"{100 * float(x):g}%\n{'pre' if model == 'pretrained' else 'rand'}")
    box = ax2.boxplot(data, positions=positions, widths=0.8, patch_artist=True)
    for k, patch in enumerate(box["boxes"]):
        patch.set_facecolor("C0" if k % 2 == 0 else "C3")
    ax2.set_xticks(positions, labels, fontsize=8)
    ax2.set_ylabel("share of the tensor's ||g||^2")
    ax2.set_title("per tensor (every parameter leaf)")
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=cli.GLUE_DIR)
    p.add_argument("--task", default="rte")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--fractions", default="0.001,0.01,0.05")
    p.add_argument("--seed", type=int, default=0)
    cli.add_json(p)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fractions = [float(x) for x in args.fractions.split(",")]
    task = get_task(args.task)
    raw = load_split(task, task.train_split, os.path.join(args.glue_dir, task.glue_folder))
    key = jax.random.PRNGKey(args.seed)
    model = load_model(args.model, task.num_labels, key=key)
    random_params = init_params(model.config, task.num_labels, key)
    ds = tokenize_split(raw, load_tokenizer(model.model_dir), max_length=args.max_length,
                        buckets=(args.max_length,))
    batches = [b for _, b in zip(range(args.batches), iterate_batches(
        ds, args.batch_size, seed=args.seed, epoch=0, shuffle=True), strict=False)]
    loss_fn = objectives.make_loss_fn(model.module, objectives.for_task(task))

    result = {"model": args.model, "task": task.name, "batches": len(batches),
              "batch_size": args.batch_size, "max_length": args.max_length,
              "fractions": fractions, "groups": GROUPS, "curve_x": CURVE_X.tolist()}
    for name, params in (("pretrained", model.params), ("random_init", random_params)):
        result[name] = run_model(params, loss_fn, batches, fractions)
        g = result[name]["global"]
        print(f"{name}: " + "; ".join(
            f"{grp} top " + ", ".join(f"{100 * x:g}%={g[grp][str(x)]['mean']:.3f}"
                                      for x in fractions) for grp in GROUPS), flush=True)
    result.update(machine())
    cli.write_json(args.json, result)
    if args.plot:
        plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
