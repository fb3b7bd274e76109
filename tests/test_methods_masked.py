"""fish / random_mask / bitfit through the trainer: only selected entries move."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from conftest import initial_params, latest_trainable
from fishjax.artifacts.mask_file import load_mask
from fishjax.core.errors import ConfigError
from fishjax.core.tree import count_params, count_true, leaf_paths
from fishjax.train.trainer import train_and_evaluate


def _run(config, workdir, method, **method_overrides):
    config.method.name = method
    config.train.num_epochs = 1.0
    for k, v in method_overrides.items():
        config.method[k] = v
    res = train_and_evaluate(config, workdir)
    return res, initial_params(config), latest_trainable(workdir)


def _changed(initial, final):
    """path -> bool array of entries that moved."""
    out = {}
    for path, a, b in zip(leaf_paths(initial), jax.tree_util.tree_leaves(initial),
                          jax.tree_util.tree_leaves(final), strict=True):
        out[path] = np.asarray(a) != np.asarray(b)
    return out


@pytest.mark.parametrize("method", ["fish", "random_mask"])
def test_mask_methods_train_exactly_the_mask(tiny_config, tmp_path, method):
    workdir = str(tmp_path / method)
    res, initial, final = _run(tiny_config, workdir, method, keep_ratio=0.05)
    mask, meta = load_mask(os.path.join(workdir, "mask.safetensors"), initial)
    n = count_params(initial)
    assert count_true(mask) == round(0.05 * n)  # head counted in the budget
    assert res["method_summary"]["trainable_entries"] == count_true(mask)
    assert meta["method"] == method and meta["seed"] == tiny_config.seed
    moved = _changed(initial, final)
    mask_by_path = dict(zip(leaf_paths(mask), jax.tree_util.tree_leaves(mask), strict=True))
    for path, m in moved.items():
        assert not (m & ~mask_by_path[path]).any(), f"{path}: unselected entries moved"
        if path.startswith("classifier/"):
            assert mask_by_path[path].all()
    assert sum(int(m.sum()) for m in moved.values()) > 0.5 * count_true(mask)
    if method == "fish":
        assert res["method_summary"]["fisher_examples"] == 96  # all of the tiny train set

    # Rerunning the finished workdir reuses the saved mask instead of recomputing it.
    again = train_and_evaluate(tiny_config, workdir)
    assert again["method_summary"]["mask_loaded_from"].endswith("mask.safetensors")
    assert again["final_eval"] == res["final_eval"]


def test_bitfit_trains_biases_and_head_only(tiny_config, tmp_path):
    res, initial, final = _run(tiny_config, str(tmp_path / "bitfit"), "bitfit")
    for path, m in _changed(initial, final).items():
        if m.any():
            assert path.endswith("bias") or path.startswith("classifier/"), path
    n_bias = sum(np.size(x) for p, x in zip(leaf_paths(initial),
                                            jax.tree_util.tree_leaves(initial), strict=True)
                 if p.endswith("bias") or p.startswith("classifier/"))
    assert res["method_summary"]["trainable_entries"] == n_bias


def test_same_seed_same_fish_mask(tiny_config, tmp_path):
    tiny_config.train.num_steps = 1
    loaded = []
    for name in ("a", "b"):
        _, initial, _ = _run(tiny_config, str(tmp_path / name), "fish", keep_ratio=0.05)
        loaded.append(load_mask(str(tmp_path / name / "mask.safetensors"), initial)[0])
    for x, y in zip(*map(jax.tree_util.tree_leaves, loaded), strict=True):
        np.testing.assert_array_equal(x, y)


def test_fish_mask_is_the_same_with_either_fisher_engine(tiny_config, tmp_path):
    """config.method.fisher.engine reaches the Fisher pass: "capture" (one batched
    backward) selects the mask "per_example" selects, up to ties broken by rounding."""
    tiny_config.train.num_steps = 1
    masks, summaries = [], []
    for engine in ("per_example", "capture"):
        tiny_config.method.fisher.engine = engine
        res, initial, _ = _run(tiny_config, str(tmp_path / engine), "fish", keep_ratio=0.05)
        masks.append(load_mask(str(tmp_path / engine / "mask.safetensors"), initial)[0])
        summaries.append(res["method_summary"])
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(m)]) for m in masks)
    assert a.sum() == b.sum() and np.sum(a & b) >= 0.99 * a.sum()
    assert summaries[0]["fisher_examples"] == summaries[1]["fisher_examples"]
    tiny_config.method.fisher.engine = "outer"
    with pytest.raises(ConfigError, match=r"config\.method\.fisher\.engine"):
        _run(tiny_config, str(tmp_path / "bad"), "fish")
    assert not (tmp_path / "bad").exists()


def test_reused_workdir_mask_must_match_the_config(tiny_config, tmp_path):
    from fishjax.core.errors import MaskError, WorkdirError

    workdir = str(tmp_path / "run")
    tiny_config.train.num_steps = 1
    _run(tiny_config, workdir, "fish", keep_ratio=0.05)
    tiny_config.method.keep_ratio = 0.1  # same workdir, another budget: refuse, don't reuse
    with pytest.raises(WorkdirError, match=r"method\.keep_ratio: 0\.05 -> 0\.1"):
        train_and_evaluate(tiny_config, workdir)
    # The mask file checks its own settings too (a workdir without config.json, e.g. from
    # an older fishjax, or a mask copied in).
    os.unlink(os.path.join(workdir, "config.json"))
    with pytest.raises(MaskError, match="keep_ratio"):
        train_and_evaluate(tiny_config, workdir)
    tiny_config.method.keep_ratio = 0.05  # same budget, other Fisher samples: refuse too
    tiny_config.method.fisher.num_samples = 16
    with pytest.raises(MaskError, match="fisher_num_samples"):
        train_and_evaluate(tiny_config, workdir)


def test_mask_file_without_head_still_trains_the_head(tiny_config, tmp_path):
    from fishjax.artifacts.mask_file import save_mask
    from fishjax.params.masks import regex_mask

    tiny_config.train.num_steps = 2
    initial = initial_params(tiny_config)
    path = str(tmp_path / "biases.safetensors")
    save_mask(path, regex_mask(initial, r"^encoder/.*bias$"))  # no classifier entries
    res, initial, final = _run(tiny_config, str(tmp_path / "run"), "fish", mask_file=path)
    moved = _changed(initial, final)
    assert moved["classifier/kernel"].all()
    assert all(not m.any() for p, m in moved.items()
               if not (p.startswith("classifier/") or (p.startswith("encoder/")
                                                       and p.endswith("bias"))))


@pytest.mark.parametrize("method,field,value,key", [
    ("fish", "fisher.batch_size", 4, "fisher_batch_size"),
    ("fish", "eligible_regex", r"^encoder/", "eligible_regex"),
    ("fish", "head_regex", r"^(pooler|classifier)/", "head_regex"),
    ("ird", "fisher.batch_size", 4, "fisher_batch_size"),
    ("bitfit", "bitfit_regex", r"dense/bias$", "bitfit_regex"),
    ("sift", "sift.grad_source", "first_n_batches", "grad_source"),
    ("sift", "sift.head_regex", r"^classifier/", "head_regex"),
])
def test_a_saved_mask_is_reused_only_with_the_settings_it_was_selected_with(
        tiny_config, tmp_path, method, field, value, key):
    """Every setting that changes a method's mask is in its file; another value stops the
    run with an error naming it (checked without config.json: the mask file's own check)."""
    from fishjax.core.errors import MaskError

    workdir = str(tmp_path / "run")
    tiny_config.train.num_steps = 1
    tiny_config.method.name = method
    tiny_config.method.fisher.num_samples = 16
    tiny_config.method.ird.pool_size, tiny_config.method.ird.min_samples = 32, 8
    train_and_evaluate(tiny_config, workdir)
    os.unlink(os.path.join(workdir, "config.json"))
    *parents, leaf = field.split(".")
    node = tiny_config.method
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(MaskError, match=key):
        train_and_evaluate(tiny_config, workdir)


def test_sift_mask_records_how_many_batches_it_read(tiny_config, tmp_path):
    from fishjax.core.errors import MaskError

    workdir = str(tmp_path / "run")
    tiny_config.train.num_steps = 1
    tiny_config.method.name = "sift"
    tiny_config.method.sift.grad_source = "first_n_batches"
    tiny_config.method.sift.num_batches = 2
    train_and_evaluate(tiny_config, workdir)
    os.unlink(os.path.join(workdir, "config.json"))
    tiny_config.method.sift.num_batches = 3
    with pytest.raises(MaskError, match="num_batches"):
        train_and_evaluate(tiny_config, workdir)
