"""Exact-k selection over score trees: the one place where fishjax ranks entries.

A mask is a tree of bool arrays shaped like the scores (and the params). Every selection
here takes exactly the number of entries asked for, never a score threshold:
- `top_k_mask`: the k highest scores over all eligible leaves together (one global
  ranking, no per-layer quota, as FISH does);
- `top_k_in_range`: the same, restricted to a previous mask (IRD's shrinking ranges);
- `top_k_per_tensor`: a budget per eligible leaf (SIFT);
- `select_entries`: budgets per named group of leaves, by highest, lowest or random order
  (FISH-Tuning and its baselines);
- `random_mask`: k entries uniformly at random (seeded).

Ties are broken deterministically: among equal scores the entry that comes first in
tree-flatten order (leaves by sorted path, entries in row-major order) wins (a stable
sort), so the same scores always give the same mask; with a PRNG `tie_key`, ties are
broken uniformly at random instead (a seeded permutation before the stable sort).
"""

from __future__ import annotations

import jax
import numpy as np

from fishjax.core.errors import MaskError
from fishjax.core.tree import PyTree, count_true, match_tree, numpy_leaves, unflatten_like, union

SELECTIONS = ("fisher", "random", "reversed")


def _eligible_leaves(scores: PyTree, eligible: PyTree | str | None) -> list[bool]:
    if eligible is None:
        return [True] * len(jax.tree_util.tree_leaves(scores))
    if isinstance(eligible, str):
        return jax.tree_util.tree_leaves(match_tree(scores, eligible))
    return [bool(e) for e in jax.tree_util.tree_leaves(eligible)]


def top_k_mask(scores: PyTree, k: int, eligible: PyTree | str | None = None,
               tie_key: jax.Array | None = None) -> PyTree:
    """Bool tree with exactly `k` True entries: the k highest scores among eligible leaves.

    Ties go to the entry first in tree-flatten order (stable sort), so the result is a
    pure function of the scores; with a PRNG `tie_key`, ties are broken uniformly at
    random instead (the same key gives the same mask). Raises MaskError if k exceeds the
    eligible entries or a score is NaN.

    Example:
      >>> mask = top_k_mask(fisher.scores, k=10_000, eligible=r"^encoder/")
    """
    leaves = numpy_leaves(scores)
    elig = _eligible_leaves(scores, eligible)
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
    return unflatten_like(scores, out)


def random_mask(params: PyTree, k: int, key: jax.Array,
                eligible: PyTree | str | None = None) -> PyTree:
    """Exactly k entries chosen uniformly at random among eligible leaves (seeded)."""
    leaves = jax.tree_util.tree_leaves(params)
    keys = jax.random.split(key, len(leaves))
    noise = [np.asarray(jax.random.uniform(kk, np.shape(x))) for kk, x in
             zip(keys, leaves, strict=True)]
    return top_k_mask(unflatten_like(params, noise), k, eligible)


def top_k_in_range(scores: PyTree, range_mask: PyTree, size: int,
                   eligible: PyTree | str | None = None) -> PyTree:
    """The `size` entries of `range_mask` with the largest scores (`top_k_mask` order).

    Entries outside the range score -inf, so they are never chosen while the range holds
    `size` entries (scores must not be -inf themselves, e.g. Fisher sums >= 0).
    """
    if size > count_true(range_mask):
        raise MaskError(f"cannot keep {size} entries of a range of {count_true(range_mask)}")
    restricted = jax.tree_util.tree_map(
        lambda s, r: np.where(r, np.asarray(s, np.float32), -np.inf), scores, range_mask)
    out = top_k_mask(restricted, size, eligible)
    if not all(np.all(r | ~m) for r, m in zip(jax.tree_util.tree_leaves(range_mask),
                                              jax.tree_util.tree_leaves(out), strict=True)):
        raise MaskError("internal: the selection left its range")
    return out


def top_k_per_tensor(scores: PyTree, eligible: PyTree, budget_of) -> PyTree:
    """Bool mask with the top `budget_of(n)` entries of each eligible leaf of n entries
    (ties: the first in row-major order); ineligible leaves select nothing."""
    return jax.tree_util.tree_map(
        lambda s, e: top_k_mask(np.asarray(s), budget_of(np.size(s)))
        if e else np.zeros(np.shape(s), dtype=bool), scores, eligible)


def select_entries(scores: PyTree, budgets: dict[str, int], groups: PyTree | None,
                   selection: str, key: jax.Array, tie_break: str = "random") -> PyTree:
    """Bool tree with budgets[g] entries in each group g (`groups`: a tree of group names
    shaped like `scores`; None: one group `"all"`): the highest scores (`"fisher"`), the
    lowest (`"reversed"`) or uniformly random ones (`"random"`). Exact counts, no threshold.
    `tie_break`: "random" (seeded by `key`) or "position" (first in tree order)."""
    if selection not in SELECTIONS:
        raise MaskError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if groups is None:
        groups = jax.tree_util.tree_map(lambda _: "all", scores)
    out = jax.tree_util.tree_map(lambda s: np.zeros(np.shape(s), bool), scores)
    for (group, k), kk in zip(sorted(budgets.items()), jax.random.split(key, len(budgets)),
                              strict=True):
        eligible = jax.tree_util.tree_map(lambda g, group=group: g == group, groups)
        if selection == "random":
            chosen = random_mask(scores, k, kk, eligible)
        else:
            signed = scores if selection == "fisher" else jax.tree_util.tree_map(
                np.negative, scores)
            chosen = top_k_mask(signed, k, eligible,
                                tie_key=kk if tie_break == "random" else None)
        out = union(out, chosen)
    return out
