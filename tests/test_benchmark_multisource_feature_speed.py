"""benchmarks/multisource/feature_speed.py on the tiny random decoder: both projection
modes run, the JSON holds their rates against the batched gradient, and the held
projection's bytes are d x p floats."""

from __future__ import annotations

import json

from benchmarks.multisource import feature_speed as bench


def test_cli_on_the_tiny_decoder(tiny_decoder_dir, tmp_path):
    out = tmp_path / "features.json"
    bench.main(["--model", tiny_decoder_dir, "--batch", "3", "--seq_len", "16", "--rank", "2",
                "--p", "8", "--steps", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["batched_grad"]["ex_per_s"] > 0 and result["adapter_entries"] > 0
    for mode in ("held", "regenerated"):
        assert result[mode]["ex_per_s"] > 0 and result[mode]["vs_batched_grad"] > 0
    assert result["held"]["projection_bytes"] == 4 * result["adapter_entries"] * 8
    assert result["regenerated"]["projection_bytes"] == 0
