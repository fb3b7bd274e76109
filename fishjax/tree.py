"""Small helpers over parameter pytrees addressed by `/`-joined paths.

Masks, Fisher scores and sparse indices in fishjax are trees shaped like the params; the
methods select leaves with regexes over these path strings (e.g.
`encoder/layer_0/attention/self/query/kernel`).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np

PyTree = Any


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_str(path: tuple) -> str:
    """`/`-joined names of a `jax.tree_util` key path."""
    return "/".join(_key_name(k) for k in path)


def leaf_paths(tree: PyTree) -> list[str]:
    """The path strings of every leaf, in tree-flatten order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def match_tree(tree: PyTree, pattern: str | None) -> PyTree:
    """A tree of Python bools: True where the leaf's path `re.search`-matches `pattern`."""
    if not pattern:
        return jax.tree_util.tree_map(lambda _: False, tree)
    regex = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(lambda p, _: bool(regex.search(path_str(p))), tree)


def count_params(tree: PyTree) -> int:
    """Number of scalar entries over all leaves."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def tree_bytes(tree: PyTree) -> int:
    """Bytes held by all array leaves."""
    leaves = jax.tree_util.tree_leaves(tree)
    return int(sum(np.size(x) * np.dtype(x.dtype).itemsize for x in leaves))
