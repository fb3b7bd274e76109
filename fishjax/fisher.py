"""Per-example (diagonal) Fisher information of a task loss, accumulated in chunks.

Design note. FISH Mask (Sung, Nair & Raffel, "Training Neural Networks with Fixed Sparse
Masks", NeurIPS 2021; reference code varunnair18/FISH) scores every parameter entry by the
diagonal empirical Fisher: over N training examples, the sum of the squared gradient of each
example's own loss. The reference loops over single examples in PyTorch. Here:

- One example's contribution is `jax.grad` of `loss_fn` on a batch of one; examples are
  processed `chunk_size` at a time with `jax.vmap` inside a `lax.scan` over the batch, so
  only the running float32 sum of squares (one tree shaped like the eligible params) lives
  across examples: memory does not grow with N. Chunk 1 (a scan of single-example
  gradients) is fastest on CPU, where vmapped per-example gradient trees are memory-bound;
  larger chunks win on GPU/TPU. `chunk_size="auto"` picks by backend.
- Only eligible leaves (a bool tree or a regex over `/`-joined paths) are differentiated.
- `mode="empirical"` (the reference default): the squared gradient of the loss with the
  gold label. `mode="expected"`: the model's own predictive distribution replaces the
  gold label, sum_c p(c|x) (d log p(c|x))^2; this needs `loss_fn` to be the negative
  log-likelihood (softmax cross-entropy), so that p(c|x) = exp(-loss with label c), and
  costs `num_labels` backward passes per example. For regression (`num_labels == 1`) the
  squared-error loss (f - y)^2 is the negative log-likelihood of a Gaussian with variance
  1/2; its expected Fisher is 2 (df)^2, computed from two backward passes as
  (g(y) - g(y + 1))^2 / 2, which is exact for any loss quadratic in the label.
- Rows with weight 0 (the padding rows of a partial batch) have zero loss, hence zero
  gradient, and are not counted.

Method code gives a `loss_fn(params, batch)` (weighted-mean loss of a batch, dropout off)
and a params pytree; nothing here knows the model.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.tree import PyTree, match_tree

Batch = dict[str, Any]
LossFn = Callable[[PyTree, Batch], jax.Array]
MODES = ("empirical", "expected")


class FisherError(ValueError):
    """Bad arguments to the Fisher computation."""


def auto_chunk_size(batch_size: int, backend: str | None = None) -> int:
    """1 on CPU (scan of single-example gradients); up to 8 (dividing the batch) elsewhere."""
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return 1
    return max(c for c in (8, 4, 2, 1) if batch_size % c == 0)


def split_eligible(params: PyTree, eligible: PyTree) -> tuple[PyTree, PyTree]:
    """(eligible leaves, other leaves), each shaped like `params` with None elsewhere."""
    on = jax.tree_util.tree_map(lambda p, e: p if e else None, params, eligible)
    off = jax.tree_util.tree_map(lambda p, e: None if e else p, params, eligible)
    return on, off


def merge_split(on: PyTree, off: PyTree) -> PyTree:
    """Inverse of `split_eligible`."""
    return jax.tree_util.tree_map(lambda a, b: b if a is None else a, on, off,
                                  is_leaf=lambda x: x is None)


def resolve_eligible(params: PyTree, eligible: PyTree | str | None) -> PyTree:
    """A bool tree from a regex, a bool tree, or None (every leaf)."""
    if eligible is None:
        return jax.tree_util.tree_map(lambda _: True, params)
    if isinstance(eligible, str):
        return match_tree(params, eligible)
    return eligible


def example_fisher_fn(
    loss_fn: LossFn, *, mode: str = "empirical", num_labels: int = 2
) -> Callable[[PyTree, PyTree, Batch], PyTree]:
    """`f(on, off, example) -> tree`: one example's Fisher contribution for the `on` leaves.

    `example` has no batch dimension. See the module docstring for the two modes.
    """
    if mode not in MODES:
        raise FisherError(f"fisher mode must be one of {MODES}, got {mode!r}")

    def loss_one(on, off, example):
        batch = jax.tree_util.tree_map(lambda x: x[None], example)
        return loss_fn(merge_split(on, off), batch)

    grad = jax.value_and_grad(loss_one)
    square = lambda g: jax.tree_util.tree_map(jnp.square, g)

    def with_label(example, label):
        return {**example, "labels": jnp.asarray(label, example["labels"].dtype)}

    def empirical(on, off, example):
        return square(grad(on, off, example)[1])

    def expected_classification(on, off, example):
        total = None
        for c in range(num_labels):
            loss_c, g = grad(on, off, with_label(example, c))
            p = jax.lax.stop_gradient(jnp.exp(-loss_c)) * example["weights"]
            term = jax.tree_util.tree_map(lambda x, p=p: p * jnp.square(x), g)
            total = term if total is None else jax.tree_util.tree_map(jnp.add, total, term)
        return total

    def expected_regression(on, off, example):
        y = example["labels"]
        g0 = grad(on, off, example)[1]
        g1 = grad(on, off, with_label(example, y + 1.0))[1]
        return jax.tree_util.tree_map(lambda a, b: 0.5 * jnp.square(a - b), g0, g1)

    if mode == "empirical":
        return empirical
    return expected_regression if num_labels == 1 else expected_classification


def backward_passes_per_example(mode: str, num_labels: int) -> int:
    if mode == "empirical":
        return 1
    return 2 if num_labels == 1 else num_labels


def chunked_sum(example_fn: Callable[..., PyTree], chunk_size: int) -> Callable[..., PyTree]:
    """`f(acc, on, off, batch) -> acc + sum over the batch's examples of example_fn`.

    A `lax.scan` over chunks of `chunk_size` examples, `vmap` within each chunk; only the
    running sum is carried. The batch size must be a multiple of `chunk_size`.
    """
    per_chunk = jax.vmap(example_fn, in_axes=(None, None, 0))

    def run(acc, on, off, batch):
        b = batch["labels"].shape[0]
        if b % chunk_size:
            raise FisherError(f"batch size {b} is not a multiple of chunk_size {chunk_size}")
        chunks = jax.tree_util.tree_map(
            lambda x: x.reshape(b // chunk_size, chunk_size, *x.shape[1:]), batch)

        def body(carry, chunk):
            contrib = per_chunk(on, off, chunk)
            return jax.tree_util.tree_map(lambda a, c: a + jnp.sum(c, axis=0), carry,
                                          contrib), None

        return jax.lax.scan(body, acc, chunks)[0]

    return run


@functools.lru_cache(maxsize=64)
def fisher_accumulator(loss_fn: LossFn, mode: str, num_labels: int, chunk_size: int):
    """Jitted `acc, on, off, batch -> acc` (cached, so repeated passes compile once)."""
    example_fn = example_fisher_fn(loss_fn, mode=mode, num_labels=num_labels)
    return jax.jit(chunked_sum(example_fn, chunk_size), donate_argnums=0)


@dataclasses.dataclass
class FisherResult:
    scores: PyTree  # float32, shaped like params; 0 on ineligible leaves
    eligible: PyTree  # bool per leaf
    num_examples: int  # real (weight-1) examples scored
    backward_passes: int  # per-example backward passes spent
    seconds: float


def fisher_scores(
    loss_fn: LossFn,
    params: PyTree,
    batches: Iterable[Batch],
    *,
    eligible: PyTree | str | None = None,
    mode: str = "empirical",
    num_labels: int = 2,
    num_samples: int | None = None,
    chunk_size: int | str = "auto",
    progress: bool = True,
) -> FisherResult:
    """Sum over examples of the per-example Fisher contribution, for the eligible leaves.

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar`, the weighted-mean negative
        log-likelihood of a batch with `labels` and `weights` (dropout off).
      params: the parameter pytree.
      batches: host batches (e.g. `MethodContext.train_batches(...)`); consumed until
        `num_samples` real examples were scored (rows past it get weight 0).
      eligible: which leaves to score (bool tree, regex over paths, or None for all).
      mode: "empirical" (gold labels) or "expected" (model's predictive distribution).
      num_labels: classes of the task (1: regression); used by the expected mode.
      num_samples: examples to score (None: every batch).
      chunk_size: examples per vmap chunk, or "auto" (1 on CPU, up to 8 elsewhere).
      progress: show a progress bar (tqdm) with examples/s.

    Example:
      >>> res = fisher_scores(loss_fn, params, ctx.train_batches(32, shuffle_seed=0),
      ...                     eligible=r"^(embeddings|encoder)/", num_samples=1024)
      >>> mask = top_k_mask(res.scores, k, eligible=res.eligible)
    """
    if num_samples is not None and num_samples <= 0:
        raise FisherError(f"num_samples must be positive, got {num_samples}")
    eligible = resolve_eligible(params, eligible)
    if not any(jax.tree_util.tree_leaves(eligible)):
        raise FisherError("no parameter is eligible for Fisher scoring")
    on, off = split_eligible(params, eligible)
    acc = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), on)


    from tqdm.auto import tqdm

    bar = tqdm(total=num_samples, unit="ex", desc=f"fisher ({mode})", disable=not progress)
    seen, t0 = 0, time.perf_counter()
    for batch in batches:
        if num_samples is not None and seen >= num_samples:
            break
        weights = np.asarray(batch["weights"], np.float32).copy()
        if num_samples is not None:  # keep only the first (num_samples - seen) real rows
            real = np.cumsum(weights)
            weights[real > num_samples - seen] = 0.0
        n_real = int(weights.sum())
        if n_real == 0:
            continue
        b = len(weights)
        c = auto_chunk_size(b) if chunk_size == "auto" else int(chunk_size)
        step = fisher_accumulator(loss_fn, mode, num_labels, c)
        acc = step(acc, on, off, {**batch, "weights": weights})
        seen += n_real
        bar.update(n_real)
    bar.close()
    jax.block_until_ready(acc)
    if seen == 0:
        raise FisherError("no examples were scored (empty batches?)")
    if num_samples is not None and seen < num_samples:
        import logging

        logging.getLogger("fishjax").warning(
            "fisher: only %d examples available, fewer than num_samples=%d", seen, num_samples)

    scores = jax.tree_util.tree_map(
        lambda a, p: jnp.zeros(p.shape, jnp.float32) if a is None else a, acc, params,
        is_leaf=lambda x: x is None)
    return FisherResult(
        scores=scores,
        eligible=eligible,
        num_examples=seen,
        backward_passes=seen * backward_passes_per_example(mode, num_labels),
        seconds=time.perf_counter() - t0,
    )
