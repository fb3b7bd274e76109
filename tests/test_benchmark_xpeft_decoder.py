"""benchmarks/xpeft/xpeft_decoder.py: the bank before any profile, each task alone, rates
chosen on validation, one bank for every X-PEFT cell, and (slow) the whole grid on a tiny
decoder."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from benchmarks.instruct import instruct_grid as ig
from benchmarks.xpeft import xpeft_decoder as xd
from conftest import write_bigbench_task
from fishjax.methods.xpeft.bank_file import load_bank


def fake(cell: dict, val: float, test: float = 40.0, ll: float = -1.0, **extra) -> dict:
    macro = {"rougeL": test, "exact_match": 0.0, "answer_loglik": ll}
    return {**cell, "grid_version": ig.GRID_VERSION, "xpeft_decoder_version": xd.GRID_VERSION,
            "macro": {"validation": {**macro, "rougeL": val}, "test": macro},
            "trainable_entries": 600, **extra}


def test_the_bank_comes_first_and_each_cell_trains_one_task():
    todo = xd.planned({}, "o")
    assert [c["id"] for c in todo] == [f"bank-{xd.short(t)}" for t in xd.BANK_TASKS]
    config = ig.make_config(todo[0]["overrides"])
    assert list(config.data.instruct.tasks) == [xd.BANK_TASKS[0]]
    assert list(config.data.instruct.heldout_tasks) == []
    assert config.data.instruct.train_per_task == xd.BANK_ROWS
    assert (config.method.name, config.method.peft.adapter_variant) == ("adapter", "pfeiffer")
    assert list(config.instruct_eval.splits) == ["validation", "test"]
    cells = {c["id"]: fake(c, 10.0) for c in todo}
    todo = xd.planned(cells, "o", ("model.name=\"m\"",))
    task = xd.PROFILE_TASKS[0]
    xp = next(c for c in todo if c["method"] == "xpeft_hard_k2_sum" and c["task"] == task)
    config = ig.make_config(xp["overrides"])
    assert config.method.xpeft.pool == xd.bank_path("o") and config.method.xpeft.k == 2
    assert config.method.xpeft.mixing == "sum" and config.model.name == "m"
    assert list(config.data.instruct.tasks) == [task]
    assert "--set 'model.name=\"m\"'" in xp["command"]
    # no second seed before the rate is chosen; then only at the chosen rate
    assert all(c["seed"] == 0 for c in todo)
    for lr, val in zip(xd.PROFILE_METHODS["adapter"][1], (30.0, 20.0), strict=True):
        c = xd.profile_cell(task, "adapter", lr, 0, "o")
        cells[c["id"]] = fake(c, val)
    seeds = [c for c in xd.planned(cells, "o") if c["method"] == "adapter" and c["seed"] == 1]
    assert [(c["task"], c["lr"]) for c in seeds] == [(task, xd.PROFILE_METHODS["adapter"][1][0])]


def test_report_table_and_one_bank(tmp_path):
    task = xd.PROFILE_TASKS[0]
    cells = {}
    for t in xd.BANK_TASKS:
        c = xd.bank_cell(t, "o")
        cells[c["id"]] = fake(c, 50.0)
    lo, hi = xd.PROFILE_METHODS["xpeft_soft"][1]
    for lr, seed, val, test in ((lo, 0, 20.0, 30.0), (hi, 0, 25.0, 35.0), (hi, 1, 0.0, 45.0)):
        c = xd.profile_cell(task, "xpeft_soft", lr, seed, "o")
        use = [0.0] * len(xd.BANK_TASKS)
        use[1], use[2] = 0.5 + 0.1 * seed, 0.5 - 0.1 * seed
        cells[c["id"]] = fake(c, val, test, -2.0 - seed, bank_fingerprint="f" * 64,
                              bank_use=use)
    z = xd.profile_cell(task, "zero_shot", None, 0, "o")
    cells[z["id"]] = fake(z, 5.0, 10.0, -4.0)
    rep = xd.report(cells)
    soft = rep["profiles"][task]["xpeft_soft"]
    assert soft["lr"] == hi and [s["rougeL"] for s in soft["test"]] == [35.0, 45.0]
    assert rep["bank_fingerprint"] == "f" * 64 and len(rep["bank"]) == len(xd.BANK_TASKS)
    text = xd.table(rep)
    assert f"| xpeft_soft | 40.0 (n=2) | {hi:.0e} ({lo:.0e}: 20.0, {hi:.0e}: 25.0) |" in text
    assert "| zero_shot | 10.0 (n=1) | – |" in text
    assert rep["claims"] == []  # no fresh adapter yet
    alo, ahi = xd.PROFILE_METHODS["adapter"][1]
    for lr, seed, val, test in ((alo, 0, 30.0, 41.5), (ahi, 0, 10.0, 99.0), (alo, 1, 0.0, 41.5)):
        c = xd.profile_cell(task, "adapter", lr, seed, "o")
        cells[c["id"]] = fake(c, val, test)
    zero = {t: 35.0 for t in xd.BANK_TASKS}  # the bank cells test at 40
    zero[xd.BANK_TASKS[0]] = 55.0  # the untuned model beats this bank adapter
    rep = xd.report(cells, zero)
    assert rep["bank"][xd.BANK_TASKS[1]]["zero_shot_test_rougeL"] == 35.0
    (got,) = rep["claims"]  # the adapter at its chosen rate: 41.5, not the 99 of another
    assert got["variant"] == "xpeft_soft" and got["adapter_test"] == 41.5
    assert not got["within_adapter"] and got["over_zero_shot"] and not got["holds"]
    text = xd.table(rep)
    assert f"({len(xd.BANK_TASKS) - 1} of {len(xd.BANK_TASKS)} above it)" in text
    assert "test 40.0 (n=2) vs fresh adapter 41.5 (-1.5; within 1: no)" in text
    # the log-likelihood share: X-PEFT -2.5 (seeds 0, 1), the adapter -1.0, zero-shot -4.0
    assert got["loglik_share"] == pytest.approx(0.5)
    assert ("zero-shot 10.0 (+30.0; >= +3: yes): the claim does not hold; test answer "
            "log-likelihood -2.50 vs -1.00 and -4.00: 50% of the adapter's gain; its mix "
            f"draws most on {xd.short(xd.BANK_TASKS[1])} (0.55), "
            f"{xd.short(xd.BANK_TASKS[2])} (0.45) (even: 0.10).") in text
    other = xd.profile_cell(task, "xpeft_soft", lo, 1, "o")
    cells[other["id"]] = fake(other, 1.0, bank_fingerprint="e" * 64)
    with pytest.raises(SystemExit, match="different banks"):
        xd.report(cells)


@pytest.mark.slow
def test_the_grid_runs_on_a_tiny_decoder(tiny_decoder_dir, tmp_path, monkeypatch):
    names = ("banka", "bankb", "profc")
    for name in names:
        write_bigbench_task(tmp_path / "ni", name, n=24, prefix=f"Definition: Task {name}.")
    monkeypatch.setattr(xd, "BANK_TASKS", names[:2])
    monkeypatch.setattr(xd, "PROFILE_TASKS", names[2:])
    monkeypatch.setattr(xd, "BANK_ROWS", 8)
    monkeypatch.setattr(xd, "PROFILE_ROWS", 8)
    monkeypatch.setattr(xd, "PROFILE_METHODS", {
        "adapter": (xd.ADAPTER, (1e-3,)),
        "xpeft_hard_k2_sum": (xd.PROFILE_METHODS["xpeft_hard_k2_sum"][0], (1e-2,))})
    out = str(tmp_path / "out")
    sets = [f'model.name="{tiny_decoder_dir}"', f'data.instruct.dir="{tmp_path}/ni"',
            f'data.cache_dir="{tmp_path}/cache"', "data.max_length=96",
            "data.buckets=[64, 96]", "data.instruct.validation_per_task=4",
            "data.instruct.test_per_task=4", "instruct_eval.max_new_tokens=4"]
    argv = ["--out", out, "--workroot", str(tmp_path / "work"),
            *[x for s in sets for x in ("--set", s)]]
    xd.main(argv)
    cells = xd.load_cells(out)
    assert set(cells) == {"bank-banka", "bank-bankb", "profc-zero_shot-s0",
                          "profc-adapter-lr1e-03-s0", "profc-adapter-lr1e-03-s1",
                          "profc-xpeft_hard_k2_sum-lr1e-02-s0",
                          "profc-xpeft_hard_k2_sum-lr1e-02-s1"}
    bank = load_bank(xd.bank_path(out))
    assert bank.size == 2
    assert [s["validation_rougeL"] for s in bank.metadata["adapter_scores"]] == [
        cells[f"bank-{xd.short(t)}"]["macro"]["validation"]["rougeL"] for t in names[:2]]
    xp = [c for c in cells.values() if c["method"] == "xpeft_hard_k2_sum"]
    assert {c["bank_fingerprint"] for c in xp} == {bank.fingerprint}
    for c in xp:  # K = 2 of 2 adapters: each slot mixes both, an even share
        assert c["bank_use"] == pytest.approx([0.5, 0.5])
    rep = json.load(open(os.path.join(out, "report.json")))
    assert rep["profiles"]["profc"]["adapter"]["lr"] == 1e-3
    assert json.load(open(os.path.join(out, "bank.json")))["fingerprint"] == bank.fingerprint
    # resumed only as planned: other overrides are refused, the same ones run nothing
    with pytest.raises(SystemExit, match="ran with overrides"):
        xd.main([*argv, "--set", "train.warmup_ratio=0.2"])
    xd.main(argv)
    assert xd.load_cells(out) == cells
    # a later session: the workdirs are gone, the bank rebuilds from the kept adapters
    shutil.rmtree(tmp_path / "work")
    os.remove(xd.bank_path(out))
    assert load_bank(xd.build_bank(out, cells)).fingerprint == bank.fingerprint
    os.remove(xd.bank_path(out))
    with open(xd.adapter_path(out, "bank-banka"), "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\0\0\0\1")
    with pytest.raises(SystemExit, match="bank-banka"):
        xd.build_bank(out, cells)


def test_readme_block_matches_the_committed_report():
    """The README's xpeft-decoder block is what `table` makes of the committed report."""
    from benchmarks.common import readme_blocks
    from fishjax.core.io import read_json

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.join(repo, "benchmarks/results/xpeft_decoder/report.json")
    if not os.path.exists(source):
        pytest.skip("the decoder grid has no committed report yet")
    assert readme_blocks.check(os.path.join(repo, "README.md"), xd.README_BLOCK,
                               source, xd.table(read_json(source))) == []
