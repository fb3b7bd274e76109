"""Sparse increments: train k selected weight entries as `W = W0 + scatter(I, delta)`.

One representation serves every mask-based method (SIFT, FISH Mask, IRD, random masks):
a `SparseDelta` holds, for each parameter leaf with at least one selected entry, the flat
row-major int32 indices `I` of its selected entries (sorted, unique) and a value vector
`delta` of the same length. Both are nested dicts mirroring the parameter tree but holding
only the selected leaves, e.g.

    delta.indices["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]  # int32 [k_W]
    delta.values[...same path...]                                                 # float32 [k_W]

`apply_delta(base, indices, values)` is pure and traceable: inside a loss it builds the
dense weights with `W0.reshape(-1).at[I].add(delta)`, and `jax.grad` of that scatter-add
w.r.t. `values` is a gather of the dense cotangent at `I`, so the gradient (and everything
an optimizer keeps) is a length-k vector per leaf. `merge` does the same on the host
(numpy, for export: one float32 add per entry, bitwise equal to `apply_delta`),
`from_mask`/`to_mask` convert from and to bool masks shaped like the params.

Training through the trainer (`fishjax.methods.common.sparse_setup`): the trainable tree is
`{"delta": values, "head": dense head leaves}`, the frozen tree is
`{"base": params without the head, "indices": indices}`; only O(k) + head entries get
gradients and optimizer state. Decoupled weight decay (`weight_decay`):
- "off" (default; the SIFT reference's effective behaviour): the delta leaves are excluded
  from AdamW's decay (`MethodSetup.no_decay = r"^delta/"`); the head decays as usual.
- "weights": the optimizer sees the effective weights `W0[I] + delta` as its `params`
  (`MethodSetup.optimizer_params`, a gather of O(k) entries in the step), so decay acts on
  the weights exactly as in dense masked training (`fishjax.params.masked.masked_updates`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import SparseError
from fishjax.core.tree import (
    PyTree,
    as_dict,
    flatten_paths,
    key_name,
    merge_trees,
    selected_paths,
    split_tree,
    unflatten_paths,
)

Path = tuple[str, ...]
WEIGHT_DECAY_MODES = ("off", "weights")
DELTA_KEY, HEAD_KEY, BASE_KEY, INDICES_KEY = "delta", "head", "base", "indices"
NO_DECAY_REGEX = rf"^{DELTA_KEY}/"


class SparseDelta(NamedTuple):
    """Per selected leaf: flat int32 indices (sorted, unique) and a value vector.

    `indices` and `values` are nested dicts with the same structure: the parameter tree
    restricted to the leaves with a selected entry. A pytree (NamedTuple of dicts).
    """

    indices: PyTree
    values: PyTree

    def paths(self) -> list[str]:
        """`/`-joined paths of the selected leaves, in sorted (tree-flatten) order."""
        return ["/".join(p) for p in sorted(flatten_paths(self.indices))]

    def num_selected(self) -> int:
        """Number of selected entries over all leaves."""
        return count(self)


# -- the representation -----------------------------------------------------------------


def from_indices(indices: PyTree, like: PyTree | None = None, dtype: Any = None) -> SparseDelta:
    """A zero increment on the given indices (dtype of the matching `like` leaf, or float32)."""
    like_flat = flatten_paths(like) if like is not None else {}
    values = {}
    for p, idx in flatten_paths(indices).items():
        dt = dtype or (like_flat[p].dtype if p in like_flat else np.float32)
        values[p] = np.zeros(np.shape(idx), dtype=dt)
    return SparseDelta(indices=as_dict(indices), values=unflatten_paths(values))


def from_mask(mask: PyTree, params: PyTree | None = None, *,
              exclude: PyTree | str | None = None) -> SparseDelta:
    """A zero increment on the True entries of a bool `mask` shaped like the params.

    Leaves with no True entry, and leaves selected by `exclude` (a regex over paths or a
    bool tree; e.g. the densely trained head), are left out. Indices are flat row-major
    int32, sorted and unique; values are zeros in the params' dtype (float32 by default).

    Example:
      >>> delta = from_mask(fish_mask, params, exclude=r"^classifier/")
      >>> dense = apply_delta(params, delta.indices, delta.values)  # == params at init
    """
    skip = selected_paths(mask, exclude)
    indices = {}
    for p, m in flatten_paths(mask).items():
        m = np.asarray(m)
        if skip[p] or not m.any():
            continue
        if m.size > np.iinfo(np.int32).max:
            raise SparseError(f"leaf {'/'.join(p)!r} has {m.size} entries: too many for int32")
        indices[p] = np.flatnonzero(m).astype(np.int32)
    return from_indices(unflatten_paths(indices), params)


def to_mask(delta: SparseDelta | PyTree, like: PyTree) -> PyTree:
    """Bool tree shaped like `like` (the params), True at the increment's entries."""
    indices = flatten_paths(delta.indices if isinstance(delta, SparseDelta) else delta)

    def leaf(path, x):
        m = np.zeros(np.size(x), dtype=bool)
        key = tuple(key_name(k) for k in path)
        if key in indices:
            m[np.asarray(indices[key])] = True
        return m.reshape(np.shape(x))

    return jax.tree_util.tree_map_with_path(leaf, like)


