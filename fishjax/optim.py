"""The base optimizer every method starts from: AdamW, warmup + linear decay, clipping.

Methods wrap it (`MethodSetup.wrap_optimizer`), e.g. to mask its updates. Weight decay
skips leaves whose path matches `weight_decay_exclude` (biases and LayerNorm scales by
default, as BERT fine-tuning does).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fishjax.tree import PyTree, match_tree


def warmup_steps(train_cfg: ml_collections.ConfigDict, total_steps: int) -> int:
    """`train.warmup_steps` if set, else `ceil(warmup_ratio * total_steps)`."""
    if train_cfg.warmup_steps is not None:
        return min(int(train_cfg.warmup_steps), total_steps)
    return min(int(math.ceil(train_cfg.warmup_ratio * total_steps)), total_steps)


def learning_rate_schedule(
    train_cfg: ml_collections.ConfigDict, total_steps: int
) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then linear decay to 0 at `total_steps`."""
    warm = warmup_steps(train_cfg, total_steps)
    peak = train_cfg.learning_rate
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, max(warm, 1)),
            optax.linear_schedule(peak, 0.0, max(total_steps - warm, 1)),
        ],
        boundaries=[warm],
    )


def make_optimizer(
    train_cfg: ml_collections.ConfigDict, total_steps: int, trainable: PyTree,
    *, no_decay: str | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Gradient clipping, then AdamW with decoupled weight decay, on the schedule.

    Leaves whose path matches `train_cfg.weight_decay_exclude`, or the extra regex
    `no_decay` (a method's choice, `MethodSetup.no_decay`), get no weight decay.
    """
    del trainable  # the decay mask is computed from whatever tree the optimizer sees
    schedule = learning_rate_schedule(train_cfg, total_steps)
    exclude = train_cfg.weight_decay_exclude
    if no_decay:
        exclude = f"(?:{exclude})|(?:{no_decay})" if exclude else no_decay

    # A callable (not a fixed tree): a method may route only part of the params through
    # this optimizer (e.g. optax.multi_transform), and the mask must match what arrives.
    def decay_mask(params: PyTree) -> PyTree:
        return jax.tree_util.tree_map(lambda skip: not skip, match_tree(params, exclude))
    tx = optax.chain(
        optax.clip_by_global_norm(train_cfg.max_grad_norm),
        optax.adamw(
            schedule,
            b1=train_cfg.adam_b1,
            b2=train_cfg.adam_b2,
            eps=train_cfg.adam_eps,
            weight_decay=train_cfg.weight_decay,
            mask=decay_mask,
        ),
    )
    return tx, schedule


class MaskedUpdatesState(NamedTuple):
    """State of `masked_updates`: element masks of partly-selected leaves, inner state."""

    masks: PyTree  # bool array for leaves with some (not all) entries selected, else None
    inner: optax.OptState


def _leaf_kind(m: np.ndarray) -> str:
    return "all" if m.all() else ("none" if not m.any() else "some")


def masked_updates(
    inner: optax.GradientTransformation, mask: PyTree
) -> optax.GradientTransformation:
    """Trains only the True entries of an element-wise bool `mask` (a tree like the params).

    Gradients are masked before `inner` (so clipping norms and Adam moments never see
    frozen entries) and updates are masked after it (so weight decay or any other
    transform cannot move them): unselected entries stay bitwise equal to their start.
    Leaves with no selected entry are routed to `optax.set_to_zero` and hold no state in
    `inner`; leaves entirely selected skip the multiplication. The masks of partly
    selected leaves live in the state (not in the jitted function as constants).

    Example:
      >>> tx = masked_updates(optax.adamw(1e-3, weight_decay=0.01), mask)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(grads, state, params)
    """
    mask = jax.tree_util.tree_map(np.asarray, mask)
    kinds = jax.tree_util.tree_map(_leaf_kind, mask)
    labels = jax.tree_util.tree_map(lambda k: "frozen" if k == "none" else "train", kinds)
    routed = optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()}, labels)
    is_none = lambda x: x is None

    def apply(masks: PyTree, tree: PyTree) -> PyTree:
        return jax.tree_util.tree_map(
            lambda m, x: x if m is None else jnp.where(m, x, jnp.zeros_like(x)), masks, tree,
            is_leaf=is_none)

    def init_fn(params):
        masks = jax.tree_util.tree_map(
            lambda m, k: jnp.asarray(m) if k == "some" else None, mask, kinds)
        return MaskedUpdatesState(masks=masks, inner=routed.init(params))

    def update_fn(updates, state, params=None):
        updates = apply(state.masks, updates)
        updates, inner_state = routed.update(updates, state.inner, params)
        return apply(state.masks, updates), MaskedUpdatesState(state.masks, inner_state)

    return optax.GradientTransformation(init_fn, update_fn)
