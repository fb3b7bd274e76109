"""`masked_updates`: unselected entries never move; no state for frozen leaves; no recompile."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fishjax.params.masked import masked_updates


def _setup():
    rng = np.random.default_rng(0)
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32),
                        "bias": jnp.asarray(rng.normal(size=6), jnp.float32)},
              "frozen": {"kernel": jnp.asarray(rng.normal(size=(4, 4)), jnp.float32)},
              "head": {"kernel": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)}}
    mask = {"dense": {"kernel": rng.random((8, 6)) < 0.2, "bias": np.zeros(6, bool)},
            "frozen": {"kernel": np.zeros((4, 4), bool)},
            "head": {"kernel": np.ones((6, 2), bool)}}
    mask["dense"]["bias"][2] = True
    return params, mask


def test_unselected_entries_bitwise_frozen_after_adamw_with_weight_decay():
    params, mask = _setup()
    tx = masked_updates(optax.chain(optax.clip_by_global_norm(1.0),
                                    optax.adamw(1e-2, weight_decay=0.01)), mask)
    state = tx.init(params)

    @jax.jit
    def step(params, state, i):
        grads = jax.tree_util.tree_map(lambda p: jnp.sin(p * (i + 1.0)) + 0.1, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    p = params
    for i in range(20):
        p, state = step(p, state, jnp.float32(i))
        if i == 1:
            assert step._cache_size() == 1  # the second step reused the first compilation
    for path, new in jax.tree_util.tree_flatten_with_path(p)[0]:
        keys = [k.key for k in path]
        old = params[keys[0]][keys[1]]
        m = mask[keys[0]][keys[1]]
        np.testing.assert_array_equal(np.asarray(new)[~m], np.asarray(old)[~m])  # bitwise
        assert np.all(np.asarray(new)[m] != np.asarray(old)[m])
    assert step._cache_size() == 1

    # No optimizer state for the leaf without a selected entry (frozen/kernel).
    adam = state.inner.inner_states["train"].inner_state[1][0]
    assert isinstance(adam.mu["frozen"]["kernel"], optax.MaskedNode)
    assert adam.mu["dense"]["kernel"].shape == (8, 6)
    assert state.masks["frozen"]["kernel"] is None and state.masks["head"]["kernel"] is None


def test_masked_transform_matches_dense_adam_on_fully_selected_leaves():
    params, mask = _setup()
    full = {k: {kk: np.ones_like(v, bool) for kk, v in d.items()} for k, d in mask.items()}
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(p), params)
    a, _ = masked_updates(optax.adam(1e-3), full).update(
        grads, masked_updates(optax.adam(1e-3), full).init(params), params)
    b, _ = optax.adam(1e-3).update(grads, optax.adam(1e-3).init(params), params)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