def count(delta: SparseDelta | PyTree) -> int:
    """Selected entries of an increment (or of an indices tree)."""
    tree = delta.indices if isinstance(delta, SparseDelta) else delta
    return int(sum(np.size(x) for x in flatten_paths(tree).values()))


def validate(delta: SparseDelta, like: PyTree) -> None:
    """Raises SparseError unless every leaf of `delta` exists in `like` with in-range,
    sorted, unique int32 indices and values of the same length."""
    like_flat = flatten_paths(like)
    idx_flat, val_flat = flatten_paths(delta.indices), flatten_paths(delta.values)
    if set(idx_flat) != set(val_flat):
        raise SparseError("indices and values have different leaves: "
                          f"{sorted('/'.join(p) for p in set(idx_flat) ^ set(val_flat))[:5]}")
    for p, idx in idx_flat.items():
        name = "/".join(p)
        if p not in like_flat:
            raise SparseError(f"increment leaf {name!r} is not a parameter")
        idx, val = np.asarray(idx), np.asarray(val_flat[p])
        n = int(np.size(like_flat[p]))
        if idx.dtype != np.int32 or idx.ndim != 1:
            raise SparseError(f"{name}: indices must be a 1-D int32 array, got "
                              f"{idx.dtype}{list(idx.shape)}")
        if val.shape != idx.shape:
            raise SparseError(f"{name}: {val.shape[0] if val.ndim else 'scalar'} values for "
                              f"{idx.shape[0]} indices")
        if idx.size and (idx[0] < 0 or idx[-1] >= n or np.any(np.diff(idx) <= 0)):
            raise SparseError(f"{name}: indices must be sorted, unique and in [0, {n})")


def apply_delta(base: PyTree, indices: PyTree, values: PyTree) -> dict:
    """Dense params: `base` with `values` added at `indices` (pure; traceable; jnp).

    Leaves of `base` without an increment are passed through unchanged (same objects).
    Under `jax.grad` w.r.t. `values` the scatter-add becomes a gather: gradients are
    length-k vectors.
    """
    flat = flatten_paths(base)
    vals = flatten_paths(values)
    for p, idx in flatten_paths(indices).items():
        w = jnp.asarray(flat[p])  # jnp.reshape keeps a numpy leaf numpy (no `.at`)
        upd = jnp.reshape(w, (-1,)).at[idx].add(
            jnp.asarray(vals[p], dtype=w.dtype), indices_are_sorted=True, unique_indices=True)
        flat[p] = jnp.reshape(upd, jnp.shape(w))
    return unflatten_paths(flat)


def merge(base: PyTree, delta: SparseDelta) -> dict:
    """Dense params on the host (numpy): `base` with the increment added.

    Bitwise equal to `apply_delta` (one float32 addition per entry). For export.
    """
    flat = {p: np.asarray(jax.device_get(x)) for p, x in flatten_paths(base).items()}
    vals = flatten_paths(delta.values)
    for p, idx in flatten_paths(delta.indices).items():
        w = flat[p].reshape(-1).copy()
        w[np.asarray(idx)] += np.asarray(jax.device_get(vals[p]), dtype=w.dtype)
        flat[p] = w.reshape(flat[p].shape)
    return unflatten_paths(flat)


def gather(base: PyTree, indices: PyTree) -> dict:
    """`W0.reshape(-1)[I]` per increment leaf (traceable)."""
    flat = flatten_paths(base)
    return unflatten_paths({p: jnp.reshape(flat[p], (-1,))[idx]
                            for p, idx in flatten_paths(indices).items()})


# -- training through the increment -------------------------------------------------------


def split_for_training(params: PyTree, mask: PyTree, head: PyTree | str | None
                       ) -> tuple[dict, dict]:
    """(trainable, frozen) for training the True entries of `mask` as an increment.

    trainable = {"delta": zero values per selected leaf, "head": dense head leaves};
    frozen = {"base": params without the head, "indices": int32 indices per selected
    leaf}. Head leaves (a regex over paths or a bool tree) are trained densely whatever
    the mask says of them.
    """
    head_tree, base = split_tree(params, head)
    delta = from_mask(mask, params, exclude=head)
    return ({DELTA_KEY: delta.values, HEAD_KEY: head_tree},
            {BASE_KEY: base, INDICES_KEY: delta.indices})


def combine(trainable: PyTree, frozen: PyTree) -> dict:
    """Dense model params from the (trainable, frozen) of `split_for_training`."""
    dense = apply_delta(frozen[BASE_KEY], frozen[INDICES_KEY], trainable[DELTA_KEY])
    return merge_trees(dense, trainable[HEAD_KEY])


def effective_weights(trainable: PyTree, frozen: PyTree) -> dict:
    """What decoupled weight decay acts on: `W0[I] + delta` per leaf, the head as it is."""
    w0 = flatten_paths(gather(frozen[BASE_KEY], frozen[INDICES_KEY]))
    delta = flatten_paths(trainable[DELTA_KEY])
    return {DELTA_KEY: unflatten_paths({p: w0[p] + delta[p] for p in delta}),
            HEAD_KEY: trainable[HEAD_KEY]}


def delta_of(trainable: PyTree, frozen: PyTree) -> SparseDelta:
    """The `SparseDelta` held by a (trainable, frozen) pair of `split_for_training`."""
    return SparseDelta(indices=frozen[INDICES_KEY], values=trainable[DELTA_KEY])
