"""Dropout keys of the train step: which PRNG draws the masks, and the key of each step.

The run's state holds raw key data (`TrainState.rng`, checkpointed with it); the key of
step s is `fold_in(key, s)`, so a resumed run draws the masks an uninterrupted one would.
`rbg` (the default) and `unsafe_rbg` use XLA's RngBitGenerator, cheaper to draw than
`threefry` (JAX's default; every result committed before commit 6c2f10f used it). Same
seed, same run, with any of them (tests/test_trainer.py); JAX does not promise rbg's bits across
backends or shardings, though on CPU 1 and 8 devices give the same run
(tests/test_sharding.py). Rates: `python -m benchmarks.speed.train_throughput --dropout_prngs`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DROPOUT_PRNGS = ("threefry", "rbg", "unsafe_rbg")


def initial_key_data(key: jax.Array, impl: str) -> jax.Array:
    """Raw key data of `impl` derived from a threefry `key` (the run's seed key); threefry
    keeps `key` itself, so its runs are unchanged by this option."""
    if impl not in DROPOUT_PRNGS:
        raise ValueError(f"dropout PRNG must be one of {DROPOUT_PRNGS}, got {impl!r}")
    if impl == "threefry":
        return key
    width = jax.random.key_data(jax.random.key(0, impl=impl)).shape[-1]
    return jax.random.bits(key, (width,), jnp.uint32)  # any bits are a valid rbg key


def step_key(key_data: jax.Array, step: jax.Array, impl: str) -> jax.Array:
    """The dropout key of `step` (traceable)."""
    if impl == "threefry":
        return jax.random.fold_in(key_data, step)
    return jax.random.fold_in(jax.random.wrap_key_data(key_data, impl=impl), step)
