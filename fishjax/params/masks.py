"""Bool masks shaped like the params: whole-leaf masks by regex and mask statistics.

A mask is a tree of bool arrays shaped like the params (True = trained). Selections that
produce masks from scores live in `fishjax.selection.topk`; mask files in
`fishjax.artifacts.mask_file`; training through a mask in `fishjax.params.masked`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from fishjax.core.tree import PyTree, leaf_paths, match_tree, numpy_leaves


def regex_mask(params: PyTree, pattern: str) -> PyTree:
    """Whole leaves whose path matches `pattern` (e.g. BitFit: r"bias$")."""
    selected = match_tree(params, pattern)
    return jax.tree_util.tree_map(lambda p, s: np.full(np.shape(p), s, dtype=bool), params,
                                  selected)


def density(mask: PyTree) -> dict[str, Any]:
    """Per-leaf and total selected counts and densities."""
    per_leaf = {}
    for path, m in zip(leaf_paths(mask), numpy_leaves(mask), strict=True):
        per_leaf[path] = {"selected": int(np.count_nonzero(m)), "size": int(m.size),
                          "density": float(np.count_nonzero(m) / max(m.size, 1))}
    selected = sum(v["selected"] for v in per_leaf.values())
    size = sum(v["size"] for v in per_leaf.values())
    return {"selected": selected, "size": size, "density": selected / max(size, 1),
            "per_leaf": per_leaf}
