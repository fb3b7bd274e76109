"""benchmarks/analysis/ird_vs_fish.py: settings, reuse of the main grid's cells, the report."""

from __future__ import annotations

import json
import os

from benchmarks.analysis import ird_vs_fish as ivf


def _cell(task, method, seed, acc, passes, secs, overrides=()):
    return {"status": "ok", "task": task, "method": method, "seed": seed,
            "main_metric": "accuracy", "final": {"accuracy": acc}, "overrides": list(overrides),
            "method_summary": {"fisher_backward_passes": passes, "fisher_seconds": secs}}


def _write(path, cells):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"cells": cells}, f)


def test_overrides_only_where_they_differ_from_the_defaults():
    assert ivf.overrides(1024, 0.005) == []
    assert ivf.overrides(256, 0.001) == ["method.fisher.num_samples=256",
                                         "method.ird.pool_size=256", "method.keep_ratio=0.001"]


def test_reuse_copies_only_matching_finished_fish_cells(tmp_path):
    src = tmp_path / "glue"
    _write(str(src / "results.json"), {
        "rte-fish-s0": _cell("rte", "fish", 0, 0.5, 1024, 40.0),
        "rte-fish-s1": _cell("rte", "fish", 1, 0.6, 1024, 40.0, ["train.num_epochs=1"]),
        "rte-full-s0": _cell("rte", "full", 0, 0.6, 0, 0.0),
        "rte-fish-s2": {**_cell("rte", "fish", 2, 0.5, 1024, 40.0), "status": "error"},
    })
    target = str(tmp_path / "out" / "n1024-k0.005")
    assert ivf.reuse_cells(str(src), target, [], ["rte"], [0, 1, 2]) == 1
    with open(os.path.join(target, "results.json")) as f:
        cells = json.load(f)["cells"]
    assert list(cells) == ["rte-fish-s0"] and cells["rte-fish-s0"]["reused_from"]
    assert ivf.reuse_cells(str(src), target, [], ["rte"], [0, 1, 2]) == 0  # already there


def test_report_pairs_seeds_and_reports_cost_and_losses(tmp_path):
    out = str(tmp_path)
    _write(os.path.join(ivf.setting_dir(out, 256, 0.001), "results.json"), {
        "rte-fish-s0": _cell("rte", "fish", 0, 0.50, 256, 10.0),
        "rte-fish-s1": _cell("rte", "fish", 1, 0.60, 256, 12.0),
        "rte-ird-s0": _cell("rte", "ird", 0, 0.55, 744, 30.0),
        "rte-ird-s1": _cell("rte", "ird", 1, 0.58, 744, 36.0),
    })
    report = ivf.comparison(out, ["rte"], [256, 1024], [0.001])
    row, empty = report["rows"]
    assert row["seeds_paired"] == [0, 1]
    assert [round(x, 6) for x in row["ird_minus_fish"]] == [5.0, -2.0]  # a loss is kept
    assert empty["fish"] == [] and empty["ird"] == []
    table = ivf.markdown(report)
    assert "| rte | 256 | 0.1% | 55.0 ± 5.0 (n=2) | 56.5 ± 1.5 (n=2) | +1.5 ± 3.5 | 1/2 | " \
           "2.91x | 3.00x |" in table
    assert "| rte | 1024 | 0.1% | – (n=0) | – (n=0) | – | – | – | – |" in table


def test_readme_block_is_written_from_the_report(tmp_path):
    out = str(tmp_path / "ivf")
    _write(os.path.join(ivf.setting_dir(out, 256, 0.001), "results.json"), {
        "rte-fish-s0": _cell("rte", "fish", 0, 0.50, 256, 10.0),
        "rte-ird-s0": _cell("rte", "ird", 0, 0.55, 744, 30.0)})
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- ird-table:begin ivf/report.json -->\nold\n"
                      "<!-- ird-table:end -->\nb\n")
    report = ivf.main(["--report", "--out", out, "--tasks", "rte", "--pools", "256",
                       "--keep_ratios", "0.001", "--readme", str(readme)])
    assert readme.read_text() == ("a\n<!-- ird-table:begin ivf/report.json -->\n"
                                  + ivf.markdown(report) + "<!-- ird-table:end -->\nb\n")


def test_repo_readme_ird_tables_match_committed_results():
    """Each ird-table block of the README is the report of its folder's results."""
    from benchmarks.common import readme_blocks
    from fishjax.core.io import read_json

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = os.path.join(repo, "README.md")
    found = readme_blocks.blocks(readme, ivf.README_BLOCK)
    assert found, "README.md must carry its generated ird-table block"
    for block in found:
        report_path = readme_blocks.source_path(readme, block)
        report = read_json(report_path)
        rows = report["rows"]
        tasks = list(dict.fromkeys(r["task"] for r in rows))
        pools = list(dict.fromkeys(r["pool"] for r in rows))
        keeps = list(dict.fromkeys(r["keep_ratio"] for r in rows))
        fresh = ivf.comparison(os.path.dirname(report_path), tasks, pools, keeps)
        assert json.loads(json.dumps(fresh)) == report  # report.json is the results' report
        assert readme_blocks.check(readme, ivf.README_BLOCK, report_path,
                                   ivf.markdown(report)) == []
