"""benchmarks/instruct/instruct_grid.py: the cells it plans, the learning rate it picks on
validation, the budgets it sets, and the report rebuilt from cell files only."""

from __future__ import annotations

import json

import pytest

from benchmarks.instruct import instruct_grid as grid
from configs import instruct


def fake_cell(method, budget, lr, seed, val, test=50.0, entries=1_382_400, phase="lr"):
    macro = {"rougeL": test, "exact_match": test / 2, "answer_loglik": -1.0}
    return {"id": grid.cell_id(method, budget, lr, seed), "method": method, "budget": budget,
            "lr": lr, "seed": seed, "phase": phase, "command": "c",
            "grid_version": grid.GRID_VERSION,
            "macro": {"validation": {"rougeL": val, "exact_match": 0.0, "answer_loglik": -1.0},
                      "test": macro, "heldout": macro},
            "trainable_entries": entries, "optimizer_state_bytes": 8 * entries,
            "peak_rss_mib": 3000.0, "wall_s": 600.0}


def test_budgets_match_lora_count():
    config = grid.make_config(grid.overrides("sift", grid.EQUAL, 1e-4, 1))
    assert config.method.sift.rate * instruct.SIFT_ELIGIBLE == pytest.approx(
        instruct.EQUAL_COUNT)
    assert (config.seed, config.train.learning_rate) == (1, 1e-4)
    fish = grid.make_config(grid.overrides("fish", 0.001, 3e-4, 0))
    assert fish.method.keep_ratio == 0.001 and fish.method.name == "fish"
    # LoRA rank 24 on q_proj/v_proj of 30 layers: 24 x (576 + 576 + 576 + 192) x 30
    assert 24 * (576 + 576 + 576 + 192) * 30 == instruct.EQUAL_COUNT
    assert grid.make_config([]).method.peft.rank == 24


def test_phases_wait_for_the_learning_rate_grid():
    cells = {}
    assert grid.planned("seeds", cells, 2, "o") == []
    for lr, val in zip(grid.METHODS["fish"], (30.0, 40.0), strict=True):
        c = fake_cell("fish", grid.EQUAL, lr, 0, val)
        cells[c["id"]] = c
    assert grid.chosen_lr("fish", cells) == grid.METHODS["fish"][1]
    seeds = grid.planned("seeds", cells, 3, "o")
    assert [c["id"] for c in seeds] == [grid.cell_id("fish", grid.EQUAL, 3e-4, s)
                                        for s in (1, 2)]
    budget = grid.planned("budget", cells, 2, "o")
    assert {c["budget"] for c in budget} == set(grid.BUDGETS)
    assert all("--only" in c["command"] for c in budget)


