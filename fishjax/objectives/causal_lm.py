"""The causal language-modelling objective: next-token loss on the target tokens only.

Batches carry `input_ids` and `attention_mask` [B, T] and `labels` [B, T]: at position t
the id of the token that should follow (input_ids[t + 1]) where that token is part of the
target (the answer), `IGNORE` (-100, as Hugging Face) at prompt tokens, padding and the last
position. The model outputs next-token logits [B, T, vocab].

- Per-example loss: the mean cross-entropy over the example's target tokens (0 for an
  example without any), so a long answer does not weigh more than a short one.
- Metrics: token accuracy (the main metric: higher is better) and the target tokens counted.
- Feature output (multi-source selection): the mean log-likelihood of the target tokens.
- Expected Fisher: not built yet (a target sampled from the model's own next-token
  distribution needs the outputs, which the protocol's `expected_fisher_targets` does not
  take); the empirical Fisher works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fishjax.core.errors import FishjaxError
from fishjax.objectives.base import Batch, FisherTerm

IGNORE = -100
DECODER_INPUTS = ("input_ids", "attention_mask")


def target_token_losses(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy per position [B, T], 1.0 at target positions else 0.0 [B, T])."""
    mask = (labels != IGNORE).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(labels == IGNORE, 0, labels))
    return ce * mask, mask


@dataclasses.dataclass(frozen=True)
class CausalLanguageModeling:
    """Next-token prediction over a vocabulary of `vocab_size` (module docstring)."""

    vocab_size: int
    main_metric: str = "token_accuracy"
    input_fields: tuple[str, ...] = DECODER_INPUTS
    kind: str = dataclasses.field(default="causal_lm", init=False)

    @property
    def head_size(self) -> int:
        return self.vocab_size

    def per_example_loss(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        ce, mask = target_token_losses(outputs, batch["labels"])
        return jnp.sum(ce, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)

    def predictions(self, outputs: jax.Array) -> jax.Array:
        return jnp.argmax(outputs, axis=-1)

    def metrics(self, predictions: np.ndarray, targets: np.ndarray,
                weights: np.ndarray | None) -> dict[str, float]:
        predictions, targets = np.asarray(predictions), np.asarray(targets)
        if weights is not None:
            keep = np.asarray(weights) > 0
            predictions, targets = predictions[keep], targets[keep]
        real = targets != IGNORE
        n = int(real.sum())
        accuracy = float((predictions[real] == targets[real]).mean()) if n else 0.0
        return {"token_accuracy": accuracy, "target_tokens": float(n)}

    @property
    def expected_fisher_passes(self) -> int:
        raise FishjaxError("the expected Fisher of a causal language model is not built yet: "
                           "use the empirical Fisher (config.method.fisher.mode='empirical')")

    def expected_fisher_targets(self, batch: Batch) -> list[Batch]:
        return self.expected_fisher_passes  # raises

    def expected_fisher_terms(self, losses: Sequence[jax.Array],
                              weights: jax.Array) -> list[FisherTerm]:
        return self.expected_fisher_passes  # raises

    @property
    def feature_output_name(self) -> str:
        return "target_log_likelihood"

    def feature_output(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        return -self.per_example_loss(outputs, batch)

    def target_summary(self, targets: np.ndarray) -> dict[str, Any]:
        targets = np.asarray(targets)
        real = (targets != IGNORE).sum(axis=-1)
        return {"examples": int(targets.shape[0]), "target_tokens": int(real.sum())}

    def metadata(self) -> dict[str, Any]:
        return {"objective": self.kind, "vocab_size": self.vocab_size}
