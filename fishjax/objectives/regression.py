"""Regression: one output per example, squared error against a float target."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import ConfigError
from fishjax.data.metrics import metric_values
from fishjax.objectives.base import Batch, FisherTerm
from fishjax.objectives.classification import ENCODER_INPUTS


@dataclasses.dataclass(frozen=True)
class Regression:
    """Float targets in `batch["labels"]`; the model outputs [B, 1].

    The loss (f - y)^2 is the negative log-likelihood of a Gaussian with variance 1/2; its
    expected Fisher is 2 (df)^2, computed from two backward passes (targets y and y + 1) as
    (g(y) - g(y + 1))^2 / 2, exact for any loss quadratic in the target. No feature output
    (multi-source selection needs class log-odds).
    """

    metric_names: tuple[str, ...] = ("pearson", "spearman")
    main_metric: str = "pearson_spearman_mean"
    input_fields: tuple[str, ...] = ENCODER_INPUTS
    kind: str = dataclasses.field(default="regression", init=False)

    @property
    def head_size(self) -> int:
        return 1

    def per_example_loss(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        return jnp.square(outputs[..., 0] - batch["labels"].astype(jnp.float32))

    def predictions(self, outputs: jax.Array) -> jax.Array:
        return outputs[..., 0]

    def metrics(self, predictions: np.ndarray, targets: np.ndarray,
                weights: np.ndarray | None) -> dict[str, float]:
        return metric_values(self.metric_names, self.main_metric, predictions, targets, weights,
                             argmax=False)

    @property
    def expected_fisher_passes(self) -> int:
        return 2

    def expected_fisher_targets(self, batch: Batch) -> list[Batch]:
        labels = batch["labels"]
        return [{"labels": labels}, {"labels": labels + jnp.asarray(1.0, labels.dtype)}]

    def expected_fisher_terms(self, losses: Sequence[jax.Array],
                              weights: jax.Array) -> list[FisherTerm]:
        del losses, weights  # padding rows have zero gradient already
        return [FisherTerm((1.0, -1.0), 0.5)]

    @property
    def feature_output_name(self) -> None:
        return None

    def feature_output(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        raise ConfigError("a regression objective has no feature output (multi-source "
                          "selection needs a classification task: log-odds)")

    def target_summary(self, targets: np.ndarray) -> dict[str, Any]:
        x = np.asarray(targets).astype(np.float64)
        return {"n": int(x.size), "mean": float(x.mean()) if x.size else None,
                "std": float(x.std()) if x.size else None}

    def metadata(self) -> dict[str, Any]:
        return {"num_labels": 1, "id2label": None}
