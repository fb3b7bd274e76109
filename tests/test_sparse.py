"""fishjax.params.sparse and fishjax.artifacts.delta_file: the sparse increment against dense
masked training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from fishjax import objectives
from fishjax.artifacts.delta_file import DeltaError, apply_delta_file, load_delta, save_delta
from fishjax.core.errors import SparseError
from fishjax.core.tree import leaf_paths, match_tree
from fishjax.methods.common import sparse_setup
from fishjax.models import EncoderConfig, SequenceClassifier, init_params
from fishjax.params import sparse as sp
from fishjax.params.masked import masked_updates
from fishjax.train.optim import make_optimizer

HEAD = r"^(pooler|classifier)/"


@pytest.fixture(scope="module")
def tiny():
    cfg = EncoderConfig.tiny()
    params = init_params(cfg, 2, jax.random.PRNGKey(0))
    # Pretrained-like: non-zero biases and LayerNorm offsets.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.02 * jax.random.normal(jax.random.PRNGKey(len(str(p))), x.shape)
        if str(p[-1].key) in ("bias", "scale") else x, params)
    loss_fn = objectives.make_loss_fn(SequenceClassifier(cfg, 2),
                                      objectives.SequenceClassification())
    return cfg, params, loss_fn


def _batch(i: int, vocab: int = 128, b: int = 8, s: int = 16):
    rng = np.random.default_rng(i)
    return {"input_ids": rng.integers(5, vocab, (b, s)).astype(np.int32),
            "attention_mask": np.ones((b, s), np.int32),
            "token_type_ids": np.zeros((b, s), np.int32),
            "labels": rng.integers(0, 2, b).astype(np.int32),
            "weights": np.ones(b, np.float32)}


def _mask(params, density=0.05, seed=0):
    """Random entries of every non-head leaf, and the whole head."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda p, h: np.ones(p.shape, bool) if h else rng.random(p.shape) < density,
        params, match_tree(params, HEAD))


def test_from_mask_apply_merge_to_mask(tiny):
    _, params, _ = tiny
    mask = _mask(params)
    delta = sp.from_mask(mask, params, exclude=HEAD)
    assert "pooler" not in delta.indices and "classifier" not in delta.indices
    for p in delta.paths():
        assert p.startswith(("embeddings/", "encoder/"))
    for idx in jax.tree_util.tree_leaves(delta.indices):
        assert idx.dtype == np.int32 and np.all(np.diff(idx) > 0)
    # to_mask inverts from_mask (outside the excluded head).
    back = sp.to_mask(delta, params)
    head = match_tree(params, HEAD)
    for m, b, h in zip(*map(jax.tree_util.tree_leaves, (mask, back, head)), strict=True):
        np.testing.assert_array_equal(b, np.zeros_like(m) if h else m)
    assert sp.count(delta) == sum(int(np.sum(m)) for m, h in zip(
        jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(head), strict=True) if not h)

    rng = np.random.default_rng(1)
    values = jax.tree_util.tree_map(lambda i: rng.normal(size=i.shape).astype(np.float32),
                                    delta.indices)
    d = sp.SparseDelta(delta.indices, values)
    traced = jax.jit(sp.apply_delta)(params, d.indices, d.values)
    host = sp.merge(params, d)
    for path, a, b, w, m in zip(leaf_paths(params), *map(jax.tree_util.tree_leaves,
                                                         (traced, host, params, back)),
                                strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)  # jit scatter == numpy, bitwise
        np.testing.assert_array_equal(b[~m], np.asarray(w)[~m])
        assert m.sum() == 0 or np.all(b[m] != np.asarray(w)[m]), path


def test_grad_wrt_values_is_a_length_k_gather(tiny):
    _, params, loss_fn = tiny
    delta = sp.from_mask(_mask(params), params, exclude=HEAD)
    batch = _batch(0)
    g_vals = jax.jit(jax.grad(lambda v: loss_fn(sp.apply_delta(params, delta.indices, v),
                                                batch)))(delta.values)
    g_dense = jax.jit(jax.grad(loss_fn))(params, batch)
    gathered = sp.gather(g_dense, delta.indices)
    for a, b, i in zip(*map(jax.tree_util.tree_leaves, (g_vals, gathered, delta.indices)),
                       strict=True):
        assert a.shape == i.shape  # length k, not dense
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)


