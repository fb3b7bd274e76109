"""benchmarks/multisource/multisource_eval.py and multisource_speed.py on the tiny selection run."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.common import readme_blocks
from benchmarks.multisource import multisource_eval as me
from benchmarks.multisource import multisource_speed as mspeed
from fishjax.select_sources import SourceSelection


@pytest.mark.slow
def test_eval_steps_and_readme_block(tiny_selection, tmp_path):
    config, workdir, _ = tiny_selection
    sel = SourceSelection(config, workdir)
    check = me.first_order_check(sel, scales=(0.01, 0.2))
    assert [r["c"] for r in check] == [0.01, 0.2]
    for row in check:
        assert np.isfinite(row["first_order_error"]) and row["zeroth_order_error"] > 0
        assert row["reference_rows"] == me.REFERENCE_TRAIN_ROWS
        assert 0 <= row["reference_first_order_error"] < row["reference_zeroth_order_error"]
    assert check[0]["mean_abs_change"] < check[1]["mean_abs_change"]  # a larger step moves f
    true = me.true_subsets(sel, 2)
    assert true["n"] == 2 and len(true["runs"]) == 2 and true["true_s"] > 0
    noise = me.true_noise(sel, true, subsets=1)
    assert len(noise["losses"]) == 1 and len(noise["losses"][0]) == 1 + len(me.NOISE_SEEDS)
    assert noise["losses"][0][0] == true["runs"][0]["true_loss"]  # seed 0 is the true run
    assert len(set(noise["losses"][0])) == len(noise["losses"][0])  # other data orders
    assert noise["ratio"] == pytest.approx(noise["within_std"] / noise["across_std"])
    args = SimpleNamespace(true_subsets=2, seeds=(0,), keep_scan=(0.5,))
    names = [j.name for j in me.jobs(sel, sel.estimate()["ranking"], args)]
    noise_names = [f"true_seed/{i}-s{s}" for i in range(me.NOISE_SUBSETS)
                   for s in (1, 2)]
    assert names[:2 + len(noise_names)] == ["true/0", "true/1", *noise_names]
    assert names[-1].startswith("keep/0.5-")
    assert [n.split("-")[0] for n in names[2 + len(noise_names):-1]] == [
        f"downstream/{a}" for a in me.ARMS]
    assert all(np.isfinite(r["true_loss"]) and np.isfinite(r["estimated_loss"])
               for r in true["runs"])
    ranking = sel.estimate()["ranking"]
    down = me.downstream(sel, ranking, seeds=(0,))
    assert set(down) == set(me.ARMS) and all(len(v) == 1 for v in down.values())
    assert len(down["all"][0]["sources"]) == 4
    assert len(down["clean_target_task"][0]["sources"]) == 3  # 4 groups, 1 noisy
    scan = me.keep_scan(sel, ranking, (0.5,))
    assert len(scan) == 1 and scan[0]["sources"] == ranking["ensemble"]["kept"]
    report = {"first_order": check, "true_subsets": true, "true_noise": noise,
              "downstream": down,
              "ranking": ranking, "keep_scan": scan}
    table = me.report_table(report)
    assert "| selected (2) |" in table and "AUROC of ensemble" in table
    assert "Spearman (accuracy)" in table and "| 0.5 | 2 |" in table
    assert "seed-to-seed std of one subset (1 subsets x 3 seeds)" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n<!-- {me.README_BLOCK}:begin report.json -->\n"
                      f"<!-- {me.README_BLOCK}:end -->\n")
    (tmp_path / "report.json").write_text("{}")
    readme_blocks.write(str(readme), me.README_BLOCK, str(tmp_path / "report.json"), table)
    assert readme_blocks.read(str(readme), me.README_BLOCK, str(tmp_path / "report.json")) \
        == table


def test_speed_benchmark_on_synthetic_features():
    src, tgt, phi = mspeed.load_features(None, n=200, n_target=30, p=8)
    out = mspeed.measure(src, tgt, phi, sources=5, subsets=40, repeats=1, c=1e-2)
    assert out["subsets"] == 40 and isinstance(out["median_s"], float)
    assert out["solver_last_step_max"] < 1e-3
    assert os.path.basename(mspeed.__file__) == "multisource_speed.py"


def test_readme_blocks_match_the_committed_reports():
    """Each README multisource-table block is what report_table makes of its report."""
    from fishjax.core.io import read_json

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = os.path.join(repo, "README.md")
    found = readme_blocks.blocks(readme, me.README_BLOCK)
    # the SST-2 design, MRPC by loss (default) and by accuracy, Natural Instructions once
    # its run has written a report: every committed report has its block
    reports = [f"benchmarks/results/{r}.json" for r in (
        "multisource_sst2/report", "multisource/report", "multisource/report_by_accuracy",
        "multisource_ni/report")]
    assert sorted(b.source for b in found) == sorted(
        r for r in reports if os.path.exists(os.path.join(repo, r)))
    assert len(found) >= 3
    for block in found:
        report = read_json(readme_blocks.source_path(readme, block))
        table = me.report_table(report)
        if "downstream" in report and "true_subsets" in report:  # else: a run under way
            assert "selected (" in table and "Spearman" in table
        assert readme_blocks.check(readme, me.README_BLOCK, block.source, table) == [], \
            block.source


def test_first_order_check_pairs_each_output_with_its_own_row(tiny_selection):
    """At a zero step the model's outputs are f* itself: each target row's output must be
    compared with that row's f*, so both errors are zero (rows in several length buckets)."""
    config, workdir, _ = tiny_selection
    sel = SourceSelection(config, workdir)
    parts = sel.model_parts()
    buckets = parts.train.bucket_ids[np.asarray(sel.pool().target)]
    assert len(set(buckets.tolist())) > 1  # batches by bucket: not the rows' order
    (row,) = me.first_order_check(sel, scales=(0.0,))
    assert row["zeroth_order_error"] < 1e-5 and row["first_order_error"] < 1e-5, row
