"""The README's code runs as written: the "Adding a method" example trains on the tiny model,
the "Your own model" example trains a FISH mask on a small MLP."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from conftest import initial_params, latest_trainable, readme_block
from fishjax.core.errors import ConfigError
from fishjax.core.tree import leaf_paths
from fishjax.methods import available_methods
from fishjax.train.trainer import train_and_evaluate
from fishjax.train.validation import validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def layernorm_method():
    """Registers the README's example method once (the registry is per process)."""
    if "layernorm" not in available_methods():
        exec(compile(readme_block("method-example"), "README.md:method-example", "exec"), {})
    return "layernorm"


def test_readme_example_method_trains_only_layernorm_and_head(layernorm_method, tiny_config,
                                                              tmp_path):
    tiny_config.method.name = layernorm_method
    tiny_config.train.num_steps = 3
    workdir = str(tmp_path / "ln")
    res = train_and_evaluate(tiny_config, workdir)
    initial, final = initial_params(tiny_config), latest_trainable(workdir)
    moved = {p for p, a, b in zip(leaf_paths(initial), jax.tree_util.tree_leaves(initial),
                                   jax.tree_util.tree_leaves(final), strict=True)
             if np.any(np.asarray(a) != np.asarray(b))}
    assert moved and all("LayerNorm/" in p or p.startswith("classifier/") for p in moved)
    assert any("LayerNorm/" in p for p in moved) and any(p.startswith("classifier/")
                                                         for p in moved)
    assert res["method_summary"]["trainable_entries"] < 0.1 * sum(
        np.size(x) for x in jax.tree_util.tree_leaves(initial))


def test_readme_example_method_validates_its_options(layernorm_method, tiny_config):
    tiny_config.method.name = layernorm_method
    tiny_config.method.head_regex = "(unclosed"
    with pytest.raises(ConfigError, match=r"config\.method\.head_regex"):
        validate_config(tiny_config)


def test_readme_own_model_example_trains_only_the_fish_mask():
    """The "Your own model" snippet runs as written; only masked entries move, and the
    loss falls."""
    namespace: dict = {}
    exec(compile(readme_block("own-model"), "README.md:own-model", "exec"), namespace)
    params, mask, batches = namespace["params"], namespace["mask"], namespace["batches"]
    initial = namespace["model"].init(jax.random.PRNGKey(1), namespace["x"][:1])["params"]
    selected = sum(int(np.sum(m)) for m in jax.tree_util.tree_leaves(mask))
    assert selected == namespace["fishjax"].budget_k(namespace["n"], 0.05) > 0
    for m, a, b in zip(jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(initial),
                       jax.tree_util.tree_leaves(params), strict=True):
        moved = np.asarray(a) != np.asarray(b)
        assert not np.any(moved & ~np.asarray(m)), "an entry outside the mask moved"
    assert any(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(
        jax.tree_util.tree_leaves(initial), jax.tree_util.tree_leaves(params), strict=True))

    def mean_loss(p):
        return float(np.mean([namespace["loss_fn"](p, b) for b in batches]))

    assert mean_loss(params) < 0.75 * mean_loss(initial)
