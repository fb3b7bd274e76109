"""Plots of a GLUE grid (benchmarks/grid/glue.py): scores vs trainable fraction, and the masks.

  python -m benchmarks.grid.plots --out benchmarks/results/glue      # or: glue.py --report --plots

Reads `<out>/results.json` and the mask files (`mask.safetensors`, written by the mask
methods: fish, random_mask, bitfit, ird, sift, ...) in the cells' workdirs
(`<out>/cells/<cell id>/`, else the `workdir` the cell recorded). Cells without a mask file
(full, LoRA-style methods) only appear in the first plot. Writes to `<dest>` (default
`<out>/plots/`):

- `score_vs_trainable.png`: one panel per task, x = trainable entries / model parameters
  (log scale), y = 100 x final dev main metric, mean ± std over seeds, one point per method.
- `mask_density_per_layer.png`: one panel per mask method, the fraction of each layer's
  entries the mask selects (embeddings, layer 0..N-1, pooler; log scale), mean over seeds,
  one line per task.
- `mask_jaccard.png`: one heatmap per mask method with >= 2 masks: Jaccard overlap
  |A ∩ B| / |A ∪ B| between the masks of every (task, seed).
Both leave out the task head (leaves matching the cell's `method.<name>.head_regex` or
`method.head_regex` from its config.json, else `^classifier/`): it is always fully
trained, so it would only inflate densities and overlaps. `random_mask` draws its mask
from the seed alone, so its masks of one seed agree across tasks (Jaccard 1).
- `mask_stats.json`: the numbers behind the two mask plots.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from benchmarks.common import cli
from benchmarks.grid.cells import (
    METHOD_ORDER,
    TASK_ORDER,
    cell_id,
    ordered,
    score_of,
    trainable_fraction,
)
from fishjax.artifacts.mask_file import MASK_FILE, read_mask
from fishjax.core.io import atomic_write, atomic_write_json, read_json
from fishjax.models import model_family

# For a workdir without config.json (its config records the head it used): the head of the
# encoder families (fishjax.models.registry).
DEFAULT_HEAD_REGEX = model_family("bert").head_regex
_LAYER = re.compile(r"(?:^|/)layers?[_/](\d+)(?:/|$)")


# -- loading -----------------------------------------------------------------------------


def load_results(out: str) -> dict:
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path} does not exist (run benchmarks/grid/glue.py first)")
    state = read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("cells"), dict):
        raise SystemExit(f"{path}: expected {{'cells': {{cell_id: {{...}}}}}}")
    return state


def cell_workdir(cell: dict, out: str) -> str | None:
    """The cell's workdir: `<out>/cells/<id>`, else the path it recorded (if it exists)."""
    for d in (os.path.join(out, "cells", cell_id(cell["task"], cell["method"], cell["seed"])),
              cell.get("workdir")):
        if d and os.path.isdir(d):
            return d
    return None


def head_regex_of(workdir: str, method: str) -> str:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return DEFAULT_HEAD_REGEX
    m = read_json(path).get("method", {})
    own = m.get(method) if isinstance(m.get(method), dict) else {}
    return own.get("head_regex") or m.get("head_regex") or DEFAULT_HEAD_REGEX


def layer_of(path: str) -> str:
    """'encoder/layer_3/attention/...' -> 'layer 3'; else the first path component."""
    hit = _LAYER.search(path)
    return f"layer {int(hit.group(1))}" if hit else path.split("/")[0]


def _layer_key(name: str) -> tuple[int, int, str]:
    """Model order: embeddings, layer 0..N-1, pooler, then the rest (the head)."""
    if name.startswith("layer "):
        return (1, int(name.split()[1]), "")
    return (0 if "embed" in name else 2 if name == "pooler" else 3, 0, name)


def mask_summary(leaves: dict[str, np.ndarray], head_regex: str) -> dict[str, Any]:
    """Per-layer [selected, size] outside the head (the head is always fully trained), and
    the sorted flat indices (over all leaves in sorted path order) of those entries."""
    per_layer: dict[str, list[int]] = {}
    head = re.compile(head_regex)
    flat, offset = [], 0
    for path in sorted(leaves):
        m = np.asarray(leaves[path])
        if not head.search(path):
            sel = per_layer.setdefault(layer_of(path), [0, 0])
            sel[0] += int(np.count_nonzero(m))
            sel[1] += int(m.size)
            flat.append(np.flatnonzero(m) + offset)
        offset += m.size
    return {"per_layer": per_layer,
            "indices": np.concatenate(flat) if flat else np.zeros(0, np.int64)}


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two sorted unique index arrays (1.0 for two empty sets)."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return 1.0 if union == 0 else inter / union


