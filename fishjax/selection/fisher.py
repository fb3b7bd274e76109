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
  gold label. What replaces it is the objective's (`fishjax.objectives`): the targets each
  example is differentiated with (`expected_fisher_targets`) and how the gradients combine
  (`expected_fisher_terms`). Classification: sum_c p(c|x) (d log p(c|x))^2 over every
  class, so `loss_fn` must be the negative log-likelihood (p(c|x) = exp(-loss with label
  c)); regression: (g(y) - g(y + 1))^2 / 2, the Gaussian NLL's 2 (df)^2.
- Rows with weight 0 (the padding rows of a partial batch) have zero loss, hence zero
  gradient, and are not counted.
- Two engines give each example's gradient: "per_example" (default) differentiates every
  example on its own; "capture" (`fishjax.selection.capture`) runs one batched backward
  and forms each example's gradient from the layers' inputs and output cotangents, for
  params of `nn.Dense`/`nn.LayerNorm`/`nn.RMSNorm`/`nn.Embed` calls only, checked against
  `jax.grad` on the first batch. Which is faster depends on the machine
  (`benchmarks/speed/fisher_outer_product.py`; figures in the README).

- One engine, custom reductions (`fishjax.selection.per_example`): `per_example_pass`
  feeds each example's contribution tree (the squared gradients) to a
  `reduce(carry, contrib, rows, aux)` applied chunk by chunk inside the jitted scan; it
  may update a carried state and emit per-example outputs. `fisher_pass` is the built-in
  reduction that IRD needs (`fishjax.selection.ird`): a per-parameter sum weighted by a
  per-row 0/1 weight (the batch key `sum_weights`, default `weights`) and/or a
  per-example scalar mass, the sum of the contribution over a bool/float mask tree,
  returned by example id (the host-only batch key `example_ids`).
  `fisher_scores` (FISH) is `fisher_pass` with the per-parameter sum only.

Method code gives a `loss_fn(params, batch)` (weighted-mean loss of a batch, dropout off)
and a params pytree; nothing here knows the model.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import FisherError
from fishjax.core.tree import PyTree, merge_trees, split_tree
from fishjax.objectives import Objective
from fishjax.selection import capture
from fishjax.selection.per_example import (
    Batch,
    PassOutput,
    Reducer,
    example_pass,
    resolve_eligible,
    zeros_like_tree,
)

LossFn = Callable[[PyTree, Batch], jax.Array]
MODES = ("empirical", "expected")
ENGINES = ("per_example", "capture")


def fisher_targets(mode: str, objective: Objective | None, batch: Batch) -> list[Batch]:
    """The batch-field overrides each example is differentiated with: none (the gold
    targets; empirical) or the objective's `expected_fisher_targets`."""
    if mode == "empirical":
        return [{}]
    return objective.expected_fisher_targets(batch)


def _combination(coeffs: Sequence[float], grads: Sequence[PyTree]) -> PyTree:
    """sum_v coeffs[v] * grads[v], leaf by leaf (a coefficient 1 or -1 adds or subtracts)."""
    out = None
    for c, g in zip(coeffs, grads, strict=True):
        if c == 0:
            continue
        if out is None:
            out = g if c == 1 else jax.tree_util.tree_map(lambda x, c=c: c * x, g)
        elif c == 1:
            out = jax.tree_util.tree_map(jnp.add, out, g)
        elif c == -1:
            out = jax.tree_util.tree_map(jnp.subtract, out, g)
        else:
            out = jax.tree_util.tree_map(lambda a, x, c=c: a + c * x, out, g)
    return out


