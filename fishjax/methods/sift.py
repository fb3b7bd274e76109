"""`sift`: Sparse Increment Fine-Tuning, trained as a sparse increment W = W0 + scatter(I, delta).

Design note. SIFT (Song, Li, Zhang, Zhao & Du, "Sparse is Enough in Fine-tuning Pre-trained
Large Language Models", ICML 2024; reference code song-wx/SIFT) observes that the gradient
of a pretrained model is concentrated in few components, and trains a fixed sparse set of
weight entries chosen once, before training:

- Selection: a dense gradient of the task loss on the first training batch; in each
  eligible tensor W the k_W = floor(rate * n_W) + 1 entries of largest |gradient| (a
  per-tensor budget). On GLUE the eligible tensors are the attention query/key/value/output
  weights and biases; embeddings, LayerNorm and the FFN stay frozen, and the head (BERT:
  pooler + classifier) is trained densely. Their GLUE rate was 0.008 on RoBERTa-large.
- Storage: per tensor, int32 indices and a value vector (the increment), so only the
  values and the head get gradients and optimizer state.

Here the increment is a `fishjax.sparse.SparseDelta` added inside the loss
(`fishjax.sparse.apply_delta`: a scatter-add whose gradient is a gather), so `jax.grad`
returns length-k vectors and AdamW keeps state for k + head entries only. Options
(`config.method.sift`): `rate`, `eligible_regex`, `head_regex`, `budget` ("per_tensor", as
the reference, or "global": one ranking over all eligible entries with the same total k),
`grad_source` ("first_batch", as the reference; "first_n_batches": the gradient
accumulated over the first `num_batches` batches; "fisher": the diagonal Fisher of
`fishjax.fisher.fisher_scores` with the `method.fisher` settings, as FISH Mask).

Deliberate deviations from the reference, which updates through PyTorch backward hooks:
- No one-step lag, and the last update is applied: the step computes the gradient of the
  values and AdamW updates them in the same step; the next forward pass uses them.
- The selection batch is not wasted: the selection gradient is computed with dropout off
  on the first training batch(es) (the same batches, in the same order, as the trainer's
  epoch 0), and training then starts normally at step 0, so those batches are trained on
  like any other (the reference throws the selection step's update away).
- Weight decay is a choice (`config.method.sparse.weight_decay`): "off" (default) is the
  reference's effective behaviour (its AdamW never decays the increment); "weights" decays
  the effective weights W0[I] + delta, exactly as dense masked AdamW would.
- Ties are broken deterministically: within a tensor the entry first in row-major order
  wins (stable sort of |gradient|). This matters for the key-projection bias, whose
  gradient is zero up to rounding (softmax ignores a per-query shift): its selected
  entries are a deterministic function of the gradient that XLA computes, i.e. the same
  for the same program on the same backend, and the lowest indices when it is exactly 0.

The selected entries are saved as `<workdir>/mask.safetensors` (reused on resume, or via
`config.method.mask_file`), and at the end of a finished run the increment of the best
evaluation (+ the dense head) as `<workdir>/delta.safetensors` (`fishjax.delta_files`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import jax
import numpy as np

from fishjax import masks as masks_lib
from fishjax import sparse as sparse_lib
from fishjax.fisher import fisher_scores, merge_split, split_eligible
from fishjax.methods.base import MethodContext, MethodSetup, register_method
from fishjax.methods.masked import _chunk, load_or_select_mask
from fishjax.tree import PyTree, leaf_paths, match_tree

log = logging.getLogger("fishjax")

BUDGETS = ("per_tensor", "global")
GRAD_SOURCES = ("first_batch", "first_n_batches", "fisher")


def tensor_budget(n: int, rate: float) -> int:
    """SIFT's per-tensor budget: floor(rate * n) + 1 entries (at most n)."""
    return min(n, math.floor(rate * n) + 1)


