"""SIFT's selection: the top entries by |gradient| of the first training batch(es).

SIFT (Song, Li, Zhang, Zhao & Du, "Sparse is Enough in Fine-tuning Pre-trained Large
Language Models", ICML 2024; reference song-wx/SIFT) chooses, once before training, the
k_W = floor(rate x n_W) + 1 entries of largest |gradient| in each eligible tensor W (a
per-tensor budget, `fishjax.selection.budgets.tensor_budget`), or the same total in one
global ranking. Pure functions over a params tree, batches and a `loss_fn`; the `sift`
method (`fishjax.methods.sift`) drives them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from fishjax.core.errors import MaskError
from fishjax.core.tree import PyTree, merge_trees, split_tree
from fishjax.selection.budgets import tensor_budget
from fishjax.selection.fisher import LossFn
from fishjax.selection.per_example import row_weights, sum_over_processes
from fishjax.selection.topk import top_k_mask, top_k_per_tensor

BUDGETS = ("per_tensor", "global")


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
        raise MaskError(f"budget must be one of {BUDGETS}, got {budget!r}")
    if budget == "global":
        k = sum(tensor_budget(np.size(s), rate) for s, e in
                zip(jax.tree_util.tree_leaves(scores), jax.tree_util.tree_leaves(eligible),
                    strict=True) if e)
        return top_k_mask(scores, k, eligible)
    return top_k_per_tensor(scores, eligible, lambda n: tensor_budget(n, rate))


def selection_gradient(loss_fn: LossFn, params: PyTree, batches: Iterable[dict[str, Any]],
                       eligible: PyTree, num_batches: int) -> tuple[dict, int]:
    """Sum of the (dropout-off) batch-loss gradients of the first `num_batches` batches.

    Only eligible leaves are differentiated: the result holds only them (a nested dict).
    In a multi-process run each process differentiates every P-th row of each batch and
    the parts are summed. Returns (gradient tree, batches used).
    """
    on, off = split_tree(params, eligible)
    grad_fn = jax.jit(jax.grad(lambda on, off, b: loss_fn(merge_trees(on, off), b)))
    share, shares = jax.process_index(), jax.process_count()
    acc, used = None, 0
    for batch in batches:
        if used >= num_batches:
            break
        if shares == 1:
            g = grad_fn(on, off, batch)
        else:  # each process: every P-th row, weighted by its share of the batch's rows
            weights = row_weights(batch)
            mine = np.arange(share, len(weights), shares)
            part = {**{k: np.asarray(v)[mine] for k, v in batch.items()},
                    "weights": weights[mine]}
            share_of_rows = float(weights[mine].sum()) / max(float(weights.sum()), 1.0)
            g = jax.tree_util.tree_map(lambda x, s=share_of_rows: x * s, grad_fn(on, off, part))
        acc = g if acc is None else jax.tree_util.tree_map(lambda a, b: a + b, acc, g)
        used += 1
    if acc is None:
        raise MaskError("no training batch to compute the SIFT selection gradient on")
    # the sum of the processes' parts: the whole batches' gradient
    return sum_over_processes(acc), used


def gradient_scores(loss_fn: LossFn, params: PyTree, batches: Iterable[dict[str, Any]],
                    eligible: PyTree, num_batches: int) -> tuple[dict, int]:
    """|selection gradient| on the eligible leaves, 0 on the others (numpy, shaped like
    `params`); returns (scores, batches used)."""
    grads, used = selection_gradient(loss_fn, params, batches, eligible, num_batches)
    off = split_tree(params, eligible)[1]
    zeros = jax.tree_util.tree_map(lambda p: np.zeros(np.shape(p), np.float32), off)
    return merge_trees(jax.tree_util.tree_map(lambda g: np.abs(np.asarray(g)), grads),
                       zeros), used