def combine_variants(mode: str, objective: Objective | None, weight: jax.Array,
                     results: Sequence[tuple[jax.Array, PyTree]]) -> PyTree:
    """One example's Fisher contribution from its (loss, gradient) per `fisher_targets`
    entry; `weight` is its row weight (0 for padding)."""
    if mode == "empirical":
        return jax.tree_util.tree_map(jnp.square, results[0][1])
    grads = [g for _, g in results]
    total = None
    for term in objective.expected_fisher_terms([loss for loss, _ in results], weight):
        term_tree = jax.tree_util.tree_map(lambda x, f=term.factor: f * jnp.square(x),
                                           _combination(term.coeffs, grads))
        total = term_tree if total is None else jax.tree_util.tree_map(jnp.add, total,
                                                                          term_tree)
    return total


def _check_mode(mode: str, objective: Objective | None = None) -> None:
    if mode not in MODES:
        raise FisherError(f"fisher mode must be one of {MODES}, got {mode!r}")
    if mode == "expected" and objective is None:
        raise FisherError("the expected Fisher needs the task's objective (objective=...; "
                          "e.g. fishjax.objectives.SequenceClassification())")


def example_fisher_fn(
    loss_fn: LossFn, *, mode: str = "empirical", objective: Objective | None = None
) -> Callable[[PyTree, PyTree, Batch], PyTree]:
    """`f(on, off, example) -> tree`: one example's Fisher contribution for the `on` leaves.

    `on`/`off`: the params split into the differentiated leaves and the others
    (`fishjax.core.tree.split_tree`); `example` has no batch dimension. See the module
    docstring for the two modes.
    """
    _check_mode(mode, objective)

    def loss_one(on, off, example):
        batch = jax.tree_util.tree_map(lambda x: x[None], example)
        return loss_fn(merge_trees(on, off), batch)

    grad = jax.value_and_grad(loss_one)

    def contribution(on, off, example):
        results = [grad(on, off, {**example, **targets})
                   for targets in fisher_targets(mode, objective, example)]
        return combine_variants(mode, objective, example["weights"], results)

    return contribution


def recorded_variants(loss_fn: LossFn, mode: str, objective: Objective | None, on: PyTree,
                      off: PyTree, batch: Batch) -> list[dict[str, Any]]:
    """`capture.record_layers` of the batch once per `fisher_targets` entry."""
    params = merge_trees(on, off)
    return [capture.record_layers(loss_fn, params, {**batch, **targets})
            for targets in fisher_targets(mode, objective, batch)]


def captured_fisher_fns(
    loss_fn: LossFn, *, mode: str = "empirical", objective: Objective | None = None
) -> tuple[Callable[..., Any], Callable[..., PyTree]]:
    """`(prepare, f)` for the capture engine (`fishjax.selection.capture`): `prepare(on,
    off, batch)` runs one batched backward per label variant and returns per-row layer
    records; `f(on, off, row)` turns one row of them into the example's Fisher
    contribution, equal to `example_fisher_fn`'s up to rounding."""
    _check_mode(mode, objective)

    def prepare(on, off, batch):
        return {"variants": recorded_variants(loss_fn, mode, objective, on, off, batch),
                "weights": batch["weights"]}

    def contribution(on, off, row):
        results = [(v["loss"], capture.example_gradients(on, v["calls"]))
                   for v in row["variants"]]
        return combine_variants(mode, objective, row["weights"], results)

    return prepare, contribution


def backward_passes_per_example(mode: str, objective: Objective | None) -> int:
    if mode == "empirical":
        return 1
    return objective.expected_fisher_passes


# -- the built-in reduction and the Fisher passes ---------------------------------------


