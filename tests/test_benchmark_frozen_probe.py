"""benchmarks/analysis/frozen_probe.py: features from the frozen model, the probe's fit and
choice."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from benchmarks.analysis import frozen_probe as fp
from fishjax.data import get_task, index_batches, load_split, tokenize_split
from fishjax.models import load_model, load_tokenizer


def test_features_are_the_models_own_pooler_cls_and_masked_mean(tiny_model_dir):
    model = load_model(tiny_model_dir, 2, key=jax.random.PRNGKey(0))
    raw = load_split("quickstart", "dev", max_samples=11)
    ds = tokenize_split(raw, load_tokenizer(tiny_model_dir), max_length=32, buckets=(16, 32))
    feats = fp.sentence_features(model, index_batches(ds, np.arange(len(ds)), 4))
    assert {k: v.shape for k, v in feats.items()} == {
        name: (11, model.config.hidden_size) for name in fp.FEATURES}
    # Example 7 alone, unpadded, by the model's own modules: same features, same row.
    i = 7
    n = int(ds.lengths[i])
    ids, types = ds.input_ids[i:i + 1, :n], ds.token_type_ids[i:i + 1, :n]
    _, state = model.module.apply({"params": model.params}, ids, np.ones_like(ids), types,
                                  capture_intermediates=True)
    hidden = np.asarray(state["intermediates"]["encoder"]["__call__"][0])[0]
    pooled = np.asarray(state["intermediates"]["pooler"]["__call__"][0])[0]
    np.testing.assert_allclose(feats["cls"][i], hidden[0], atol=1e-5)
    np.testing.assert_allclose(feats["mean"][i], hidden.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(feats["pooler"][i], pooled, atol=1e-5)


def test_logistic_fit_is_the_penalised_optimum_and_separates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    y = (x[:, 0] - 0.5 * x[:, 1] > 0.3).astype(np.int64)
    w = fp.fit_logistic(x, y, 2, l2=1e-3)
    assert np.mean(fp.predict(w, x) == y) > 0.95
    # Stationary point of the objective: the gradient vanishes (intercept unpenalised).
    xb = np.concatenate([x, np.ones((200, 1))], axis=1)
    z = xb @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = xb.T @ (p - np.eye(2)[y]) / 200 + 1e-3 * w * np.r_[np.ones(5), 0.0][:, None]
    assert np.abs(grad).max() < 1e-5
    # A huge L2 drives the weights (not the intercept) to zero: the prior's log-odds.
    w_big = fp.fit_logistic(x, y, 2, l2=1e6)
    assert np.abs(w_big[:-1]).max() < 1e-4
    prior = np.mean(y)
    assert np.isclose(w_big[-1, 1] - w_big[-1, 0], np.log(prior / (1 - prior)), atol=1e-3)


def test_choice_of_l2_is_the_best_cross_validated_accuracy_on_the_train_split():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 60))  # many noise features, one that matters
    y = (x[:, 0] > 0).astype(np.int64)
    best, cv = fp.choose_l2(x, y, 2, [1e-4, 1e-1], folds=4, seed=0)
    assert set(cv) == {"0.0001", "0.1"} and all(0 <= v <= 1 for v in cv.values())
    assert best == max([1e-4, 1e-1], key=lambda v: (cv[repr(v)], v))
    with pytest.raises(fp.ProbeError, match="folds"):
        fp.choose_l2(x, y, 2, [1e-3], folds=1, seed=0)


def test_main_on_the_tiny_model_writes_every_feature(tiny_model_dir, tmp_path):
    out = tmp_path / "probe.json"
    result = fp.main(["--tasks=quickstart", f"--model={tiny_model_dir}", "--max_length=32",
                      "--max_train_samples=60", "--folds=3", "--l2=1e-2,1",
                      f"--json={out}"])
    task = get_task("quickstart")
    r = result["tasks"]["quickstart"]
    assert r["train_examples"] == 60 and r["dev_examples"] > 0
    for name in fp.FEATURES:
        assert r[name]["l2"] in (1e-2, 1.0)
        assert 0.0 <= r[name]["dev"][task.main_metric] <= 1.0
    assert out.is_file() and result["cpu"]
    with pytest.raises(fp.ProbeError, match="--l2"):
        fp.main(["--tasks=quickstart", f"--model={tiny_model_dir}", "--l2=-1"])


def test_readme_table_matches_the_committed_result():
    """The README's frozen-probe block is what readme_table makes of the committed JSON."""
    import os

    from benchmarks.common import readme_blocks
    from fishjax.core.io import read_json

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.join(repo, "benchmarks", "results", "frozen_probe.json")
    result = read_json(source)
    assert set(result["tasks"]) == {"rte", "mrpc"}
    table = fp.readme_table(result)
    assert readme_blocks.check(os.path.join(repo, "README.md"), fp.README_BLOCK, source,
                               table) == []
