"""benchmarks/speed/decoder.py on the tiny random decoder: every timer runs, the JSON has
the ratios per allocator, and an unknown allocator is a one-line error before any work."""

from __future__ import annotations

import json

import pytest

from benchmarks.speed import decoder as bench


def test_unknown_or_missing_allocator_fails_first(tmp_path):
    with pytest.raises(SystemExit, match="unknown 'mimalloc'"):
        bench.main(["--allocators", "system,mimalloc", "--json", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
    assert bench.preload_library("system") is None


def test_timed_reports_the_median_call():
    calls = []
    t = bench.timed(lambda: calls.append(1), steps=3)
    assert len(calls) == 4 and set(t) == {"s", "sys_s", "minor_faults"} and t["s"] >= 0


@pytest.mark.slow
def test_cli_on_the_tiny_decoder(tiny_decoder_dir, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("FISHJAX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "speed.json"
    bench.main(["--model", tiny_decoder_dir, "--batch", "2", "--seq_len", "16", "--steps", "1",
                "--threads", "1", "--gen_prompt", "4", "--gen_tokens", "3",
                "--allocators", "system", "--methods", "", "--json", str(out)])
    result = json.loads(out.read_text())["allocators"]["system"]
    for key in ("train_vs_torch", "generation_vs_torch", "fisher_vs_batched_grad"):
        assert result["ratios"][key] > 0
    assert result["fishjax"]["train_step"]["s"] > 0
    assert result["torch"]["generation"]["tokens_per_s"] > 0
