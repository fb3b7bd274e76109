"""Sequence classification: softmax cross-entropy over `num_labels` classes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fishjax.data.metrics import metric_values
from fishjax.objectives.base import Batch, FisherTerm

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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


@dataclasses.dataclass(frozen=True)
class SequenceClassification:
    """Integer class labels in `batch["labels"]`; the model outputs logits [B, num_labels].

    Expected Fisher: sum_c p(c|x) (d log p(c|x))^2 over every class, exactly (one backward
    pass per class; p(c|x) = exp(-loss with label c), stop-gradient). Feature output: the
    log-odds of the correct label.
    """

    num_labels: int = 2
    label_names: tuple[str, ...] | None = None
    metric_names: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    input_fields: tuple[str, ...] = ENCODER_INPUTS
    kind: str = dataclasses.field(default="classification", init=False)

    def __post_init__(self) -> None:
        if self.num_labels < 2:
            raise ValueError(f"classification needs 2 or more labels, got {self.num_labels}")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(f"{len(self.label_names)} label names for {self.num_labels} labels")

    @property
    def head_size(self) -> int:
        return self.num_labels

    def per_example_loss(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(outputs, batch["labels"])

    def predictions(self, outputs: jax.Array) -> jax.Array:
        return jnp.argmax(outputs, axis=-1)

    def metrics(self, predictions: np.ndarray, targets: np.ndarray,
                weights: np.ndarray | None) -> dict[str, float]:
        return metric_values(self.metric_names, self.main_metric, predictions, targets, weights,
                             argmax=True)

    @property
    def expected_fisher_passes(self) -> int:
        return self.num_labels

    def expected_fisher_targets(self, batch: Batch) -> list[Batch]:
        labels = batch["labels"]
        return [{"labels": jnp.full_like(labels, c)} for c in range(self.num_labels)]

    def expected_fisher_terms(self, losses: Sequence[jax.Array],
                              weights: jax.Array) -> list[FisherTerm]:
        n = len(losses)
        return [FisherTerm(tuple(float(i == c) for i in range(n)),
                           jax.lax.stop_gradient(jnp.exp(-loss)) * weights)
                for c, loss in enumerate(losses)]

    @property
    def feature_output_name(self) -> str:
        return "log_odds"

    def feature_output(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        return log_odds(outputs, batch["labels"])

    def target_summary(self, targets: np.ndarray) -> dict[str, Any]:
        counts = np.bincount(np.asarray(targets).astype(np.int64), minlength=self.num_labels)
        return {str(c): int(n) for c, n in enumerate(counts)}

    def metadata(self) -> dict[str, Any]:
        names = self.label_names
        return {"num_labels": self.num_labels,
                "id2label": None if names is None else dict(enumerate(names))}
