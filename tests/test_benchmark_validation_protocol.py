"""benchmarks/grid/glue.py --select_on=validation: a held-out split of the training rows, every
learning rate on the first seed, the one best on validation (never dev) on the others, the
table with the chosen rate, every tried rate and majority-class rows marked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.common.tiny_model import write_tiny_rte
from benchmarks.grid import glue
from benchmarks.grid import validation_protocol as vp
from fishjax.data.row_split import load_row_split


def _rte_folder(tmp_path, n=40):
    return write_tiny_rte(str(tmp_path), n)


@pytest.mark.slow
def test_validation_grid_chooses_on_validation_and_reports_dev(tiny_model_dir, tmp_path):
    out = str(tmp_path / "out")
    argv = ["--select_on", "validation", "--glue_dir", _rte_folder(tmp_path), "--tasks", "rte",
            "--methods", "full", "--seeds", "0,1", "--model", tiny_model_dir, "--out", out,
            "--lr_grid", "full=1e-4/3e-3", "--validation_fraction", "0.25",
            "--set", f"data.cache_dir={tmp_path}/cache", "--set", "train.num_steps=2",
            "--set", "train.batch_size=8", "--set", "train.export=False",
            "--set", "data.max_length=32", "--set", "data.buckets=(16, 32)"]
    state = glue.main(argv)
    cells = state["cells"]
    # every rate on seed 0 (a two-rate grid: the best is an edge, so the grid extends past
    # it unless the two tie), then the chosen rate (and only it) on seed 1
    sel = state["selection"]["rte"]["full"]
    chosen = sel["chosen_lr"]
    tried = [float(k) for k in sel["validation_by_lr"]]
    assert {1e-4, 3e-3} <= set(tried) and len(tried) <= 2 + vp.MAX_EXTENSIONS
    assert set(cells) == {*(vp.cell_id("rte", "full", lr, 0) for lr in tried),
                          vp.cell_id("rte", "full", chosen, 1)}
    scores = {lr: cells[vp.cell_id("rte", "full", lr, 0)]["validation_score"] for lr in tried}
    assert chosen == max(tried, key=lambda lr: (scores[lr], -lr))
    assert sel["validation_by_lr"] == {vp.lr_id(lr): s for lr, s in scores.items()}
    assert len(sel["dev_scores"]) == 2
    # the validation rows: 25% of the 40 training rows, held out of training
    split = load_row_split(f"{out}/splits/rte-validation.json")
    assert len(split.validation) == 10 and len(split.train) == 30
    assert not set(split.validation) & set(split.train)
    for c in cells.values():
        assert c["learning_rate"] in tried and "validation/accuracy" in c["final"]
        assert c["majority_dev"] == pytest.approx(6 / 9)  # 6 of the 9 dev rows: entailment
    table = open(f"{out}/results.md").read()
    assert f"| {vp.lr_id(chosen)}" in table and "0.0001: " in table
    assert json.load(open(f"{out}/results.json"))["selection"] == state["selection"]
    # resumed: nothing left to run
    again = glue.main(argv)
    assert set(again["cells"]) == set(cells)


def test_todo_orders_rates_first_then_the_chosen_rate():
    def ok(task, method, lr, seed, val):
        return {"status": "ok", "task": task, "method": method, "seed": seed,
                "main_metric": "accuracy", "final": {"validation/accuracy": val,
                                                     "dev/accuracy": 0.5}}

    rates = {"fish": (1e-3, 2e-3)}
    plan = vp.todo(["rte"], ["fish"], [0, 1, 2], rates.get, {})
    assert plan == [("rte", "fish", 1e-3, 0), ("rte", "fish", 2e-3, 0)]
    cells = {vp.cell_id("rte", "fish", 1e-3, 0): ok("rte", "fish", 1e-3, 0, 0.7),
             vp.cell_id("rte", "fish", 2e-3, 0): ok("rte", "fish", 2e-3, 0, 0.7)}
    # a tie goes to the smaller rate
    assert vp.todo(["rte"], ["fish"], [0, 1, 2], rates.get, cells) == [
        ("rte", "fish", 1e-3, 1), ("rte", "fish", 1e-3, 2)]
    summary = vp.selection_summary(cells, ["rte"], ["fish"], [0], rates.get)
    assert summary["rte"]["fish"]["chosen_lr"] == 1e-3


def test_table_sorts_rates_by_value_and_marks_a_choice_at_the_grid_edge():
    def entry(chosen, scores):
        return {"chosen_lr": chosen, "validation_by_lr": scores, "dev_scores": [0.8],
                "majority_dev": 0.5, "at_majority": False}

    summary = {"sst2": {
        "top": entry(1e-4, {"0.0001": 0.9, "3e-05": 0.8, "5e-05": 0.85}),
        "mid": entry(5e-5, {"0.0001": 0.8, "3e-05": 0.8, "5e-05": 0.9}),
        "low": entry(3e-5, {"0.0001": 0.7, "3e-05": 0.9, "5e-05": 0.8}),
        "partial": entry(1e-4, {"0.0001": 0.9, "3e-05": None, "5e-05": 0.8})}}
    rows = vp.markdown_table(summary, ["sst2"], list(summary["sst2"])).splitlines()[2:]
    assert "| 0.0001 (grid top) (3e-05: 80.0, 5e-05: 85.0, 0.0001: 90.0) |" in rows[0]
    assert "| 5e-05 (3e-05: 80.0" in rows[1]
    assert "| 3e-05 (grid bottom) (" in rows[2]
    # not every rate ran: no mark yet
    assert "| 0.0001 (3e-05: –, 5e-05: 80.0, 0.0001: 90.0) |" in rows[3]


def test_a_best_rate_at_the_grid_edge_extends_the_grid_before_other_seeds():
    def ok(lr, val, seed=0):
        return {vp.cell_id("sst2", "fish", lr, seed): {
            "status": "ok", "task": "sst2", "method": "fish", "seed": seed,
            "main_metric": "accuracy", "final": {"validation/accuracy": val,
                                                 "dev/accuracy": 0.8}}}

    grid = {"fish": (6e-4, 2e-4, 2e-3)}  # any order: tried sorted
    assert vp.next_rate((2e-4, 6e-4, 2e-3), True) == 6e-3
    assert vp.next_rate((2e-4, 6e-4, 2e-3), False) == 6e-5
    cells = {**ok(2e-4, 0.80), **ok(6e-4, 0.85), **ok(2e-3, 0.88)}
    # the top rate wins: one more rate above it on seed 0, no other seed yet
    assert vp.todo(["sst2"], ["fish"], [0, 1], grid.get, cells) == [("sst2", "fish", 6e-3, 0)]
    assert vp.choose_lr(cells, "sst2", "fish", grid["fish"], 0)[0] is None
    cells.update(ok(6e-3, 0.86))  # past the optimum: 2e-3 chosen, seed 1 runs there
    assert vp.choose_lr(cells, "sst2", "fish", grid["fish"], 0) == (2e-3, {
        "0.0002": 0.80, "0.0006": 0.85, "0.002": 0.88, "0.006": 0.86})
    assert vp.todo(["sst2"], ["fish"], [0, 1], grid.get, cells) == [("sst2", "fish", 2e-3, 1)]
    # still rising: at most MAX_EXTENSIONS rates are added, then the edge is chosen
    cells.update({**ok(6e-3, 0.90), **ok(2e-2, 0.91)})
    chosen, tried = vp.choose_lr(cells, "sst2", "fish", grid["fish"], 0)
    assert (chosen, len(tried)) == (2e-2, 3 + vp.MAX_EXTENSIONS)
    # the bottom edge extends downward; a tie at an edge extends nothing
    low = {**ok(2e-4, 0.9), **ok(6e-4, 0.8), **ok(2e-3, 0.7)}
    assert vp.todo(["sst2"], ["fish"], [0], grid.get, low) == [("sst2", "fish", 6e-5, 0)]
    tie = {**ok(2e-4, 0.5), **ok(6e-4, 0.5), **ok(2e-3, 0.5)}
    assert vp.choose_lr(tie, "sst2", "fish", grid["fish"], 0)[0] == 2e-4
    # a one-rate recipe is never extended
    one = ok(2e-4, 0.9)
    assert vp.choose_lr(one, "sst2", "fish", (2e-4,), 0) == (2e-4, {"0.0002": 0.9})


def test_majority_rows_are_marked_and_bad_grids_refused():
    summary = {"rte": {"fish": {"chosen_lr": 5e-4, "validation_by_lr": {"0.0005": 0.5},
                                "dev_scores": [0.527, 0.527], "majority_dev": 0.527,
                                "at_majority": True}}}
    assert "52.7 ± 0.0 (n=2) = majority" in vp.markdown_table(summary, ["rte"], ["fish"])
    with pytest.raises(SystemExit, match="lr_grid"):
        vp.parse_lr_grid("fish=0.1/nope")
    with pytest.raises(SystemExit, match="no learning-rate grid"):
        vp.grid_of("mystery", "mystery", vp.parse_lr_grid(""))
    rows = vp.validation_rows(10_000)
    assert len(rows) == 500 and np.all(np.diff(rows) > 0)  # 10% capped at 500


def test_a_crashing_cell_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    calls = []

    def broken(task, method, seed, args, config=None, cid=None):
        calls.append(cid)
        raise ValueError("boom")

    monkeypatch.setattr(glue, "run_cell", broken)
    monkeypatch.setattr(glue, "validation_cell_config", lambda *a: None)
    monkeypatch.setattr(vp, "majority_score", lambda task, data_dir: None)
    state = glue.main(["--select_on", "validation", "--tasks", "rte", "--methods", "full",
                       "--seeds", "0,1", "--lr_grid", "full=1e-4/3e-3",
                       "--out", str(tmp_path / "out")])
    assert sorted(calls) == ["rte-full-lr0.0001-s0", "rte-full-lr0.003-s0"]  # once each
    assert {c["status"] for c in state["cells"].values()} == {"error"}
    assert state["selection"]["rte"]["full"]["chosen_lr"] is None
