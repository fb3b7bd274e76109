"""fishjax.selection.short_run: a few optimizer steps on a params tree (IRD's best_dev
trials), and the epoch stream such runs take their batches from."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fishjax.data import cycle_epochs
from fishjax.params.masked import masked_updates
from fishjax.selection.short_run import short_run


def _loss(params, batch):
    return jnp.mean((batch["x"] @ params["w"] + params["b"] - batch["y"]) ** 2)


def _batches(n):
    rng = np.random.default_rng(0)
    for _ in range(n):
        x = rng.normal(size=(8, 3)).astype(np.float32)
        yield {"x": x, "y": x @ np.array([1.0, -2.0, 0.5], np.float32) + 1.0}


def test_short_run_trains_only_the_mask_and_lowers_the_loss():
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    mask = {"w": np.array([True, True, False]), "b": np.array(True)}
    tx = masked_updates(optax.adam(0.1), mask)
    tuned, losses = short_run(_loss, params, _batches(40), tx, steps=40)
    assert len(losses) == 40 and losses[-1] < 0.5 * losses[0]
    assert float(tuned["w"][2]) == 0.0 and float(tuned["w"][0]) != 0.0
    assert float(params["w"][0]) == 0.0  # the input tree is untouched


def test_short_run_errors():
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    with pytest.raises(ValueError, match="ran out after 2"):
        short_run(_loss, params, _batches(2), optax.sgd(0.1), steps=5)
    with pytest.raises(ValueError, match="steps must be"):
        short_run(_loss, params, _batches(2), optax.sgd(0.1), steps=0)


def test_short_run_passes_frozen_as_an_argument():
    frozen = {"b": jnp.asarray(1.0)}

    def loss(params, batch, fz):
        return jnp.mean((batch["x"] @ params["w"] + fz["b"] - batch["y"]) ** 2)

    tuned, losses = short_run(loss, {"w": jnp.zeros(3)}, _batches(30), optax.adam(0.1),
                              steps=30, frozen=frozen)
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_allclose(np.asarray(tuned["w"]), [1.0, -2.0, 0.5], atol=0.3)


def test_cycle_epochs_continues_and_stops_on_an_empty_epoch():
    seen = list(itertools.islice(cycle_epochs(lambda e: [e, e]), 5))
    assert seen == [0, 0, 1, 1, 2]
    assert list(cycle_epochs(lambda e: [e] if e < 2 else [])) == [0, 1]
