"""The base optimizer every method starts from: AdamW, warmup + linear decay, clipping.

Methods wrap it (`MethodSetup.wrap_optimizer`), e.g. to mask its updates. Weight decay
skips leaves whose path matches `weight_decay_exclude` (biases and LayerNorm scales by
default, as BERT fine-tuning does).
"""

from __future__ import annotations

import math

import jax
import ml_collections
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
    train_cfg: ml_collections.ConfigDict, total_steps: int, trainable: PyTree
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Gradient clipping, then AdamW with decoupled weight decay, on the schedule."""
    schedule = learning_rate_schedule(train_cfg, total_steps)
    excluded = match_tree(trainable, train_cfg.weight_decay_exclude)
    decay_mask = jax.tree_util.tree_map(lambda skip: not skip, excluded)
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
