"""benchmarks/speed/xla_cpu_flags.py on the tiny model: each variant in its own process, rates and
speedups over `default` in the JSON, a flag XLA does not know reported, not fatal."""

from __future__ import annotations

import json

import pytest

from benchmarks.speed import xla_cpu_flags as xf


@pytest.mark.slow
def test_variants_run_in_their_own_processes_and_report_speedups(tiny_model_dir, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("FISHJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(xf.VARIANTS, "bogus", "--xla_cpu_no_such_flag=true")
    out = tmp_path / "flags.json"
    xf.main(["--model", tiny_model_dir, "--variants", "default,single_eigen,bogus",
             "--steps", "1", "--warmup", "1", "--fisher_n", "8", "--chunks", "1", "--seq_len", "16",
             "--json", str(out)])
    saved = json.load(open(out))
    default, single = saved["variants"]["default"], saved["variants"]["single_eigen"]
    assert default["train_ex_per_s"] > 0 and default["fisher_by_chunk"]["1"] > 0
    assert default["speedup"] == {"train": 1.0, "fisher": 1.0}
    assert isinstance(single["speedup"]["train"], float) and single["speedup"]["fisher"] > 0
    assert "no_such_flag" in saved["variants"]["bogus"]["error"]
    assert saved["cpu"] and saved["flags"]["single_eigen"] == xf.VARIANTS["single_eigen"]
    with pytest.raises(SystemExit, match="unknown"):
        xf.main(["--variants", "default,nope"])
