"""The causal language-modelling objective: next-token loss on the target tokens only.

Batches carry `input_ids` and `attention_mask` [B, T] and `labels` [B, T]: at position t
the id of the token that should follow (input_ids[t + 1]) where that token is part of the
target (the answer), `IGNORE` (-100, as Hugging Face) at prompt tokens, padding and the last
position. The model outputs next-token logits [B, T, vocab].

- Per-example loss: the mean cross-entropy over the example's target tokens (0 for an
  example without any), so a long answer does not weigh more than a short one; with
  `token_reduction="sum"` their sum, minus the log-likelihood of the whole answer (the
  Fisher passes' option `method.fisher.token_reduction`: the token-sum Fisher of a
  sequence, sum_t E[g_t^2] in expectation, instead of that sum weighted by 1/T^2).
- Metrics: token accuracy (the main metric: higher is better) and the target tokens counted.
- Feature output (multi-source selection): f = logit(exp(l)), the log-odds of the geometric
  mean probability of the target tokens, where l is their mean log-likelihood. Exactly
  l = -softplus(-f): the selection's logistic model, whose loss is softplus(-f) as for a
  classifier's log-odds, sees minus the target log-likelihood as each example's loss, and
  linearising f rather than l keeps the loss bounded below (a one-token answer: f is the
  log-odds of that token). l is capped at -1e-6 (f <= 13.8).
- Expected Fisher: each target token replaced by one drawn from the model's own next-token
  distribution at that position (the prefix stays the gold one), the loss differentiated
  with the drawn tokens; `fisher_samples` draws per example, averaged (a Monte Carlo
  estimate: the exact sum over a 49k vocabulary at every position is out of reach). The
  protocol's `expected_fisher_targets` sees no outputs, so it only marks the pass
  (`SAMPLE_FIELD`, the draw's index) and `per_example_loss` draws from the logits it is
  given, under `stop_gradient`. Each row's key is `fisher_seed` folded with the draw's index
  and a hash of the row's real tokens: the same example gets the same draw in every pass,
  in both Fisher engines and at any batch position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fishjax.data.generation import IGNORE_INDEX as IGNORE
from fishjax.objectives.base import Batch, FisherTerm

DECODER_INPUTS = ("input_ids", "attention_mask")
SAMPLE_FIELD = "fisher_sample"  # batch field of an expected-Fisher pass: the draw's index
_HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash (mod 2**32)


def row_keys(seed: int, draw: jax.Array, input_ids: jax.Array,
             attention_mask: jax.Array) -> jax.Array:
    """One PRNG key per row [B]: `seed`, the draw's index and a hash of the row's real
    tokens (their ids and positions; padding ignored)."""
    t = input_ids.shape[-1]
    weights = jnp.arange(t, dtype=jnp.uint32) * jnp.uint32(_HASH_MULTIPLIER) + jnp.uint32(1)
    ids = (input_ids.astype(jnp.uint32) + jnp.uint32(1)) * attention_mask.astype(jnp.uint32)
    hashes = jnp.sum(ids * weights, axis=-1, dtype=jnp.uint32)
    # The draw index is a scalar, or [1] in a batch of one (the per-example Fisher engine).
    base = jax.random.fold_in(jax.random.PRNGKey(seed), jnp.ravel(draw)[0])
    return jax.vmap(lambda h: jax.random.fold_in(base, h))(hashes)


def sampled_labels(logits: jax.Array, batch: Batch, seed: int) -> jax.Array:
    """The batch's labels with each target token replaced by a draw from the model's
    next-token distribution there (no gradient through the draw)."""
    keys = row_keys(seed, batch[SAMPLE_FIELD], batch["input_ids"], batch["attention_mask"])
    draws = jax.vmap(lambda k, z: jax.random.categorical(k, z, axis=-1))(
        keys, jax.lax.stop_gradient(logits.astype(jnp.float32)))
    return jnp.where(batch["labels"] == IGNORE, IGNORE, draws.astype(batch["labels"].dtype))


def target_token_losses(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(cross-entropy per position [B, T], 1.0 at target positions else 0.0 [B, T])."""
    mask = (labels != IGNORE).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(labels == IGNORE, 0, labels))
    return ce * mask, mask


TOKEN_REDUCTIONS = ("mean", "sum")
LOGLIK_CEILING = -1e-6  # the largest mean log-likelihood answer_log_odds takes (f <= 13.8)


def answer_log_odds(loglik: jax.Array) -> jax.Array:
    """logit(exp(l)) of mean log-likelihoods l <= 0: -softplus(-f) gives l back."""
    loglik = jnp.minimum(loglik, LOGLIK_CEILING)
    return loglik - jnp.log(-jnp.expm1(loglik))


@dataclasses.dataclass(frozen=True)
class CausalLanguageModeling:
    """Next-token prediction over the model's vocabulary (module docstring); `vocab_size`
    (None: whatever the model's output layer has) is recorded in artefact files."""

    vocab_size: int | None = None
    fisher_samples: int = 1  # expected Fisher: draws per example
    fisher_seed: int = 0
    token_reduction: str = "mean"  # per-example loss over target tokens: "mean" or "sum"
    main_metric: str = "token_accuracy"
    input_fields: tuple[str, ...] = DECODER_INPUTS
    kind: str = dataclasses.field(default="causal_lm", init=False)

    ignored_target: int = dataclasses.field(default=IGNORE, init=False)

    def __post_init__(self) -> None:
        if self.fisher_samples < 1:
            raise ValueError(f"fisher_samples must be >= 1, got {self.fisher_samples}")
        if self.token_reduction not in TOKEN_REDUCTIONS:
            raise ValueError(f"token_reduction must be one of {TOKEN_REDUCTIONS}, got "
                             f"{self.token_reduction!r}")

    @property
    def head_size(self) -> int | None:
        return self.vocab_size

    def per_example_loss(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        labels = batch["labels"]
        if SAMPLE_FIELD in batch:  # an expected-Fisher pass (module docstring)
            labels = sampled_labels(outputs, batch, self.fisher_seed)
        ce, mask = target_token_losses(outputs, labels)
        total = jnp.sum(ce, axis=-1)
        if self.token_reduction == "sum":
            return total
        return total / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)

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
        return self.fisher_samples

    def expected_fisher_targets(self, batch: Batch) -> list[Batch]:
        return [{SAMPLE_FIELD: jnp.asarray(v, jnp.int32)} for v in range(self.fisher_samples)]

    def expected_fisher_terms(self, losses: Sequence[jax.Array],
                              weights: jax.Array) -> list[FisherTerm]:
        n = self.fisher_samples
        return [FisherTerm(coeffs=tuple(float(v == w) for w in range(n)), factor=1.0 / n)
                for v in range(n)]

    @property
    def feature_output_name(self) -> str:
        return "answer_log_odds"

    def feature_output(self, outputs: jax.Array, batch: Batch) -> jax.Array:
        return answer_log_odds(-self.per_example_loss(outputs, batch))

    def target_summary(self, targets: np.ndarray) -> dict[str, Any]:
        targets = np.asarray(targets)
        real = (targets != IGNORE).sum(axis=-1)
        return {"examples": int(targets.shape[0]), "target_tokens": int(real.sum())}

    def metadata(self) -> dict[str, Any]:
        return {"objective": self.kind,
                **({} if self.vocab_size is None else {"vocab_size": self.vocab_size})}