def _train_cfg(wd: float) -> ml_collections.ConfigDict:
    t = default.get_config().train
    t.learning_rate, t.warmup_steps, t.weight_decay = 1e-2, 0, wd
    return t


@pytest.mark.parametrize("decay", ["off", pytest.param("weights", marks=pytest.mark.slow)])
def test_sparse_increment_matches_dense_masked_adamw(tiny, decay):
    """Same mask, 10 AdamW steps (clipping, decay 0.1, bias exclusion) -> same params."""
    _, params, loss_fn = tiny
    mask = _mask(params)
    t = _train_cfg(0.1)
    steps = 10

    # Reference: dense masked AdamW. With decay "off" the selected (non-head) entries are
    # not decayed; the head is decayed in both paths.
    dense_tx, _ = make_optimizer(t, steps, no_decay=(
        r"^(embeddings|encoder)/" if decay == "off" else None))
    dense_tx = masked_updates(dense_tx, mask)

    @jax.jit
    def dense_step(p, s, batch):
        g = jax.grad(loss_fn)(p, batch)
        u, s = dense_tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    setup = sparse_setup(params, mask, HEAD, weight_decay=decay)
    sparse_tx, _ = make_optimizer(t, steps, no_decay=setup.no_decay)
    frozen = setup.frozen

    @jax.jit
    def sparse_step(tr, s, batch):  # what fishjax.train.trainer does
        g = jax.grad(lambda tr: loss_fn(setup.combine(tr, frozen), batch))(tr)
        opt_params = tr if setup.optimizer_params is None else setup.optimizer_params(tr,
                                                                                     frozen)
        u, s = sparse_tx.update(g, s, opt_params)
        return optax.apply_updates(tr, u), s

    p, ps = params, dense_tx.init(params)
    tr, ts = setup.trainable, sparse_tx.init(setup.trainable)
    for i in range(steps):
        p, ps = dense_step(p, ps, _batch(i))
        tr, ts = sparse_step(tr, ts, _batch(i))
    got = setup.combine(tr, frozen)
    moved = 0
    for path, a, b, w in zip(leaf_paths(params), *map(jax.tree_util.tree_leaves,
                                                     (p, got, params)), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6,
                                   err_msg=path)
        moved += int(np.sum(np.asarray(a) != np.asarray(w)))
    assert moved > 0.9 * sum(int(m.sum()) for m in jax.tree_util.tree_leaves(mask))


def test_decay_modes_differ_on_the_increment_only(tiny):
    """'off' leaves the increment undecayed: with zero gradients nothing moves but the head."""
    _, params, loss_fn = tiny
    mask = _mask(params)
    t = _train_cfg(0.5)
    zero = lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree)
    out = {}
    for decay in ("off", "weights"):
        setup = sparse_setup(params, mask, HEAD, weight_decay=decay)
        tx, _ = make_optimizer(t, 5, no_decay=setup.no_decay)

        @jax.jit
        def update(tr, frozen, setup=setup, tx=tx):
            opt_params = tr if setup.optimizer_params is None else setup.optimizer_params(
                tr, frozen)
            return tx.update(zero(tr), tx.init(tr), opt_params)[0]

        out[decay] = update(setup.trainable, setup.frozen)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(out["off"]["delta"]))
    w0 = sp.gather(params, sp.split_for_training(params, mask, HEAD)[1]["indices"])
    for path, u, w in zip(leaf_paths(w0), jax.tree_util.tree_leaves(out["weights"]["delta"]),
                          jax.tree_util.tree_leaves(w0), strict=True):
        if path.endswith("bias") or path.endswith("LayerNorm/scale"):  # weight_decay_exclude
            assert np.all(np.asarray(u) == 0), path
        else:
            np.testing.assert_allclose(np.asarray(u), -1e-2 * 0.5 * np.asarray(w), rtol=1e-5)
    for decay in out:  # the head decays in both modes
        np.testing.assert_allclose(np.asarray(out[decay]["head"]["classifier"]["kernel"]),
                                   -1e-2 * 0.5 * np.asarray(params["classifier"]["kernel"]),
                                   rtol=1e-5)


