"""benchmarks/speed/train_throughput.py on the tiny model: both timers run, JSON has its keys."""

from __future__ import annotations

import json

import pytest

from benchmarks.speed import train_throughput as tt


def test_config_and_batches():
    config = tt.fishjax_config("minilm-l6", ["model.attention_dropout=0.0"])
    assert (config.method.name, config.train.batch_size, config.data.buckets) == (
        "full", 32, (128,))
    assert config.model.attention_dropout == 0.0
    b = tt.make_batches(2, 30522)
    assert len(b) == 2 and b[0]["input_ids"].shape == (32, 128)
    assert (b[0]["input_ids"][:, 0] == 101).all() and b[0]["input_ids"].max() < 30522


@pytest.mark.slow
def test_timers_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FISHJAX_CACHE", str(tmp_path / "cache"))
    times = tt.time_fishjax(tiny_model_dir, steps=2, warmup=1, overrides=[], batch=8, seq=16)
    assert len(times) == 2 and all(t > 0 for t in times)
    pytest.importorskip("torch")
    times = tt.time_torch(tiny_model_dir, steps=1, warmup=1, threads=1, batch=8, seq=16)
    assert len(times) == 1 and times[0] > 0


@pytest.mark.slow
def test_cli_writes_json_with_the_ratio_to_torch(tiny_model_dir, tmp_path, monkeypatch):
    """One CLI run, both frameworks and two dropout PRNGs (each in its own process)."""
    pytest.importorskip("torch")
    monkeypatch.setenv("FISHJAX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tt.json"
    res = tt.main(["--model", tiny_model_dir, "--steps", "1", "--warmup", "1", "--batch", "8",
                   "--seq_len", "16", "--threads", "1", "--dropout_prngs", "rbg,off",
                   "--json", str(out)])
    saved = json.load(open(out))
    assert saved["fishjax_ex_per_s"] == res["fishjax_ex_per_s"] > 0
    assert (saved["batch"], saved["seq_len"], saved["model"]) == (8, 16, tiny_model_dir)
    assert set(saved["dropout_prngs"]) == {"rbg", "off"}
    assert all(v["ex_per_s"] > 0 and len(v["step_s"]) == 1
               for v in saved["dropout_prngs"].values())
    assert isinstance(res["ratio_vs_torch"], float) and res["ratio_vs_torch"] > 0
    assert saved["ratio_vs_torch"] == pytest.approx(
        res["fishjax_ex_per_s"] / res["torch_ex_per_s"])
    rbg = res["dropout_prngs"]["rbg"]
    assert rbg["ratio_vs_torch"] == pytest.approx(rbg["ex_per_s"] / res["torch_ex_per_s"])


@pytest.mark.slow
def test_cli_without_torch_writes_no_ratio_and_rejects_bad_flags(tiny_model_dir, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("FISHJAX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tt.json"
    tt.main(["--model", tiny_model_dir, "--steps", "1", "--warmup", "1", "--batch", "8",
             "--seq_len", "16", "--frameworks", "fishjax", "--json", str(out)])
    saved = json.load(open(out))
    assert saved["fishjax_ex_per_s"] > 0
    assert saved["torch_ex_per_s"] is None and saved["ratio_vs_torch"] is None
    with pytest.raises(SystemExit, match="philox"):
        tt.main(["--model", tiny_model_dir, "--dropout_prngs", "philox"])
    with pytest.raises(SystemExit):
        tt.main(["--frameworks", "jax2"])
