"""Parameter trees addressed by `/`-joined paths: the one set of tree helpers fishjax uses.

Masks, Fisher scores and sparse indices are trees shaped like the params; methods select
leaves with regexes over path strings such as `encoder/layer_0/attention/self/query/kernel`.

Two views of a tree:
- any pytree, leaf by leaf in tree-flatten order (`leaf_paths`, `match_tree`, `count_true`,
  `unflatten_like`): for masks and optimizer states;
- a nested dict as `{path tuple: leaf}` (`flatten_paths` / `unflatten_paths`): for trees
  that hold only some of the params' leaves, e.g. the trainable part and the frozen part
  of a model (`split_tree` / `merge_trees`), or a sparse increment's selected leaves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

PyTree = Any
Path = tuple[str, ...]
# Which leaves of a tree: a regex over `/`-joined paths, a bool tree shaped like it, or None.
Selector = PyTree | str | None


# -- any pytree, leaf by leaf ------------------------------------------------------------


def key_name(key: Any) -> str:
    """The name of one `jax.tree_util` path entry (dict key, attribute or index)."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_str(path: Sequence[Any]) -> str:
    """`/`-joined names of a `jax.tree_util` key path."""
    return "/".join(key_name(k) for k in path)


def leaf_paths(tree: PyTree) -> list[str]:
    """The path strings of every leaf, in tree-flatten order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def match_tree(tree: PyTree, pattern: str | None) -> PyTree:
    """A tree of Python bools: True where the leaf's path `re.search`-matches `pattern`."""
    if not pattern:
        return jax.tree_util.tree_map(lambda _: False, tree)
    regex = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(lambda p, _: bool(regex.search(path_str(p))), tree)


def numpy_leaves(tree: PyTree) -> list[np.ndarray]:
    """Every leaf as a numpy array, in tree-flatten order."""
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def unflatten_like(tree: PyTree, leaves: Sequence[Any]) -> PyTree:
    """`leaves` (in tree-flatten order) put into the structure of `tree`."""
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), list(leaves))


def count_params(tree: PyTree) -> int:
    """Number of scalar entries over all leaves."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def count_true(tree: PyTree) -> int:
    """Number of True (nonzero) entries over all leaves, e.g. the size of a mask."""
    return int(sum(np.count_nonzero(np.asarray(m)) for m in jax.tree_util.tree_leaves(tree)))


def tree_bytes(tree: PyTree) -> int:
    """Bytes held by all array leaves."""
    leaves = jax.tree_util.tree_leaves(tree)
    return int(sum(np.size(x) * np.dtype(x.dtype).itemsize for x in leaves))


# -- nested dicts as {path: leaf} -----------------------------------------------------------


def as_dict(tree: PyTree) -> PyTree:
    """A nested Mapping (e.g. a flax FrozenDict) as plain nested dicts; leaves as they are."""
    if isinstance(tree, Mapping):
        return {k: as_dict(v) for k, v in tree.items()}
    return tree


def flatten_paths(tree: PyTree) -> dict[Path, Any]:
    """{path tuple: leaf} of a nested dict (empty subtrees dropped); see `unflatten_paths`."""
    if not tree:
        return {}
    return traverse_util.flatten_dict(as_dict(tree))


def unflatten_paths(flat: Mapping[Path, Any]) -> dict:
    """Nested dict from {path tuple: leaf} (inverse of `flatten_paths`)."""
    return traverse_util.unflatten_dict(dict(flat)) if flat else {}


def host_arrays(tree: PyTree) -> dict[Path, np.ndarray]:
    """{path: numpy array} of a nested dict of (device or host) arrays."""
    return {p: np.asarray(jax.device_get(x)) for p, x in flatten_paths(tree).items()}


def selected_paths(tree: PyTree, selector: Selector) -> dict[Path, bool]:
    """{path: bool} for every leaf of `tree`, from a regex, a bool tree or None (none)."""
    if selector is None:
        return {p: False for p in flatten_paths(tree)}
    if isinstance(selector, str):
        selector = match_tree(tree, selector)
    return {p: bool(v) for p, v in flatten_paths(selector).items()}


def selector_of(tree: PyTree, paths: set[Path]) -> dict:
    """A bool tree shaped like `tree`: True at the leaves whose path is in `paths`."""
    return unflatten_paths({p: p in paths for p in flatten_paths(tree)})


def split_tree(tree: PyTree, selector: Selector) -> tuple[dict, dict]:
    """(selected leaves, other leaves) as two nested dicts holding only their own leaves."""
    sel = selected_paths(tree, selector)
    flat = flatten_paths(tree)
    return (unflatten_paths({p: x for p, x in flat.items() if sel[p]}),
            unflatten_paths({p: x for p, x in flat.items() if not sel[p]}))


def merge_trees(*trees: PyTree) -> dict:
    """Union of nested dicts with disjoint leaves (inverse of `split_tree`)."""
    out: dict[Path, Any] = {}
    for t in trees:
        for p, x in flatten_paths(t).items():
            if p in out:
                raise ValueError(f"leaf {'/'.join(p)!r} is in two trees")
            out[p] = x
    return unflatten_paths(out)


def union(a: PyTree, b: PyTree) -> PyTree:
    """Element-wise OR of two bool trees of the same structure (e.g. two masks)."""
    return jax.tree_util.tree_map(lambda x, y: np.logical_or(x, y), a, b)


def tree_sha256(tree: PyTree) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes (any pytree; device arrays are
    copied to the host): the integrity record of a checkpoint."""
    h = hashlib.sha256()
    # Sorted by path: a tree restored without a target (plain dicts) hashes like the
    # dataclasses and named tuples it was saved from.
    leaves = sorted(((path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]),
                    key=lambda item: item[0])
    for path, x in leaves:
        x = np.ascontiguousarray(np.asarray(jax.device_get(x)))
        h.update(f"{path}|{x.dtype.str}|{list(x.shape)}\n".encode())
        h.update(x.tobytes())
    return h.hexdigest()


def all_finite(tree: PyTree) -> bool:
    """Whether every floating-point entry of every leaf is finite."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
