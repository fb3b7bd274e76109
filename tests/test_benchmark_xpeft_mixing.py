"""benchmarks/xpeft/mixing_effect.py on the tiny encoder: with one adapter per slot the
mean and the sum are the same mix; with two, the sum moves the features further."""

from __future__ import annotations

import json

from benchmarks.xpeft import mixing_effect as bench


def test_cli_on_the_tiny_encoder(tiny_model_dir, tmp_path):
    out = tmp_path / "mixing.json"
    bench.main(["--model", tiny_model_dir, "--pool_size", "4", "--ks", "1,2", "--draws", "1",
                "--rows", "8", "--json", str(out)])
    result = json.loads(out.read_text())["by_k"]
    for name in ("pooler", "cls", "mean"):
        assert result["1"]["mean"][name] == result["1"]["sum"][name] > 0
        assert result["2"]["sum"][name] > result["2"]["mean"][name]