def sum_and_mass(carry: PyTree | None, contrib: PyTree, rows: dict[str, jax.Array],
                 aux: PyTree | None) -> tuple[PyTree | None, jax.Array | None]:
    """The built-in reduction (FISH, IRD).

    carry (if not None): += sum over the chunk of `sum_weights[i] * contrib_i`, per entry.
    aux (if not None, a bool or float tree over the `on` leaves): each example's scalar
    mass, the sum of its contribution over the entries where the mask is True (bool) or
    weighted by it (float); 0 for padding rows (weight 0).
    """
    if carry is not None:
        w = rows["sum_weights"]
        carry = jax.tree_util.tree_map(
            lambda a, c: a + jnp.sum(c * w.reshape((-1,) + (1,) * (c.ndim - 1)), axis=0),
            carry, contrib)
    if aux is None:
        return carry, None

    def leaf_mass(c, m):
        flat, m = c.reshape(c.shape[0], -1), m.reshape(-1)
        masked = jnp.where(m, flat, 0.0) if m.dtype == jnp.bool_ else flat * m
        return jnp.sum(masked, axis=1)

    masses = jax.tree_util.tree_leaves(jax.tree_util.tree_map(leaf_mass, contrib, aux))
    total = functools.reduce(jnp.add, masses)
    return carry, jnp.where(rows["weights"] > 0, total, 0.0)


@functools.lru_cache(maxsize=64)
def fisher_example_fn(loss_fn: LossFn, mode: str, objective: Objective | None
                      ) -> Callable[..., PyTree]:
    """`example_fisher_fn`, one function object per (loss_fn, mode, objective): the key
    of the engine's cache of compiled passes (FISH and every IRD round compile once)."""
    return example_fisher_fn(loss_fn, mode=mode, objective=objective)


@functools.lru_cache(maxsize=64)
def captured_fisher(loss_fn: LossFn, mode: str, objective: Objective | None
                    ) -> tuple[Callable[..., Any], Callable[..., PyTree]]:
    """`captured_fisher_fns`, cached like `fisher_example_fn`."""
    return captured_fisher_fns(loss_fn, mode=mode, objective=objective)


def scaled_cotangents(mode: str, objective: Objective | None,
                      variants: Sequence[dict[str, Any]], weights: jax.Array,
                      sum_weights: jax.Array) -> list[dict[str, jax.Array]]:
    """The capture engine's Fisher sum as squares of cotangents: terms t with
    sum_i sum_w_i * contribution_i = sum_t sum_i (example i's gradient from terms[t])^2.
    Gradients are linear in the cotangent and every variant shares the forward (the
    inputs), so each term's combination and factor fold into the cotangents (see
    `combine_variants`)."""

    def scaled(calls, s):
        return {k: c["g"] * s.reshape((-1,) + (1,) * (c["g"].ndim - 1)).astype(c["g"].dtype)
                for k, c in calls.items()}

    if mode == "empirical":
        return [scaled(variants[0]["calls"], jnp.sqrt(sum_weights))]
    cotangents = [{k: c["g"] for k, c in v["calls"].items()} for v in variants]
    terms = objective.expected_fisher_terms([v["loss"] for v in variants], weights)
    return [scaled({k: {"g": g} for k, g in _combination(t.coeffs, cotangents).items()},
                   jnp.sqrt(sum_weights * t.factor)) for t in terms]


@functools.lru_cache(maxsize=64)
def captured_sum_step(loss_fn: LossFn, mode: str, objective: Objective | None):
    """`per_example.BatchStep` of the capture engine for the plain per-parameter sum
    (`sum_and_mass` with no masses: FISH's pass): no per-example contribution tree."""

    def for_chunk(chunk_size: int):
        def step(carry, on, off, batch, rows, aux):
            variants = recorded_variants(loss_fn, mode, objective, on, off, batch)
            terms = scaled_cotangents(mode, objective, variants, rows["weights"],
                                      rows["sum_weights"])
            add = capture.summed_squares(on, variants[0]["calls"], terms, chunk_size)
            return jax.tree_util.tree_map(jnp.add, carry, add), None

        return step

    return for_chunk


def _capture_check(loss_fn: LossFn) -> Callable[[PyTree, PyTree, Batch], None]:
    return lambda on, off, batch: capture.check_against_grad(loss_fn, on, off, batch,
                                                             merge_trees)


