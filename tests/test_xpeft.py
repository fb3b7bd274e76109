"""X-PEFT: mixing, masks, the straight-through estimator, profile files, the method through the
trainer, and serving a batch of many profiles in one compiled call (tiny random BERT)."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import latest_trainable
from fishjax import objectives
from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import ConfigError, PeftError
from fishjax.core.tree import flatten_paths, merge_trees, split_tree
from fishjax.methods.xpeft.bank_file import load_bank, make_bank, save_bank, stack_peft_files
from fishjax.methods.xpeft.profile_file import (
    PROFILE_FILE,
    load_profile,
    pack_mask,
    save_profile,
    unpack_mask,
)
from fishjax.methods.xpeft.serve import ProfileServer, profile_outputs, rebuild_random_bank
from fishjax.models import (
    ADAPTER_SITES,
    EncoderConfig,
    SequenceClassifier,
    init_params,
    load_model,
)
from fishjax.params.peft import PeftSpec, find_targets, init_peft
from fishjax.params.xpeft import (
    Profile,
    bank_slots,
    mask_weights,
    mix,
    mixing_weights,
    profile_from_scores,
    random_bank,
    top_k_mask,
)
from fishjax.train.trainer import Trainer, train_and_evaluate

HEAD = r"^classifier/"


@pytest.fixture(scope="module")
def tiny():
    cfg = EncoderConfig.tiny()
    module = SequenceClassifier(cfg, 2)
    params = init_params(cfg, 2, jax.random.PRNGKey(0))
    head, base = split_tree(params, HEAD)
    slots = find_targets(base, "adapter", ADAPTER_SITES["pfeiffer"])
    spec = PeftSpec("adapter", 4, slots)
    return module, params, head, base, spec


def _batch(b=6, s=10, seed=0):
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(5, 100, (b, s)).astype(np.int32),
            "attention_mask": np.ones((b, s), np.int32),
            "token_type_ids": np.zeros((b, s), np.int32),
            "labels": rng.integers(0, 2, b).astype(np.int32),
            "weights": np.ones(b, np.float32)}


def _logits(module, params, batch):
    apply = objectives.make_apply_fn(module, objectives.SequenceClassification())
    return np.asarray(apply(params, batch))


def _adapter(bank, j):
    """Adapter j of a bank, as a plain PEFT adapter tree."""
    return jax.tree_util.tree_map(lambda x: x[j], bank)


# -- mixing -------------------------------------------------------------------------------


def test_random_pool_adapters_are_not_the_identity(tiny):
    module, params, head, base, spec = tiny
    bank = random_bank(base, spec, 3, jax.random.PRNGKey(0))
    for p, x in flatten_paths(bank).items():
        if p[-1] == "kernel":
            assert np.all(np.abs(x).reshape(3, -1).max(axis=1) > 0), p  # both projections
    plain = _logits(module, params, _batch())
    with_adapter = _logits(module, merge_trees(base, _adapter(bank, 1), head), _batch())
    # The tiny random model's activations are small; far above rounding all the same.
    assert np.max(np.abs(with_adapter - plain)) > 1e-4 * np.max(np.abs(plain))


def test_soft_mask_on_one_adapter_equals_that_adapter(tiny):
    module, params, head, base, spec = tiny
    bank = random_bank(base, spec, 5, jax.random.PRNGKey(1))
    scores = np.full((len(spec.targets), 2, 5), -1e4, np.float32)
    scores[..., 3] = 1e4
    weights = mixing_weights(jnp.asarray(scores), "soft")
    np.testing.assert_array_equal(np.asarray(weights)[..., 3], 1.0)
    mixed = mix(bank, weights)
    for p, x in flatten_paths(_adapter(bank, 3)).items():
        np.testing.assert_array_equal(np.asarray(flatten_paths(mixed)[p]), x)
    np.testing.assert_array_equal(
        _logits(module, merge_trees(base, mixed, head), _batch()),
        _logits(module, merge_trees(base, _adapter(bank, 3), head), _batch()))


def test_one_adapter_bank_is_plain_adapter_inference(tiny):
    module, params, head, base, spec = tiny
    tree = jax.tree_util.tree_map(lambda x: x + 0.1, init_peft(base, spec, jax.random.PRNGKey(2)))
    bank = jax.tree_util.tree_map(lambda x: np.asarray(x)[None], tree)
    for variant in ("soft", "hard", "sigmoid"):
        scores = jnp.full((len(spec.targets), 2, 1), 0.5)
        got = _logits(module, merge_trees(base, mix(bank, mixing_weights(scores, variant, 1)),
                                          head), _batch())
        np.testing.assert_array_equal(got, _logits(module, merge_trees(base, tree, head),
                                                   _batch()))


@pytest.mark.parametrize("n,k", [(8, 4), (7, 3), (5, 5)])
def test_hard_mask_has_exactly_k_and_mixes_the_mean(tiny, n, k):
    _, _, _, base, spec = tiny
    bank = random_bank(base, spec, n, jax.random.PRNGKey(3))
    scores = jax.random.normal(jax.random.PRNGKey(4), (len(spec.targets), 2, n))
    mask = np.asarray(top_k_mask(scores, k))
    assert np.all(mask.sum(axis=-1) == k)
    order = np.argsort(-np.asarray(scores), axis=-1, kind="stable")[..., :k]
    for idx in np.ndindex(mask.shape[:2]):
        assert set(np.flatnonzero(mask[idx])) == set(order[idx])
    weights = np.asarray(mixing_weights(scores, "hard", k))
    np.testing.assert_array_equal(weights, np.asarray(mask_weights(jnp.asarray(mask))))
    mixed = flatten_paths(mix(bank, jnp.asarray(weights)))
    slots = bank_slots(bank)
    for p, leaf in flatten_paths(bank).items():
        i = p.index("adapter")
        row, side = slots.index("/".join(p[:i])), ("down", "up").index(p[i + 1])
        want = leaf[mask[row, side]].mean(axis=0)
        np.testing.assert_allclose(np.asarray(mixed[p]), want, rtol=1e-6, atol=1e-7)
    with pytest.raises(PeftError, match="K must be"):
        top_k_mask(scores, n + 1)
    # Summed instead: weight 1 on each selected adapter, K times the mean's weights.
    summed = np.asarray(mixing_weights(scores, "hard", k, "sum"))
    np.testing.assert_array_equal(summed, mask.astype(np.float32))


def test_summed_mixing_scales_the_straight_through_gradient_by_k(tiny):
    """Hard, mixed by the sum: the forward weights are the mask, and the scores'
    gradient is K times the mean's (the surrogate K softmax(S)); sigmoid by the sum: the
    surrogate is sigmoid(S) itself. A soft profile has no summed form."""
    scores = jax.random.normal(jax.random.PRNGKey(8), (3, 2, 6))
    pull = jax.random.normal(jax.random.PRNGKey(9), (3, 2, 6))
    grads = {m: np.asarray(jax.grad(lambda s, m=m: jnp.sum(
        pull * mixing_weights(s, "hard", 2, m)))(scores)) for m in ("mean", "sum")}
    np.testing.assert_allclose(grads["sum"], 2 * grads["mean"], rtol=1e-5, atol=1e-7)
    g = np.asarray(jax.grad(lambda s: jnp.sum(pull * mixing_weights(s, "sigmoid", None,
                                                                     "sum")))(scores))
    s = jax.nn.sigmoid(scores)
    np.testing.assert_allclose(g, np.asarray(pull * s * (1 - s)), rtol=1e-5, atol=1e-7)
    with pytest.raises(PeftError, match="soft profile"):
        mixing_weights(scores, "soft", None, "sum")


@pytest.mark.parametrize("variant", ["hard", "sigmoid", "soft"])
def test_scores_get_a_gradient(tiny, variant):
    module, params, head, base, spec = tiny
    bank = random_bank(base, spec, 6, jax.random.PRNGKey(5))
    loss_fn = objectives.make_loss_fn(module, objectives.SequenceClassification())
    scores = jax.random.uniform(jax.random.PRNGKey(6), (len(spec.targets), 2, 6),
                                minval=-0.5, maxval=0.5)

    def loss(s):
        return loss_fn(merge_trees(base, mix(bank, mixing_weights(s, variant, 3)), head),
                       _batch())

    g = np.asarray(jax.jit(jax.grad(loss))(scores))  # jitted: op-by-op takes 15 s
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    assert np.count_nonzero(g) > g.size // 2  # straight-through: every score gets a signal


# -- files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 2, 32), (12, 2, 100), (1, 2, 3)])
def test_bit_packing_round_trip_and_exact_size(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < 0.5
    bits = pack_mask(mask)
    assert bits.dtype == np.uint8 and bits.size == math.ceil(np.prod(shape) / 8)
    np.testing.assert_array_equal(unpack_mask(bits, shape), mask)
    with pytest.raises(PeftError, match="bytes expected"):
        unpack_mask(bits[:-1], shape)


def test_soft_scores_beyond_float16_are_refused(tiny, tmp_path):
    _, _, head, _, spec = tiny
    scores = np.zeros((len(spec.targets), 2, 4), np.float32)
    scores[0, 0, 1] = 1e5
    with pytest.raises(PeftError, match="do not fit float16"):
        profile_from_scores(scores, head, "soft", None)


def test_profile_file_round_trip_binds_bank_and_base(tiny, tmp_path):
    _, params, head, base, spec = tiny
    n = 32
    scores = jax.random.normal(jax.random.PRNGKey(7), (len(spec.targets), 2, n))
    base_fp = base_fingerprint(base)
    for variant, k in (("hard", 16), ("soft", None), ("sigmoid", None)):
        profile = profile_from_scores(scores, head, variant, k)
        path = save_profile(str(tmp_path / f"{variant}.safetensors"), profile,
                            slots=spec.targets, bank_fp="b" * 64, base_fp=base_fp)
        loaded, meta = load_profile(path, "b" * 64, base_fp)
        shipped = scores.astype(jnp.float16).astype(jnp.float32) if variant == "soft" else scores
        np.testing.assert_array_equal(np.asarray(loaded.weights()),
                                      np.asarray(mixing_weights(shipped, variant, k)))
        np.testing.assert_allclose(np.asarray(loaded.weights()),
                                   np.asarray(mixing_weights(scores, variant, k)), rtol=2e-3)
        for p, x in flatten_paths(head).items():
            np.testing.assert_array_equal(flatten_paths(loaded.head)[p], np.asarray(x))
        if variant == "soft":  # float16 scores: 2 bytes each
            assert meta["selection_bytes"] == 2 * 2 * len(spec.targets) * n
        if variant != "soft":  # a mask: exactly ceil(2 L N / 8) bytes
            assert meta["selection_bytes"] == math.ceil(2 * len(spec.targets) * n / 8) == 16
    with pytest.raises(PeftError, match="another adapter bank"):
        load_profile(path, "c" * 64, base_fp)
    with pytest.raises(PeftError, match="base model"):
        load_profile(path, "b" * 64, "d" * 64)


def test_bank_file_round_trip_and_corruption(tiny, tmp_path):
    _, _, _, base, spec = tiny
    adapters = random_bank(base, spec, 3, jax.random.PRNGKey(8))
    bank = make_bank(adapters, spec, base_fingerprint(base), base_model="tiny", sources="t")
    path = save_bank(str(tmp_path / "bank.safetensors"), bank)
    again = load_bank(path)
    assert again.size == 3 and again.spec == spec and again.fingerprint == bank.fingerprint
    for p, x in flatten_paths(adapters).items():
        np.testing.assert_array_equal(flatten_paths(again.adapters)[p], x)
    tampered = make_bank(jax.tree_util.tree_map(lambda x: x + 1.0, adapters), spec,
                         base_fingerprint(base), base_model="tiny", sources="t")
    tampered.metadata["bank_fingerprint"] = bank.fingerprint
    bad = save_bank(str(tmp_path / "bad.safetensors"), tampered)
    with pytest.raises(PeftError, match="fingerprint"):
        load_bank(bad)


# -- the method through the trainer ---------------------------------------------------------


def _xpeft_config(config, variant="hard", n=4, **xpeft):
    config.method.name = "xpeft"
    config.method.xpeft.variant = variant
    config.method.xpeft.pool_size = n
    config.train.num_steps = 6
    for key, value in xpeft.items():
        config.method.xpeft[key] = value
    return config


@pytest.mark.parametrize("variant", ["hard", "soft"])
def test_training_moves_only_scores_and_head(tiny_config, tmp_path, variant):
    config = _xpeft_config(tiny_config, variant, score_learning_rate=0.1)
    trainer = Trainer(config, str(tmp_path / "t"))
    frozen = jax.tree_util.tree_map(np.asarray, trainer.setup.frozen)
    start = jax.tree_util.tree_map(np.asarray, trainer.setup.trainable)
    res = trainer.run()
    after = latest_trainable(str(tmp_path / "t"))
    assert set(after) == {"scores", "head"}
    assert np.any(np.asarray(after["scores"]) != start["scores"])
    for x, y in zip(jax.tree_util.tree_leaves(frozen),  # base and bank bitwise unchanged
                    jax.tree_util.tree_leaves(jax.device_get(trainer.frozen)), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))
    summary = res["method_summary"]
    assert summary["trainable_entries"] == summary["score_entries"] + summary["head_entries"]
    assert summary["score_entries"] == 2 * 2 * 4  # 2 slots x 2 sides x N
    profile, meta = load_profile(os.path.join(str(tmp_path / "t"), PROFILE_FILE),
                                 summary["bank_fingerprint"])
    assert profile.variant == variant and meta["seed"] == config.seed
    if variant == "hard":
        assert np.all(profile.mask.sum(axis=-1) == 2)  # K = ceil(4 / 2)


@pytest.mark.parametrize("mixing", ["mean", "sum"])
def test_reloaded_profile_gives_identical_logits(tiny_config, tmp_path, mixing):
    config = _xpeft_config(tiny_config, "hard", n=6, score_learning_rate=0.1, mixing=mixing)
    workdir = str(tmp_path / "run")
    trainer = Trainer(config, workdir)
    trainer.run()
    kept = jax.device_get(trainer.state.trainable)
    frozen = trainer.setup.frozen
    profile, meta = load_profile(os.path.join(workdir, PROFILE_FILE))
    assert profile.mixing == meta["mixing"] == mixing
    batch = next(iter(trainer.epoch_batches(0)))
    trained = np.asarray(trainer.apply_fn(trainer.setup.dense_params(kept), batch))
    weights = mixing_weights(jnp.asarray(kept["scores"]), "hard", 3, mixing)
    np.testing.assert_array_equal(np.asarray(profile.weights()), np.asarray(weights))
    reloaded = np.asarray(profile_outputs(trainer.apply_fn, frozen["base"], frozen["bank"],
                                         profile.weights(), profile.head, batch))
    np.testing.assert_array_equal(reloaded, trained)


def test_harden_at_end_reports_the_hard_profile(tiny_config, tmp_path):
    config = _xpeft_config(tiny_config, "soft", n=4, harden_at_end=True)
    res = train_and_evaluate(config, str(tmp_path / "h"))
    assert set(res["deployed_eval"]) == set(res["final_eval"])
    hard, _ = load_profile(str(tmp_path / "h" / "profile_hard.safetensors"))
    assert hard.variant == "hard" and np.all(hard.mask.sum(axis=-1) == 2)


def test_bad_xpeft_options_are_refused(tiny_config):
    from fishjax.train.validation import validate_config

    config = _xpeft_config(tiny_config)
    validate_config(config)
    for key, value, match in (("variant", "fuzzy", "variant"), ("k", 5, "exceeds"),
                              ("pool", "/no/bank.safetensors", "pool"),
                              ("harden_at_end", True, "harden_at_end"),
                              ("mixing", "max", "mixing must be one of")):
        bad = _xpeft_config(tiny_config.copy_and_resolve_references(), **{key: value})
        with pytest.raises(ConfigError, match=match):
            validate_config(bad)
    soft_sum = _xpeft_config(tiny_config.copy_and_resolve_references(), "soft", mixing="sum")
    with pytest.raises(ConfigError, match="mixing='sum' needs variant"):
        validate_config(soft_sum)


def test_trained_bank_from_adapter_runs(tiny_config, tmp_path):
    """Two `adapter` runs (Pfeiffer) stacked into a bank file, then an xpeft run on it."""
    paths, scores = [], []
    for seed in (0, 1):
        c = tiny_config.copy_and_resolve_references()
        c.method.name, c.seed, c.train.num_steps = "adapter", seed, 2
        c.method.peft.adapter_variant, c.method.peft.adapter_size = "pfeiffer", 4
        c.method.head_regex = HEAD
        scores.append(train_and_evaluate(c, str(tmp_path / f"a{seed}"))["final_eval"])
        paths.append(str(tmp_path / f"a{seed}" / "peft.safetensors"))
    bank = stack_peft_files(paths, scores)
    assert bank.size == 2 and bank.spec.size == 4
    bank_path = save_bank(str(tmp_path / "bank.safetensors"), bank)
    assert load_bank(bank_path).metadata["adapter_scores"] == scores  # what each one knows
    with pytest.raises(PeftError, match="1 adapter scores for 2"):
        stack_peft_files(paths, scores[:1])
    config = _xpeft_config(tiny_config, "hard", pool=bank_path)
    res = train_and_evaluate(config, str(tmp_path / "x"))
    assert res["method_summary"]["pool_size"] == 2
    assert res["method_summary"]["bank_fingerprint"] == bank.fingerprint


# -- serving ---------------------------------------------------------------------------------


def test_mixed_profile_batch_equals_each_profile_alone_without_recompiling(tiny_model_dir,
                                                                           tiny):
    _, _, _, _, _ = tiny
    model = load_model(tiny_model_dir, 2, key=jax.random.PRNGKey(0))
    head, base = split_tree(model.params, HEAD)
    spec = PeftSpec("adapter", 4, find_targets(base, "adapter", ADAPTER_SITES["pfeiffer"]))
    bank = make_bank(random_bank(base, spec, 6, jax.random.PRNGKey(9)), spec,
                     base_fingerprint(base), base_model="tiny", sources="random(seed=9, n=6)")
    server = ProfileServer(model, bank, head_regex=HEAD)
    rng = np.random.default_rng(0)
    profiles = {}
    for i, variant in enumerate(("hard", "soft", "sigmoid")):
        scores = rng.normal(size=(len(spec.targets), 2, 6)).astype(np.float32)
        h = jax.tree_util.tree_map(lambda x, i=i: np.asarray(x) + 0.1 * i, head)
        profiles[f"p{i}"] = profile_from_scores(scores, h, variant, 3)
        server.add_profile(f"p{i}", profiles[f"p{i}"])
    batch = _batch(b=6, s=12, seed=1)
    names = ["p0", "p1", "p2", "p1", "p0", "p2"]
    mixed = server.outputs(batch, names)
    apply_fn = objectives.make_apply_fn(model.module, objectives.SequenceClassification())
    for i, name in enumerate(names):
        alone = profile_outputs(apply_fn, base, bank.adapters, profiles[name].weights(),
                               profiles[name].head,
                               jax.tree_util.tree_map(lambda x, i=i: x[i:i + 1], batch))
        np.testing.assert_allclose(mixed[i], np.asarray(alone)[0], rtol=1e-5, atol=1e-5)
    assert server._forward._cache_size() == 1
    server.add_profile("p3", Profile("hard", profiles["p0"].head,
                                     mask=~profiles["p0"].mask, k=3))
    server.outputs(batch, ["p3", "p2", "p1", "p0", "p3", "p3"])
    server.outputs(batch, ["p3"] * 6)
    assert server._forward._cache_size() == 1  # new and switched profiles: no recompile
    with pytest.raises(PeftError, match="unknown profiles"):
        server.outputs(batch, ["p9"] * 6)
    assert len(server.predict(["a great film", "a dull film"], ["p0", "p1"], 16)) == 2


def test_random_pool_is_rebuilt_from_a_profile(tiny_config, tmp_path):
    config = _xpeft_config(tiny_config, "hard", n=4)
    train_and_evaluate(config, str(tmp_path / "r"))
    _, meta = load_profile(str(tmp_path / "r" / PROFILE_FILE))
    model = load_model(config.model.name, 2, key=jax.random.PRNGKey(0))
    _, base = split_tree(model.params, config.method.head_regex)
    bank = rebuild_random_bank(meta, base)
    assert bank.fingerprint == meta["bank_fingerprint"]
