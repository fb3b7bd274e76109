"""The README's code runs as written: the "Adding a method" example trains on the tiny model."""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import pytest

from conftest import initial_params, latest_trainable
from fishjax.core.errors import ConfigError
from fishjax.core.tree import leaf_paths
from fishjax.methods import available_methods
from fishjax.train.trainer import train_and_evaluate
from fishjax.train.validation import validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _block(name: str) -> str:
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    hit = re.search(rf"<!-- {name}:begin -->\n```python\n(.*?)```\n<!-- {name}:end -->", text,
                    re.S)
    assert hit, f"README.md has no {name} block"
    return hit.group(1)


@pytest.fixture(scope="module")
def layernorm_method():
    """Registers the README's example method once (the registry is per process)."""
    if "layernorm" not in available_methods():
        exec(compile(_block("method-example"), "README.md:method-example", "exec"), {})
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