def test_validate_rejects_malformed_increments(tiny):
    _, params, _ = tiny
    good = sp.from_mask(_mask(params), params, exclude=HEAD)
    sp.validate(good, params)
    path = ("encoder", "layer_0", "attention", "self", "query", "kernel")

    def with_idx(idx):
        ind = jax.tree_util.tree_map(lambda x: x, good.indices)
        vals = jax.tree_util.tree_map(lambda x: x, good.values)
        node, vnode = ind, vals
        for k in path[:-1]:
            node, vnode = node[k], vnode[k]
        node[path[-1]] = idx
        vnode[path[-1]] = np.zeros(np.shape(idx), np.float32)
        return sp.SparseDelta(ind, vals)

    for bad in (np.array([3, 1], np.int32), np.array([1, 1], np.int32),
                np.array([32 * 32], np.int32), np.array([1, 2], np.int64)):
        with pytest.raises(SparseError):
            sp.validate(with_idx(bad), params)


def test_delta_file_round_trip_and_wrong_base(tiny, tmp_path):
    _, params, _ = tiny
    mask = _mask(params)
    setup = sparse_setup(params, mask, HEAD)
    rng = np.random.default_rng(0)
    tr = jax.tree_util.tree_map(lambda x: np.asarray(x) + rng.normal(
        size=np.shape(x)).astype(np.float32), setup.trainable)
    delta = sp.delta_of(tr, setup.frozen)
    path = save_delta(str(tmp_path / "d.safetensors"), delta, tr["head"], setup.frozen["base"],
                      metadata={"base_model": "tiny", "num_labels": 2, "rate": 0.05,
                                "selection": {"rule": "random"}, "seed": 0})
    loaded = load_delta(path)
    assert loaded.metadata["base_model"] == "tiny" and loaded.metadata["rate"] == 0.05
    assert loaded.metadata["fishjax_version"] and loaded.metadata["seed"] == 0
    for a, b in zip(*map(jax.tree_util.tree_leaves, (loaded.delta, delta)), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    # Applied to the base with a different (random) head, it gives the trained params.
    other_head = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 1.0 if str(p[0].key) in ("pooler", "classifier") else x, params)
    merged = apply_delta_file(path, other_head)
    want = setup.combine(tr, setup.frozen)
    for a, b in zip(*map(jax.tree_util.tree_leaves, (merged, want)), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))

    # Another base (one entry changed) is rejected, as is another shape.
    wrong = jax.tree_util.tree_map(lambda x: x, params)
    wrong["encoder"]["layer_1"]["output"]["LayerNorm"]["bias"] = \
        wrong["encoder"]["layer_1"]["output"]["LayerNorm"]["bias"].at[0].add(1e-3)
    with pytest.raises(DeltaError, match="different base"):
        apply_delta_file(path, wrong)
    other = init_params(EncoderConfig.tiny(hidden_size=48), 2, jax.random.PRNGKey(0))
    with pytest.raises(DeltaError, match="does not fit"):
        apply_delta_file(path, other)

    # A truncated or foreign file is rejected with a DeltaError.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(open(path, "rb").read()[:100])
    with pytest.raises(DeltaError):
        load_delta(str(bad))


def test_param_rules_must_not_shard_increment_leaves(tiny):
    """The trainer places the method's trees with `checked_shardings`."""
    from fishjax.core.errors import ConfigError
    from fishjax.train.sharding import checked_shardings, make_mesh

    _, params, _ = tiny
    setup = sparse_setup(params, _mask(params), HEAD)
    mesh = make_mesh(-1, 1)
    for tree in (setup.trainable, setup.frozen):  # delta/... values, indices/...
        with pytest.raises(ConfigError, match="anchor"):
            checked_shardings(tree, mesh, ((r"query/kernel$", (None, "model")),), "tree")
        checked_shardings(tree, mesh, ((r"^base/.*query/kernel$", (None, "model")),), "tree")


def test_sparse_trees_hold_no_dense_zeros(tiny):
    """The optimizer sees O(k) + head entries: no leaf for unselected tensors."""
    _, params, _ = tiny
    mask = _mask(params, density=0.0)  # the head only
    node = mask["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
    node[0, :3] = True
    setup = sparse_setup(params, mask, HEAD)
    assert [x.shape for x in jax.tree_util.tree_leaves(setup.trainable["delta"])] == [(3,)]
    assert sp.count(setup.frozen["indices"]) == 3