def test_report_and_table_from_cell_files(tmp_path):
    folder = tmp_path / "cell_results"
    folder.mkdir()
    cells = [fake_cell("fish", grid.EQUAL, 1e-4, 0, 30.0, test=40.0),
             fake_cell("fish", grid.EQUAL, 3e-4, 0, 45.0, test=50.0),
             fake_cell("fish", grid.EQUAL, 3e-4, 1, 44.0, test=54.0, phase="seeds"),
             fake_cell("fish", 0.001, 3e-4, 0, 20.0, test=30.0, entries=134_515,
                       phase="budget"),
             fake_cell("full", None, 1e-5, 0, 10.0, entries=instruct.TOTAL_WEIGHTS)]
    for c in cells:
        (folder / f"{c['id']}.json").write_text(json.dumps(c))
    rep = grid.report(grid.load_cells(str(tmp_path)))
    fish = rep["methods"]["fish"]
    assert fish["lr"] == 3e-4 and fish["seeds"] == [0, 1]
    assert fish["test"]["rougeL"][0] == pytest.approx(52.0)
    assert fish["validation_by_lr"] == {"1e-04": cells[0]["macro"]["validation"],
                                        "3e-04": cells[1]["macro"]["validation"]}
    assert rep["methods"]["full"]["lr"] is None  # its second rate has no cell yet
    assert [p["budget"] for p in rep["curve"]] == [0.001, grid.EQUAL]
    text = grid.table(rep)
    assert "| fish | 1.03% | 3e-04 (1e-04: 30.0, 3e-04: 45.0) | 2 | 52.0 ± 2.8 |" in text
    assert "| full | | (1e-05: 10.0) | (pending) |" in text
    grid.plot(rep, str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").stat().st_size > 0
    bad = dict(cells[0], grid_version=0, id="x")
    (folder / "x.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="grid version 0"):
        grid.load_cells(str(tmp_path))


def test_claims_compare_test_means_and_say_when_one_fails():
    def row(mean, std=0.0, seeds=(0,), state=8):
        return {"test": {"rougeL": [mean, std]}, "seeds": list(seeds),
                "optimizer_state_bytes": state}
    rows = {"zero_shot": row(20.0), "full": row(47.0, 1.0, (0, 1), state=1000),
            "sift": row(44.5, state=40), "fish": row(46.0), "random_mask": row(46.5),
            "lora": row(40.0), "lora_fish": {"lr": None}}  # pending: no claim
    got = {c["claim"]: c for c in grid.claims(rows)}
    assert got["every tuned method beats zero-shot (the weakest shown)"]["a"] == "lora"
    assert not got["SIFT within 2 points of full fine-tuning"]["holds"]  # -2.5
    assert got["FISH within 2 points of full fine-tuning"]["difference"] == pytest.approx(-1.0)
    assert not got["FISH >= random mask at equal count"]["holds"]
    assert "LoRA-FISH >= LoRA at equal count" not in got
    state = got["SIFT's optimizer state <= 3% of full fine-tuning's"]
    assert state["share"] == pytest.approx(0.04) and not state["holds"]
    text = grid.claims_table(list(got.values()))
    assert ("| SIFT within 2 points of full fine-tuning | sift 44.5 (1 seed) | full 47.0 ± 1.0 "
            "(2 seeds) | -2.5 | >= -2 | does not hold |") in text


def test_readme_block_matches_the_committed_report():
    """The README's instruct-table is what `table` makes of the committed report, and the
    report is what `report` makes of the committed cells."""
    import os

    from benchmarks.common import readme_blocks
    from fishjax.core.io import read_json

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(repo, "benchmarks", "results", "instruct")
    rep = read_json(os.path.join(out, "report.json"))
    assert json.loads(json.dumps(grid.report(grid.load_cells(out)))) == rep
    assert readme_blocks.read(os.path.join(repo, "README.md"), grid.README_BLOCK,
                              "benchmarks/results/instruct/report.json") == grid.table(rep)


def test_a_stop_file_stops_the_grid_between_cells(tmp_path, monkeypatch):
    """`touch <workroot>/STOP` while a cell runs: that cell is recorded, no other starts;
    a new grid run clears the request."""
    started = []

    def fake_run_module(module, argv, **kwargs):
        cell = json.loads(argv[argv.index("--cell_json") + 1])
        started.append(cell["id"])
        (tmp_path / "work" / "STOP").touch()  # asked to stop while this cell runs
        record = {**fake_cell("zero_shot", None, None, 0, 10.0, entries=0), **cell}

        class Proc:
            stdout = grid.cli.RESULT + json.dumps(record)
            stderr = ""
        return Proc()

    monkeypatch.setattr(grid.cli, "run_module", fake_run_module)
    args = grid.argparse.Namespace(out=str(tmp_path / "out"), workroot=str(tmp_path / "work"),
                                   phase="all", only=None, seeds=2, jobs=1,
                                   train_per_task=grid.TRAIN_PER_TASK)
    grid.run_grid(args)
    assert len(started) == 1 and (tmp_path / "out" / "cell_results" /
                                  f"{started[0]}.json").exists()
    grid.run_grid(args)  # a new run clears the request and goes on
    assert len(started) == 2 and started[1] != started[0]

