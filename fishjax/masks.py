"""Sparse parameter masks: exact global top-k, baselines, statistics, mask files.

A mask is a tree of bool arrays shaped like the params. `top_k_mask` sets exactly k
entries over all eligible leaves together (one global ranking, no per-layer quota, as FISH
does). Ties are broken deterministically: among equal scores the entry that comes first in
tree-flatten order (leaves by sorted path, entries in row-major order) wins, so the same
scores always give the same mask.

Budgets follow the FISH reference: `keep_ratio` is a fraction of *all* parameters; with
`head_policy="in_budget"` the always-trained task head counts against it (head + selected
= keep_ratio x all), with `"outside"` the head is trained on top of it.

Mask files: safetensors with one int32 array of flat indices per leaf that has any
selected entry (keyed by the leaf's `/`-joined path), and JSON metadata (shapes of every
leaf, keep ratio, Fisher settings, seed, model id, fishjax version) in the header.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np

import fishjax
from fishjax.io_utils import atomic_write_bytes, read_tagged_safetensors
from fishjax.tree import PyTree, leaf_paths, match_tree

HEAD_POLICIES = ("in_budget", "outside")
_META_KEY = "fishjax_mask"


class MaskError(ValueError):
    """A mask or mask file that does not fit the params, or bad selection arguments."""


def _flat(tree: PyTree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _unflatten_like(tree: PyTree, leaves: list[Any]) -> PyTree:
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), leaves)


def count_selected(mask: PyTree) -> int:
    return int(sum(np.count_nonzero(np.asarray(m)) for m in jax.tree_util.tree_leaves(mask)))


def budget_k(
    num_params: int, keep_ratio: float, head_entries: int = 0, head_policy: str = "in_budget"
) -> int:
    """Entries to select besides the head, for a keep ratio over all `num_params`."""
    if not 0.0 < keep_ratio <= 1.0:
        raise MaskError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    if head_policy not in HEAD_POLICIES:
        raise MaskError(f"head_policy must be one of {HEAD_POLICIES}, got {head_policy!r}")
    budget = int(round(keep_ratio * num_params))
    if head_policy == "outside":
        return budget
    if budget < head_entries:
        raise MaskError(
            f"keep_ratio={keep_ratio} gives {budget} entries, fewer than the {head_entries} of "
            "the task head that head_policy='in_budget' counts against it")
    return budget - head_entries


def top_k_mask(scores: PyTree, k: int, eligible: PyTree | str | None = None,
               tie_key: jax.Array | None = None) -> PyTree:
    """Bool tree with exactly `k` True entries: the k highest scores among eligible leaves.

    Ties go to the entry first in tree-flatten order (stable sort), so the result is a
    pure function of the scores; with a PRNG `tie_key`, ties are broken uniformly at
    random instead (a seeded permutation before the stable sort: the same key gives the
    same mask). Raises MaskError if k exceeds the eligible entries or a score is NaN.

    Example:
      >>> mask = top_k_mask(fisher.scores, k=10_000, eligible=r"^encoder/")
    """
    leaves = _flat(scores)
    if eligible is None:
        elig = [True] * len(leaves)
    elif isinstance(eligible, str):
        elig = jax.tree_util.tree_leaves(match_tree(scores, eligible))
    else:
        elig = jax.tree_util.tree_leaves(eligible)
    sizes = [x.size if e else 0 for x, e in zip(leaves, elig, strict=True)]
    total = sum(sizes)
    if not 0 <= k <= total:
        raise MaskError(f"cannot select k={k} of {total} eligible entries")
    flat = np.concatenate([x.reshape(-1).astype(np.float32) for x, e in zip(leaves, elig,
                                                                           strict=True) if e]
                          or [np.zeros(0, np.float32)])
    if np.isnan(flat).any():
        raise MaskError("scores contain NaN")
    chosen = np.zeros(total, dtype=bool)
    if tie_key is None:
        order = np.argsort(-flat, kind="stable")
    else:
        perm = np.asarray(jax.random.permutation(tie_key, total))
        order = perm[np.argsort(-flat[perm], kind="stable")]
    chosen[order[:k]] = True
    out, offset = [], 0
    for x, e, n in zip(leaves, elig, sizes, strict=True):
        if e:
            out.append(chosen[offset:offset + n].reshape(x.shape))
            offset += n
        else:
            out.append(np.zeros(x.shape, dtype=bool))
    return _unflatten_like(scores, out)


def random_mask(params: PyTree, k: int, key: jax.Array,
                eligible: PyTree | str | None = None) -> PyTree:
    """Exactly k entries chosen uniformly at random among eligible leaves (seeded)."""
    leaves = jax.tree_util.tree_leaves(params)
    keys = jax.random.split(key, len(leaves))
    noise = [np.asarray(jax.random.uniform(kk, np.shape(x))) for kk, x in
             zip(keys, leaves, strict=True)]
    return top_k_mask(_unflatten_like(params, noise), k, eligible)


def regex_mask(params: PyTree, pattern: str) -> PyTree:
    """Whole leaves whose path matches `pattern` (e.g. BitFit: r"bias$")."""
    selected = match_tree(params, pattern)
    return jax.tree_util.tree_map(lambda p, s: np.full(np.shape(p), s, dtype=bool), params,
                                  selected)


def union(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x, y: np.logical_or(x, y), a, b)


def density(mask: PyTree) -> dict[str, Any]:
    """Per-leaf and total selected counts and densities."""
    per_leaf = {}
    for path, m in zip(leaf_paths(mask), _flat(mask), strict=True):
        per_leaf[path] = {"selected": int(np.count_nonzero(m)), "size": int(m.size),
                          "density": float(np.count_nonzero(m) / max(m.size, 1))}
    selected = sum(v["selected"] for v in per_leaf.values())
    size = sum(v["size"] for v in per_leaf.values())
    return {"selected": selected, "size": size, "density": selected / max(size, 1),
            "per_leaf": per_leaf}


# -- files -----------------------------------------------------------------------------


def save_mask(path: str, mask: PyTree, metadata: dict[str, Any] | None = None) -> None:
    """Writes `mask` as int32 flat indices per leaf + JSON metadata, atomically."""
    paths, leaves = leaf_paths(mask), _flat(mask)
    tensors = {p: np.flatnonzero(m).astype(np.int32) for p, m in zip(paths, leaves, strict=True)
               if m.any()}
    meta = {
        "shapes": {p: list(m.shape) for p, m in zip(paths, leaves, strict=True)},
        "selected": count_selected(mask),
        "fishjax_version": fishjax.__version__,
        **(metadata or {}),
    }
    from safetensors.numpy import save

    data = save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    atomic_write_bytes(path, data)


def load_mask(path: str, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Reads a mask file and checks it against `like` (the params): (mask, metadata)."""
    tensors, meta = read_tagged_safetensors(path, _META_KEY, MaskError, "mask",
                                            required=("shapes", "selected"))

    paths, leaves = leaf_paths(like), _flat(like)
    want = {p: list(np.shape(x)) for p, x in zip(paths, leaves, strict=True)}
    if meta["shapes"] != want:
        missing = sorted(set(want) - set(meta["shapes"]))
        extra = sorted(set(meta["shapes"]) - set(want))
        differ = sorted(p for p in set(want) & set(meta["shapes"]) if want[p] != meta["shapes"][p])
        raise MaskError(
            f"mask {path!r} (model {meta.get('model', '?')}) does not fit these params: "
            f"missing leaves {missing[:5]}, unknown leaves {extra[:5]}, "
            f"shape mismatches {[(p, meta['shapes'][p], want[p]) for p in differ[:5]]}")
    out = []
    for p, x in zip(paths, leaves, strict=True):
        m = np.zeros(np.size(x), dtype=bool)
        if p in tensors:
            idx = tensors[p]
            if idx.dtype != np.int32 or idx.ndim != 1 or (idx.size and (
                    idx.min() < 0 or idx.max() >= m.size)):
                raise MaskError(f"mask {path!r}: indices of {p!r} are out of range or malformed")
            m[idx] = True
        out.append(m.reshape(np.shape(x)))
    mask = _unflatten_like(like, out)
    if count_selected(mask) != meta["selected"]:
        raise MaskError(f"mask {path!r}: {count_selected(mask)} entries read, header says "
                        f"{meta['selected']} (duplicate indices?)")
    return mask, meta
