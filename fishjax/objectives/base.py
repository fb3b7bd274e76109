"""The objective protocol: everything the library knows about a task's targets, in one object.

An objective owns what the rest of the code would otherwise hard-code about labels:
- which batch fields the model reads (`input_fields`, in the order `apply` takes them) and
  how wide its task head is (`head_size`);
- the per-example loss of the model's outputs and the batch (`per_example_loss`; padding
  rows are weighted out by the batch's `weights` in `make_loss_fn`);
- predictions and the evaluation metrics (`predictions`, `metrics`, `main_metric`);
- the expected Fisher: the targets each example is differentiated with
  (`expected_fisher_targets`) and how the per-target gradients combine
  (`expected_fisher_terms`);
- the scalar output per example that multi-source selection differentiates
  (`feature_output`);
- what IRD's trace says about a set of targets (`target_summary`);
- what an artefact file records so that the objective can be rebuilt from it (`metadata`,
  read back by `fishjax.objectives.from_metadata`);
- optionally, for per-token targets, `ignored_target`: the target value its metrics skip,
  with which batches of different lengths are padded before they are joined (`stack_rows`).

The trainer, the Fisher passes, IRD, SIFT, capture, X-PEFT and multi-source selection call
only these; nothing outside `fishjax/data/`, the model families and this package knows a
label format. Objectives are frozen dataclasses: hashable, so compiled passes are cached
per objective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.tree import PyTree

Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class FisherTerm:
    """One term of an example's expected Fisher: `factor * (sum_v coeffs[v] * g_v)^2`, where
    g_v is the gradient of the loss with the v-th target of `expected_fisher_targets`."""

    coeffs: tuple[float, ...]
    factor: Any  # a float, or an array over the rows ([B], or a scalar for one example)


class Objective(Protocol):
    """What the library needs to know about a task's targets (module docstring)."""

    kind: str  # "classification", "regression", ...
    input_fields: tuple[str, ...]  # batch fields the model's apply reads, in order
    main_metric: str  # the metric that picks the best checkpoint (higher is better)

    @property
    def head_size(self) -> int:
        """Outputs of the task head."""

    def per_example_loss(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        """Loss of each row, shape [B] (padding rows included; weighted out later)."""

    def predictions(self, outputs: jax.Array) -> jax.Array:
        """What `metrics` compares with the targets, per row."""

    def metrics(self, predictions: np.ndarray, targets: np.ndarray,
                weights: np.ndarray | None) -> dict[str, float]:
        """Evaluation metrics (host arrays; rows with weight 0 dropped), incl. main_metric."""

    @property
    def expected_fisher_passes(self) -> int:
        """Backward passes per example of the expected Fisher."""

    def expected_fisher_targets(self, batch: Batch) -> list[Batch]:
        """The batch-field overrides each example is differentiated with (one per pass)."""

    def expected_fisher_terms(self, losses: Sequence[jax.Array],
                              weights: jax.Array) -> list[FisherTerm]:
        """The terms combining the per-target gradients (`losses`: each target's loss)."""

    @property
    def feature_output_name(self) -> str | None:
        """The name of `feature_output` (None: the objective has none)."""

    def feature_output(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        """The scalar per example multi-source selection differentiates, shape [B]: a
        log-odds f, the example's loss being softplus(-f) (`fishjax.selection.multisource`)."""

    def target_summary(self, targets: np.ndarray) -> dict[str, Any]:
        """A JSON-ready summary of a set of targets (IRD's per-round trace)."""

    def metadata(self) -> dict[str, Any]:
        """What an artefact file records to rebuild this objective (`from_metadata`)."""


def stack_rows(arrays: Sequence[np.ndarray], fill: Any = None) -> np.ndarray:
    """Per-batch host arrays joined along rows. Per-token arrays of batches of different
    lengths (length buckets) are padded on the right with `fill` first: an objective with
    per-token targets names the target its metrics ignore (`ignored_target`)."""
    widths = {np.shape(a)[1:] for a in arrays}
    if len(widths) <= 1:
        return np.concatenate(arrays)
    if fill is None or any(np.ndim(a) != 2 for a in arrays):
        raise ValueError(f"cannot join per-batch arrays of shapes {sorted(widths)}")
    width = max(np.shape(a)[1] for a in arrays)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=fill)
                           for a in arrays])


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean of `values` over real rows (`weights` 1; None: every row is real)."""
    if weights is None:
        return jnp.mean(values)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def make_apply_fn(module, objective: Objective) -> Callable[..., jax.Array]:
    """`apply(params, batch, dropout_key=None) -> outputs`; dropout on iff a key is given.
    The module is called with the batch fields the objective names, in order."""
    fields = objective.input_fields

    def apply(params: PyTree, batch: Batch, dropout_key: jax.Array | None = None) -> jax.Array:
        rngs = None if dropout_key is None else {"dropout": dropout_key}
        return module.apply({"params": params}, *(batch[f] for f in fields),
                            deterministic=dropout_key is None, rngs=rngs)

    return apply


def make_loss_fn(module, objective: Objective) -> Callable[..., jax.Array]:
    """`loss_fn(params, batch, dropout_key=None) -> scalar`: the objective's per-example
    loss, averaged over the real rows (`weights`)."""
    apply = make_apply_fn(module, objective)

    def loss_fn(params: PyTree, batch: Batch, dropout_key: jax.Array | None = None):
        outputs = apply(params, batch, dropout_key)
        return weighted_mean(objective.per_example_loss(outputs, batch), batch.get("weights"))

    return loss_fn


def make_feature_fn(module, objective: Objective) -> Callable[[PyTree, Batch], jax.Array]:
    """`f(params, batch) -> [B]`: the objective's `feature_output` (dropout off), what
    multi-source selection differentiates."""
    apply = make_apply_fn(module, objective)

    def feature_fn(params: PyTree, batch: Batch) -> jax.Array:
        return objective.feature_output(apply(params, batch), batch)

    return feature_fn
