"""benchmarks/xpeft/xpeft_memory.py: the size arithmetic and the serving comparison (tiny model)."""

from __future__ import annotations

import math

import jax

from benchmarks.xpeft import xpeft_memory as xm
from fishjax.models import EncoderConfig, load_model


def test_bert_base_shaped_sizes_are_the_arithmetic():
    s = xm.profile_sizes(xm._abstract_params(EncoderConfig()), 48, 100)
    assert s["layers"] == 12
    assert s["adapter_tuning_bytes"] == 4 * 12 * (2 * 768 * 48 + 48 + 768) == 3_578_112
    assert s["xpeft_hard_bytes"] == math.ceil(2 * 12 * 100 / 8) == 300
    assert s["xpeft_soft_bytes"] == 2 * 2 * 12 * 100
    assert s["head_bytes"] == 4 * (768 * 2 + 2)


def test_serving_comparison_on_the_tiny_model(tiny_model_dir):
    model = load_model(tiny_model_dir, 2, key=jax.random.PRNGKey(0))
    out = xm.serving(model, n=4, profiles=3, batch=6, seq=16, repeats=2)
    assert isinstance(out["mixed_vs_single"], float) and out["mixed_vs_single"] > 0
    assert len(out["times"]["mixed"]) == len(out["times"]["single"]) == 2
    assert out["compilations"] == 1
    files = xm.profile_file_sizes(model, 2, 8)
    assert files["hard_file_bytes"] < files["soft_file_bytes"]


def test_readme_table_matches_the_committed_result():
    """The README's xpeft-memory block is what readme_table makes of the committed JSON."""
    import os

    from benchmarks.common import readme_blocks
    from fishjax.core.io import read_json

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.join(repo, "benchmarks", "results", "xpeft_memory.json")
    table = xm.readme_table(read_json(source))
    assert "X-PEFT hard" in table and "x the time" in table
    assert readme_blocks.check(os.path.join(repo, "README.md"), xm.README_BLOCK, source,
                               table) == []