def select_sparse(scores: PyTree, eligible: PyTree, rate: float,
                  budget: str = "per_tensor") -> PyTree:
    """Bool mask: the top entries of `scores` (e.g. |gradient|) among eligible leaves.

    per_tensor: the top `tensor_budget(n_W, rate)` entries of each eligible leaf;
    global: the same total, in one ranking over all eligible entries. Ties go to the
    entry first in row-major (and tree-flatten) order.

    Example:
      >>> mask = select_sparse(jax.tree.map(jnp.abs, grads), eligible, rate=0.01)
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    if budget == "global":
        k = sum(tensor_budget(np.size(s), rate) for s, e in
                zip(jax.tree_util.tree_leaves(scores), jax.tree_util.tree_leaves(eligible),
                    strict=True) if e)
        return masks_lib.top_k_mask(scores, k, eligible)
    return jax.tree_util.tree_map(
        lambda s, e: masks_lib.top_k_mask(np.asarray(s), tensor_budget(np.size(s), rate))
        if e else np.zeros(np.shape(s), dtype=bool), scores, eligible)


def selection_gradient(loss_fn, params: PyTree, batches, eligible: PyTree, num_batches: int
                       ) -> tuple[PyTree, int]:
    """Sum of the (dropout-off) batch-loss gradients of the first `num_batches` batches.

    Only eligible leaves are differentiated; the others are None in the result.
    Returns (gradient tree, batches used).
    """
    on, off = split_eligible(params, eligible)
    grad_fn = jax.jit(jax.grad(lambda on, off, b: loss_fn(merge_split(on, off), b)))
    acc, used = None, 0
    for batch in batches:
        if used >= num_batches:
            break
        g = grad_fn(on, off, batch)
        acc = g if acc is None else jax.tree_util.tree_map(lambda a, b: a + b, acc, g)
        used += 1
    if acc is None:
        raise ValueError("no training batch to compute the SIFT selection gradient on")
    return acc, used


@register_method("sift")
class Sift:
    name = "sift"

    def scores(self, ctx: MethodContext, eligible: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """|selection gradient| (or Fisher scores) for eligible leaves, 0 elsewhere."""
        s = ctx.config.method.sift
        t0 = time.perf_counter()
        if s.grad_source == "fisher":
            f = ctx.config.method.fisher
            res = fisher_scores(
                ctx.loss_fn, ctx.params,
                ctx.train_batches(f.batch_size, shuffle_seed=ctx.config.seed),
                eligible=eligible, mode=f.mode, num_labels=ctx.num_labels,
                num_samples=f.num_samples, chunk_size=_chunk(f.chunk_size))
            return jax.tree_util.tree_map(np.asarray, res.scores), {
                "grad_source": "fisher", "fisher_examples": res.num_examples,
                "selection_seconds": res.seconds}
        if s.grad_source not in GRAD_SOURCES:
            raise ValueError(f"config.method.sift.grad_source must be one of {GRAD_SOURCES}")
        n = 1 if s.grad_source == "first_batch" else int(s.num_batches)
        # The trainer's epoch-0 batches, in its order: training then starts on them at step 0.
        batches = ctx.train_batches(ctx.config.train.batch_size, shuffle_seed=ctx.config.seed)
        grads, used = selection_gradient(ctx.loss_fn, ctx.params, batches, eligible, n)
        scores = jax.tree_util.tree_map(
            lambda g, p: np.zeros(np.shape(p), np.float32) if g is None else np.abs(
                np.asarray(g)), grads, ctx.params, is_leaf=lambda x: x is None)
        return scores, {"grad_source": s.grad_source, "selection_batches": used,
                        "selection_seconds": time.perf_counter() - t0}

    def setup(self, ctx: MethodContext) -> MethodSetup:
        m, s = ctx.config.method, ctx.config.method.sift
        head = match_tree(ctx.params, s.head_regex)
        allowed = match_tree(ctx.params, s.eligible_regex)
        eligible = jax.tree_util.tree_map(lambda h, a: a and not h, head, allowed)
        if not any(jax.tree_util.tree_leaves(eligible)):
            raise ValueError(f"config.method.sift.eligible_regex={s.eligible_regex!r} matches "
                             "no parameter outside the head")

        def select() -> tuple[PyTree, dict]:
            scores, sel_info = self.scores(ctx, eligible)
            return select_sparse(scores, eligible, s.rate, s.budget), sel_info

        mask, sel_info = load_or_select_mask(
            ctx, self.name, {"rate": s.rate, "budget": s.budget,
                             "eligible_regex": s.eligible_regex}, select,
            keep_info=("grad_source", "selection_batches"))
        info: dict[str, Any] = {"sift_rate": s.rate, "sift_budget": s.budget, **sel_info}
        per_leaf = {p: int(np.count_nonzero(x)) for p, x in
                    zip(leaf_paths(mask), jax.tree_util.tree_leaves(mask), strict=True)
                    if np.any(x)}
        setup = sparse_lib.sparse_method_setup(
            ctx.params, mask, head, weight_decay=m.sparse.weight_decay, info=info,
            sharding_rules=ctx.config.mesh.param_rules,
            delta_metadata=delta_metadata(ctx, {
                "rate": s.rate, "selection": {
                    "rule": f"top-|{s.grad_source}| {s.budget}", "grad_source":
                    info.get("grad_source", s.grad_source), "budget": s.budget,
                    "eligible_regex": s.eligible_regex, "head_regex": s.head_regex,
                    "num_batches": info.get("selection_batches")}}))
        log.info("sift: %d entries in %d tensors (rate %g, %s) + head %d entries",
                 setup.info["sparse_entries"], len(per_leaf), s.rate, s.budget,
                 setup.info["head_entries"])
        return setup


def delta_metadata(ctx: MethodContext, extra: dict[str, Any]) -> dict[str, Any]:
    """What a delta file records about the run (base model, labels, method, seed, ...)."""
    from fishjax.data import get_task

    labels = get_task(ctx.config.task).label_names
    return {"base_model": ctx.config.model.name, "num_labels": ctx.num_labels,
            "method": ctx.config.method.name, "task": ctx.config.task,
            "seed": ctx.config.seed,
            "id2label": None if labels is None else dict(enumerate(labels)), **extra}