def per_example_pass(
    loss_fn: LossFn,
    params: PyTree,
    batches: Iterable[Batch],
    *,
    init: Callable[[PyTree], Any] = zeros_like_tree,
    reduce: Reducer | None = None,
    aux: Any = None,
    eligible: PyTree | str | None = None,
    mode: str = "empirical",
    objective: Objective | None = None,
    num_samples: int | None = None,
    chunk_size: int | str = "auto",
    progress: bool = True,
    desc: str | None = None,
    engine: str = "per_example",
) -> PassOutput:
    """One pass of per-example Fisher contributions through a reduction (default
    `sum_and_mass`): `fishjax.selection.per_example.example_pass` with Fisher's
    per-example function; see there for `init`, `reduce`, `aux` and the batch keys
    (`example_ids`, `sum_weights`: the per-row weight of the per-parameter sum).
    `engine`: "per_example" (each example differentiated on its own) or "capture" (one
    batched backward, per-example outer products; `fishjax.selection.capture`, checked
    against `jax.grad` on the first batch)."""
    _check_mode(mode, objective)
    if engine not in ENGINES:
        raise FisherError(f"fisher engine must be one of {ENGINES}, got {engine!r}")
    batch_step = None
    if engine == "capture":
        prepare, example_fn = captured_fisher(loss_fn, mode, objective)
        check = _capture_check(loss_fn)
        if reduce in (None, sum_and_mass) and aux is None and init is zeros_like_tree:
            # Only the per-parameter sum is wanted: formed for the whole batch at once.
            batch_step = captured_sum_step(loss_fn, mode, objective)
    else:
        prepare, example_fn, check = None, fisher_example_fn(loss_fn, mode, objective), None
    return example_pass(
        example_fn, params, batches, init=init,
        reduce=sum_and_mass if reduce is None else reduce, aux=aux, eligible=eligible,
        num_samples=num_samples, chunk_size=chunk_size, progress=progress,
        desc=desc or f"fisher ({mode})",
        passes_per_example=backward_passes_per_example(mode, objective),
        prepare=prepare, check_first=check, batch_step=batch_step)


@dataclasses.dataclass
class FisherPass:
    scores: PyTree | None  # per-parameter sums (float32, shaped like params, 0 off-eligible)
    eligible: PyTree  # bool per leaf
    example_ids: np.ndarray  # int64, ascending: every real example processed
    example_mass: np.ndarray | None  # float32 per example (aligned with example_ids)
    num_examples: int  # real (weight > 0) examples scored
    backward_passes: int  # per-example backward passes spent
    seconds: float


def _mass_aux(params: PyTree, eligible: PyTree, mass_mask: PyTree) -> PyTree:
    """The mask over the eligible leaves (bool or float32 arrays), checked against params."""
    def leaf(p, e, m):
        m = np.asarray(m)
        if m.shape != np.shape(p):
            raise FisherError(f"mass_mask leaf of shape {m.shape} for a parameter of shape "
                              f"{np.shape(p)}")
        if not e and m.any():
            raise FisherError("mass_mask selects entries of a leaf that is not eligible")
        return m if m.dtype == np.bool_ else m.astype(np.float32)

    full = jax.tree_util.tree_map(leaf, params, eligible, mass_mask)
    return split_tree(full, eligible)[0]


