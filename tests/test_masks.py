"""Top-k masks, baselines, budgets, statistics and mask files."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from fishjax.artifacts.mask_file import load_mask, save_mask
from fishjax.core.errors import MaskError
from fishjax.core.tree import count_true
from fishjax.params.masks import density, regex_mask
from fishjax.selection.budgets import budget_k
from fishjax.selection.topk import random_mask, top_k_mask


def _scores(seed=0):
    rng = np.random.default_rng(seed)
    return {"encoder": {"w": rng.random((6, 5)).astype(np.float32),
                        "bias": rng.random(5).astype(np.float32)},
            "classifier": {"kernel": rng.random((5, 2)).astype(np.float32)}}


def test_top_k_selects_exactly_k_highest():
    s = _scores()
    for k in (0, 1, 7, 35):
        m = top_k_mask(s, k, eligible=r"^encoder/")
        assert count_true(m) == k
        assert not m["classifier"]["kernel"].any()
        if 0 < k < 35:
            chosen = np.concatenate([s["encoder"]["bias"][m["encoder"]["bias"]],
                                     s["encoder"]["w"][m["encoder"]["w"]]])
            rest = np.concatenate([s["encoder"]["bias"][~m["encoder"]["bias"]],
                                   s["encoder"]["w"][~m["encoder"]["w"]]])
            assert chosen.min() >= rest.max()
    with pytest.raises(MaskError, match="k=36"):
        top_k_mask(s, 36, eligible=r"^encoder/")


def test_ties_are_broken_by_position_deterministically():
    s = {"a": np.ones((2, 3), np.float32), "b": np.ones(4, np.float32)}
    m = top_k_mask(s, 5)
    # flatten order: leaves by sorted key ("a" then "b"), entries row-major
    assert m["a"].ravel().tolist() == [True] * 5 + [False] and not m["b"].any()
    m2 = top_k_mask(s, 7)
    assert m2["a"].all() and m2["b"].tolist() == [True, False, False, False]
    assert all(np.array_equal(x, y) for x, y in zip(
        jax.tree_util.tree_leaves(m2), jax.tree_util.tree_leaves(top_k_mask(s, 7)), strict=True))
    with pytest.raises(MaskError, match="NaN"):
        top_k_mask({"a": np.array([np.nan, 1.0])}, 1)


def test_random_mask_is_seeded():
    p = _scores()
    a = random_mask(p, 10, jax.random.PRNGKey(0), eligible=r"^encoder/")
    b = random_mask(p, 10, jax.random.PRNGKey(0), eligible=r"^encoder/")
    c = random_mask(p, 10, jax.random.PRNGKey(1), eligible=r"^encoder/")
    flat = lambda m: np.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(m)])
    assert count_true(a) == 10 and np.array_equal(flat(a), flat(b))
    assert not np.array_equal(flat(a), flat(c))


def test_budget_and_bitfit_and_density():
    assert budget_k(1000, 0.01) == 10
    assert budget_k(1000, 0.01, head_entries=4) == 6
    assert budget_k(1000, 0.01, head_entries=4, head_policy="outside") == 10
    with pytest.raises(MaskError, match="fewer than"):
        budget_k(1000, 0.001, head_entries=4)
    with pytest.raises(MaskError, match="keep_ratio"):
        budget_k(1000, 0.0)
    m = regex_mask(_scores(), r"bias$")
    assert m["encoder"]["bias"].all() and not m["encoder"]["w"].any()
    d = density(m)
    assert d["selected"] == 5 and d["size"] == 45
    assert d["per_leaf"]["encoder/bias"]["density"] == 1.0


def test_save_load_round_trip_and_errors(tmp_path):
    s = _scores()
    m = top_k_mask(s, 9, eligible=r"^encoder/")
    path = str(tmp_path / "mask.safetensors")
    save_mask(path, m, metadata={"keep_ratio": 0.2, "model": "tiny"})
    loaded, meta = load_mask(path, s)
    assert meta["keep_ratio"] == 0.2 and meta["selected"] == 9
    for a, b in zip(jax.tree_util.tree_leaves(m), jax.tree_util.tree_leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)

    other = {**s, "encoder": {**s["encoder"], "w": np.zeros((5, 6), np.float32)}}
    with pytest.raises(MaskError, match="shape mismatches.*encoder/w"):
        load_mask(path, other)
    with pytest.raises(MaskError, match="missing leaves"):
        load_mask(path, {**s, "pooler": {"kernel": np.zeros(3)}})
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(MaskError, match="not a valid safetensors"):
        load_mask(str(bad), s)
    with pytest.raises(MaskError, match="does not exist"):
        load_mask(str(tmp_path / "nope.safetensors"), s)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, np.int32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(MaskError, match="not a fishjax mask"):
        load_mask(str(tmp_path / "plain.safetensors"), s)
