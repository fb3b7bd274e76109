"""The base optimizer every method starts from: AdamW, warmup + linear decay, clipping.

Methods wrap it (`MethodSetup.wrap_optimizer`), e.g. to mask its updates
(`fishjax.params.masked.masked_updates`). Weight decay
skips leaves whose path matches `weight_decay_exclude` (biases and LayerNorm scales by
default, as BERT fine-tuning does).
"""

from __future__ import annotations

import math

import jax
import ml_collections
import optax

from fishjax.core.tree import PyTree, match_tree


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
    train_cfg: ml_collections.ConfigDict, total_steps: int, *, no_decay: str | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Gradient clipping, then AdamW with decoupled weight decay, on the schedule.

    Leaves whose path matches `train_cfg.weight_decay_exclude`, or the extra regex
    `no_decay` (a method's choice, `MethodSetup.no_decay`), get no weight decay.
    """
    schedule = learning_rate_schedule(train_cfg, total_steps)
    exclude = train_cfg.weight_decay_exclude
    if no_decay:
        exclude = f"(?:{exclude})|(?:{no_decay})" if exclude else no_decay

    # A callable (not a fixed tree): a method may route only part of the params through
    # this optimizer (e.g. masked_updates' leaf routing), and the mask must match what
    # arrives.
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
