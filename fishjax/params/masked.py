"""`masked_updates`: an optax transform that trains only the True entries of a mask.

Leaf-level routing is optax's own (`optax.transforms.selective_transform`): leaves with no
selected entry go to `set_to_zero` and hold no state in the inner optimizer. Only the
element-wise part is written here: for leaves with some (not all) entries selected, the
gradients are masked before the inner transform (so clipping norms and Adam moments never
see frozen entries) and the updates after it (so weight decay or any other transform
cannot move them). Unselected entries stay bitwise equal to their start.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fishjax.core.tree import PyTree


class MaskedUpdatesState(NamedTuple):
    """State of `masked_updates`: element masks of partly-selected leaves, inner state."""

    masks: PyTree  # bool array for leaves with some (not all) entries selected, else None
    inner: optax.OptState


def _leaf_kind(m: np.ndarray) -> str:
    return "all" if m.all() else ("none" if not m.any() else "some")


def _apply_masks(masks: PyTree, tree: PyTree) -> PyTree:
    """Zeros the unselected entries of the partly-selected leaves (mask None: as is)."""
    return jax.tree_util.tree_map(
        lambda m, x: x if m is None else jnp.where(m, x, jnp.zeros_like(x)), masks, tree,
        is_leaf=lambda x: x is None)


def masked_updates(
    inner: optax.GradientTransformation, mask: PyTree
) -> optax.GradientTransformation:
    """Trains only the True entries of an element-wise bool `mask` (a tree like the params).

    Leaves entirely selected skip the multiplication; leaves with no selected entry get
    zero updates and no inner state. The masks of partly selected leaves live in the state
    (not in the jitted function as constants), so one compiled step serves any mask of
    the same shapes.

    Example:
      >>> tx = masked_updates(optax.adamw(1e-3, weight_decay=0.01), mask)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(grads, state, params)
    """
    mask = jax.tree_util.tree_map(np.asarray, mask)
    kinds = jax.tree_util.tree_map(_leaf_kind, mask)
    routed = optax.transforms.selective_transform(
        inner, freeze_mask=jax.tree_util.tree_map(lambda k: k == "none", kinds))

    def init_fn(params):
        masks = jax.tree_util.tree_map(
            lambda m, k: jnp.asarray(m) if k == "some" else None, mask, kinds)
        return MaskedUpdatesState(masks=masks, inner=routed.init(params))

    def update_fn(updates, state, params=None):
        updates = _apply_masks(state.masks, updates)
        updates, inner_state = routed.update(updates, state.inner, params)
        return _apply_masks(state.masks, updates), MaskedUpdatesState(state.masks, inner_state)

    return optax.GradientTransformation(init_fn, update_fn)
