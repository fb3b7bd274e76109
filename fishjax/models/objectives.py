"""Task losses and predictions over a model's `apply` function.

`make_loss_fn` turns a Flax module into the `loss_fn(params, batch)` that method code
works with: it knows batches and labels, not model classes. Batches carry `weights`
(1 for real rows, 0 for rows that pad a partial batch), so a loss is a weighted mean; a
batch without them has only real rows.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from fishjax.core.tree import PyTree

Batch = dict[str, jax.Array]


def per_example_loss(logits: jax.Array, labels: jax.Array, is_regression: bool) -> jax.Array:
    """Cross-entropy (classification) or squared error (regression), shape [B]."""
    if is_regression:
        return jnp.square(logits[..., 0] - labels.astype(jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean of `values` over real rows (`weights` 1; None: every row is real)."""
    if weights is None:
        return jnp.mean(values)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def predictions(logits: jax.Array, is_regression: bool) -> jax.Array:
    """Class ids (classification) or scores (regression)."""
    return logits[..., 0] if is_regression else jnp.argmax(logits, axis=-1)


def make_apply_fn(module) -> Callable[..., jax.Array]:
    """`apply(params, batch, dropout_key=None) -> logits`; dropout on iff a key is given."""

    def apply(params: PyTree, batch: Batch, dropout_key: jax.Array | None = None) -> jax.Array:
        rngs = None if dropout_key is None else {"dropout": dropout_key}
        return module.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            deterministic=dropout_key is None,
            rngs=rngs,
        )

    return apply


def make_loss_fn(module, is_regression: bool) -> Callable[..., jax.Array]:
    """`loss_fn(params, batch, dropout_key=None) -> scalar` weighted-mean task loss."""
    apply = make_apply_fn(module)

    def loss_fn(params: PyTree, batch: Batch, dropout_key: jax.Array | None = None):
        logits = apply(params, batch, dropout_key)
        return weighted_mean(per_example_loss(logits, batch["labels"], is_regression),
                             batch.get("weights"))

    return loss_fn


def log_odds(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Log-odds of the correct label, [B]: z_y - logsumexp over the other classes.

    Stable (no probabilities are formed, no clipping); sigmoid of it is the softmax
    probability of the correct label, so the cross-entropy is softplus(-log_odds).
    """
    if logits.shape[-1] < 2:
        raise ValueError("log-odds need a classification head (2 or more labels)")
    correct = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
    z_y = jnp.sum(jnp.where(correct, logits, 0.0), axis=-1)
    others = jax.nn.logsumexp(jnp.where(correct, -jnp.inf, logits), axis=-1)
    return z_y - others


def make_log_odds_fn(module) -> Callable[..., jax.Array]:
    """`log_odds_fn(params, batch) -> [B]`: each example's log-odds of its label
    (dropout off), the output multi-source selection differentiates."""
    apply = make_apply_fn(module)

    def log_odds_fn(params: PyTree, batch: Batch) -> jax.Array:
        return log_odds(apply(params, batch), batch["labels"])

    return log_odds_fn
