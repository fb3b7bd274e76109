"""A short training run on a params tree, for selection rules that try before they pick.

IRD's `final="best_dev"` trains each candidate mask briefly and keeps the one with the best
dev score, and FISH-Tuning's warm-up trains a PEFT tree a few steps before scoring it; the
same loop serves any "score a choice by a few steps of training" rule. It works on a params
pytree, a `loss_fn(params, batch)` and an optax transformation (e.g.
`fishjax.params.masked_updates(adamw, mask)`); it knows nothing of the model.
Dropout stays off (the loss is the method's deterministic one): the runs compare choices,
they are not the run that is reported.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
import optax

from fishjax.core.progress import logs_above, progress_bar
from fishjax.core.tree import PyTree

Batch = dict[str, Any]
log = logging.getLogger("fishjax")


def short_run(
    loss_fn: Callable[[PyTree, Batch], jax.Array],
    params: PyTree,
    batches: Iterable[Batch],
    tx: optax.GradientTransformation,
    steps: int,
    *,
    frozen: PyTree = None,
    desc: str = "short run",
) -> tuple[PyTree, list[float]]:
    """`steps` optimizer steps of `tx` on `loss_fn`, one batch each; returns (params, losses).

    With `frozen` (e.g. the base under a PEFT tree), the loss is `loss_fn(params, batch,
    frozen)`: passed as an argument, not captured, so the compiled step does not embed it
    as constants. `batches` must hold at least `steps` batches (an error names the
    shortfall). The input `params` are not modified. Compiles once per batch shape. Shows a
    progress bar where someone watches and logs one line with the time and losses.

    Example:
      >>> tx = masked_updates(optax.adamw(1e-3), mask)
      >>> tuned, losses = short_run(loss_fn, params, train_batches, tx, steps=50)
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    @jax.jit
    def step(p, opt_state, batch, fz):
        extra = () if fz is None else (fz,)
        loss, grads = jax.value_and_grad(loss_fn)(p, batch, *extra)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    opt_state = tx.init(params)
    losses: list[float] = []
    bar, t0 = progress_bar(steps, desc, "step"), time.perf_counter()
    with logs_above(bar):
        for batch in itertools.islice(batches, steps):
            params, opt_state, loss = step(params, opt_state,
                                           {k: np.asarray(v) for k, v in batch.items()}, frozen)
            losses.append(float(loss))
            bar.update(1)
    bar.close()
    if len(losses) < steps:
        raise ValueError(f"short_run: asked for {steps} steps, the batches ran out after "
                         f"{len(losses)}")
    log.info("%s: %d steps in %.1fs (loss %.4f -> %.4f)", desc, steps,
             time.perf_counter() - t0, losses[0], losses[-1])
    return params, losses