def fisher_pass(
    loss_fn: LossFn,
    params: PyTree,
    batches: Iterable[Batch],
    *,
    eligible: PyTree | str | None = None,
    mode: str = "empirical",
    objective: Objective | None = None,
    param_sums: bool = True,
    mass_mask: PyTree | None = None,
    num_samples: int | None = None,
    chunk_size: int | str = "auto",
    progress: bool = True,
    desc: str | None = None,
    engine: str = "per_example",
) -> FisherPass:
    """One pass computing per-parameter Fisher sums and/or per-example masses.

    With `param_sums`, `scores[j]` = sum over examples i of `sum_weights_i * f_ij`, where
    f_ij is example i's Fisher contribution to entry j (`example_fisher_fn`) and
    `sum_weights` is the batch's per-row weight (default `weights`; use 0/1). With
    `mass_mask` (a bool or float tree shaped like params, nonzero only on eligible
    leaves), `example_mass[i]` = sum over j of mask_j * f_ij, for every real example, by
    `example_id` (batch key, host-side; default: position in the pass). The N x P matrix
    f_ij is never formed. Other arguments as for `fisher_scores`.

    Example:
      >>> res = fisher_pass(loss_fn, params, batches, eligible=elig, mass_mask=range_mask)
      >>> res.example_ids, res.example_mass, res.scores
    """
    if not param_sums and mass_mask is None:
        raise FisherError("fisher_pass: nothing to compute (param_sums=False, no mass_mask)")
    resolved = resolve_eligible(params, eligible)
    # On the device once, not copied from the host with every batch.
    aux = None if mass_mask is None else jax.device_put(_mass_aux(params, resolved, mass_mask))
    out = per_example_pass(
        loss_fn, params, batches, init=zeros_like_tree if param_sums else (lambda on: None),
        reduce=sum_and_mass, aux=aux, eligible=resolved, mode=mode, objective=objective,
        num_samples=num_samples, chunk_size=chunk_size, progress=progress, desc=desc,
        engine=engine)
    order = np.argsort(out.example_ids, kind="stable")
    ids = out.example_ids[order]
    if len(np.unique(ids)) != len(ids):
        raise FisherError("fisher_pass: duplicate example_ids in the batches")
    scores = None
    if param_sums:  # zeros on the leaves that were not scored
        off = split_tree(params, resolved)[1]
        scores = merge_trees(out.carry, zeros_like_tree(off))
    return FisherPass(
        scores=scores,
        eligible=resolved,
        example_ids=ids,
        example_mass=None if out.outputs is None else out.outputs[order].astype(np.float32),
        num_examples=out.num_examples,
        backward_passes=out.backward_passes,
        seconds=out.seconds,
    )


def fisher_scores(
    loss_fn: LossFn,
    params: PyTree,
    batches: Iterable[Batch],
    *,
    eligible: PyTree | str | None = None,
    mode: str = "empirical",
    objective: Objective | None = None,
    num_samples: int | None = None,
    chunk_size: int | str = "auto",
    progress: bool = True,
    engine: str = "per_example",
) -> FisherPass:
    """Sum over examples of the per-example Fisher contribution, for the eligible leaves.

    `fisher_pass` with the per-parameter sum only (`scores`: float32, shaped like params,
    0 on ineligible leaves; no per-example masses).

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar`, the weighted-mean negative
        log-likelihood of a batch with `labels` and `weights` (dropout off).
      params: the parameter pytree.
      batches: host batches (e.g. `MethodContext.train_batches(...)`); consumed until
        `num_samples` real examples were scored (rows past it get weight 0).
      eligible: which leaves to score (bool tree, regex over paths, or None for all).
      mode: "empirical" (gold labels) or "expected" (model's predictive distribution).
      objective: the task's objective (`fishjax.objectives`); needed by the expected mode.
      num_samples: examples to score (None: every batch).
      chunk_size: examples per vmap chunk, or "auto" (1 on CPU, up to 8 elsewhere).
      progress: show a progress bar (tqdm) with examples/s.
      engine: "per_example" (default) or "capture" (one batched backward and per-example
        outer products; params of nn.Dense/LayerNorm/RMSNorm/Embed calls only; see
        `fishjax.selection.capture` and `per_example_pass`).

    Example:
      >>> res = fisher_scores(loss_fn, params, ctx.train_batches(32, seed=0),
      ...                     eligible=r"^(embeddings|encoder)/", num_samples=1024)
      >>> mask = top_k_mask(res.scores, k, eligible=res.eligible)
    """
    return fisher_pass(loss_fn, params, batches, eligible=eligible, mode=mode,
                       objective=objective, num_samples=num_samples, chunk_size=chunk_size,
                       progress=progress, engine=engine)