def collect_masks(state: dict, out: str) -> dict[str, list[dict[str, Any]]]:
    """{method: [{task, seed, per_layer, indices}, ...]} over ok cells with a mask file."""
    found: dict[str, list[dict[str, Any]]] = {}
    for cell in state["cells"].values():
        if cell.get("status") != "ok":
            continue
        workdir = cell_workdir(cell, out)
        if workdir is None or not os.path.exists(os.path.join(workdir, MASK_FILE)):
            continue
        leaves, _ = read_mask(os.path.join(workdir, MASK_FILE))
        base = cell.get("base_method", cell["method"])  # a variant's registered method
        summary = mask_summary(leaves, head_regex_of(workdir, base))
        found.setdefault(cell["method"], []).append(
            {"task": cell["task"], "seed": cell["seed"], **summary})
    for entries in found.values():
        entries.sort(key=lambda e: (_task_rank(e["task"]), e["seed"]))
    return found


def _task_rank(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


# -- numbers -----------------------------------------------------------------------------


def score_points(state: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{task: {method: {fraction, mean, std, n}}}: 100 x score over the ok seeds."""
    cells = state["cells"]
    points: dict[str, dict[str, dict[str, float]]] = {}
    for c in cells.values():
        if c.get("status") != "ok" or score_of(c) is None:
            continue
        p = points.setdefault(c["task"], {}).setdefault(c["method"], {"scores": [],
                                                                      "fractions": []})
        p["scores"].append(100 * score_of(c))
        f = trainable_fraction(c, cells)
        if f is not None:
            p["fractions"].append(f)
    return {t: {m: {"fraction": float(np.mean(p["fractions"])) if p["fractions"] else None,
                    "mean": float(np.mean(p["scores"])), "std": float(np.std(p["scores"])),
                    "n": len(p["scores"])} for m, p in by_m.items()}
            for t, by_m in points.items()}


def density_table(masks: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {task: {layer: mean density over seeds}}}."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, entries in masks.items():
        for task in {e["task"] for e in entries}:
            runs = [e["per_layer"] for e in entries if e["task"] == task]
            layers = sorted(runs[0], key=_layer_key)
            out.setdefault(method, {})[task] = {
                layer: float(np.mean([r[layer][0] / max(r[layer][1], 1) for r in runs]))
                for layer in layers}
    return out


def jaccard_table(masks: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """{method: {labels: ['task s<seed>', ...], matrix: [[...]], across_tasks, across_seeds}}
    for methods with >= 2 masks (see `_jaccard_summary`)."""
    out = {}
    for method, entries in masks.items():
        if len(entries) < 2:
            continue
        matrix = [[jaccard(a["indices"], b["indices"]) for b in entries] for a in entries]
        out[method] = {"labels": [f"{e['task']} s{e['seed']}" for e in entries],
                       "matrix": matrix, **_jaccard_summary(entries, matrix)}
    return out


def _jaccard_summary(entries: list[dict], matrix: list[list[float]]) -> dict[str, Any]:
    """Mean, min and max overlap over pairs with the same seed and different tasks
    (`across_tasks`), and over pairs of one task with different seeds (`across_seeds`)."""
    pairs: dict[str, list[float]] = {"across_tasks": [], "across_seeds": []}
    for i, a in enumerate(entries):
        for j in range(i + 1, len(entries)):
            b = entries[j]
            if a["seed"] == b["seed"] and a["task"] != b["task"]:
                pairs["across_tasks"].append(matrix[i][j])
            elif a["task"] == b["task"] and a["seed"] != b["seed"]:
                pairs["across_seeds"].append(matrix[i][j])
    return {k: {"mean": float(np.mean(v)), "min": float(min(v)), "max": float(max(v)),
                "pairs": len(v)} if v else None for k, v in pairs.items()}


# -- figures -----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    _pyplot().close(fig)


def _grid(n: int, width: float = 4.5, height: float = 3.6):
    plt = _pyplot()
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _method_style(methods: list[str]) -> dict[str, dict[str, Any]]:
    """A fixed colour and marker per method, the same in every panel (up to 20 methods
    with distinct colours; markers tell the selection baselines apart)."""
    plt = _pyplot()
    colours = plt.get_cmap("tab20").colors
    markers = {"_random": "s", "_reversed": "v"}
    style = {}
    for i, m in enumerate(methods):
        marker = next((v for k, v in markers.items() if m.endswith(k)), "o")
        style[m] = {"color": colours[i % len(colours)], "marker": marker}
    return style


def plot_scores(points: dict, path: str) -> None:
    tasks = sorted(points, key=_task_rank)
    fig, axes = _grid(max(len(tasks), 1))
    methods = ordered({m for t in points.values() for m in t}, METHOD_ORDER)
    style = _method_style(methods)
    for ax, task in zip(axes, tasks, strict=False):
        for method in ordered(set(points[task]), METHOD_ORDER):
            p = points[task][method]
            if p["fraction"] is None:
                continue
            ax.errorbar(p["fraction"], p["mean"], yerr=p["std"], fmt=style[method]["marker"],
                        color=style[method]["color"], capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("trainable entries / model parameters")
        ax.set_ylabel("dev score x 100 (mean ± std over seeds)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    # One legend for all panels, beside them: inside, it hides points.
    handles, labels = {}, {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    labels = [m for m in methods if m in handles]
    if labels:
        fig.legend([handles[m] for m in labels], labels, loc="center left",
                   bbox_to_anchor=(1.0, 0.5), fontsize=8)
    _save(fig, path)


def plot_density(density: dict, path: str) -> None:
    methods = ordered(set(density), METHOD_ORDER)
    fig, axes = _grid(max(len(methods), 1))
    for ax, method in zip(axes, methods, strict=False):
        for task in sorted(density[method], key=_task_rank):
            layers = list(density[method][task])
            ax.plot(range(len(layers)), [100 * density[method][task][x] for x in layers],
                    marker="o", label=task)
            ax.set_xticks(range(len(layers)), layers, rotation=60, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("% of the layer's entries selected (log)")
        ax.set_title(method)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def plot_jaccard(table: dict, path: str) -> None:
    methods = ordered(set(table), METHOD_ORDER)
    fig, axes = _grid(max(len(methods), 1), width=5.0, height=4.4)
    for ax, method in zip(axes, methods, strict=False):
        labels, matrix = table[method]["labels"], np.asarray(table[method]["matrix"])
        im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        if len(labels) <= 12:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if matrix[i, j] < 0.5 else "black")
        ax.set_title(f"{method}: mask Jaccard (head excluded)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def make_plots(out: str, dest: str | None = None) -> list[str]:
    """Writes the plots (and mask_stats.json) of the grid in `out`; returns their paths."""
    state = load_results(out)
    dest = dest or os.path.join(out, "plots")
    os.makedirs(dest, exist_ok=True)
    written = []
    points = score_points(state)
    path = os.path.join(dest, "score_vs_trainable.png")
    plot_scores(points, path)
    written.append(path)
    masks = collect_masks(state, out)
    density, overlap = density_table(masks), jaccard_table(masks)
    if density:
        path = os.path.join(dest, "mask_density_per_layer.png")
        plot_density(density, path)
        written.append(path)
    if overlap:
        path = os.path.join(dest, "mask_jaccard.png")
        plot_jaccard(overlap, path)
        written.append(path)
    path = os.path.join(dest, "mask_stats.json")
    atomic_write_json(path, {"scores": points, "density_per_layer": density,
                             "jaccard": overlap,
                             "masks": {m: [f"{e['task']} s{e['seed']}" for e in entries]
                                       for m, entries in masks.items()}})
    written.append(path)
    return written


def main(argv=None) -> list[str]:
    p = cli.parser(__doc__)
    p.add_argument("--out", default="benchmarks/results/glue", help="the grid's folder")
    p.add_argument("--dest", default=None, help="where to write (default <out>/plots)")
    args = p.parse_args(argv)
    written = make_plots(args.out, args.dest)
    print("\n".join(written))
    return written


if __name__ == "__main__":
    main()
