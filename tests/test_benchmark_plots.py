"""benchmarks/grid/plots.py: score points, per-layer mask density and Jaccard overlap, PNGs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from benchmarks.grid import cells as grid_cells
from benchmarks.grid import glue, plots
from fishjax.artifacts.mask_file import save_mask
from fishjax.core.tree import count_true

pytest.importorskip("matplotlib")


def _params_like():
    return {"classifier": {"kernel": np.zeros((4, 2))},
            "embeddings": {"word_embeddings": {"embedding": np.zeros((10, 4))}},
            "encoder": {"layer_0": {"w": np.zeros((4, 4))}, "layer_1": {"w": np.zeros((4, 4))}}}


def _mask(layer0: list[int], layer1: list[int], emb: list[int]):
    m = {"classifier": {"kernel": np.ones((4, 2), bool)},  # the head: always selected
         "embeddings": {"word_embeddings": {"embedding": np.zeros((10, 4), bool)}},
         "encoder": {"layer_0": {"w": np.zeros((4, 4), bool)},
                     "layer_1": {"w": np.zeros((4, 4), bool)}}}
    m["encoder"]["layer_0"]["w"].reshape(-1)[layer0] = True
    m["encoder"]["layer_1"]["w"].reshape(-1)[layer1] = True
    m["embeddings"]["word_embeddings"]["embedding"].reshape(-1)[emb] = True
    return m


def _grid(tmp_path):
    out = tmp_path / "grid"
    cells = {}
    specs = [("rte", "fish", 0, 0.60, _mask([0, 1, 2, 3], [], [0, 1])),
             ("rte", "fish", 1, 0.50, _mask([0, 1, 2, 3], [], [0, 1])),  # same as seed 0
             ("mrpc", "fish", 0, 0.80, _mask([], [0, 1, 2, 3], [2, 3])),  # disjoint
             ("rte", "full", 0, 0.70, None)]
    for task, method, seed, score, mask in specs:
        cid = grid_cells.cell_id(task, method, seed)
        workdir = out / "cells" / cid
        workdir.mkdir(parents=True)
        trainable = 72 if mask is None else count_true(mask)
        cells[cid] = {"status": "ok", "task": task, "method": method, "seed": seed,
                      "main_metric": glue.get_task(task).main_metric,
                      "final": {glue.get_task(task).main_metric: score},
                      "trainable_entries": trainable, "total_params": 72,
                      "workdir": "/nonexistent/elsewhere"}
        if mask is not None:
            save_mask(str(workdir / plots.MASK_FILE), mask, {"method": method})
            (workdir / "config.json").write_text(json.dumps(
                {"method": {"name": method, "head_regex": r"^classifier/"}}))
    cells["mrpc-sift-s0"] = {"status": "error", "task": "mrpc", "method": "sift", "seed": 0,
                             "main_metric": "f1_acc_mean", "error": "boom"}
    (out / "results.json").write_text(json.dumps({"cells": cells}))
    return str(out)


def test_mask_numbers(tmp_path):
    out = _grid(tmp_path)
    state = plots.load_results(out)
    found = plots.collect_masks(state, out)
    assert list(found) == ["fish"]  # full has no mask file, the error cell is skipped
    assert [(e["task"], e["seed"]) for e in found["fish"]] == [("rte", 0), ("rte", 1),
                                                              ("mrpc", 0)]
    density = plots.density_table(found)
    assert density["fish"]["rte"] == {"embeddings": 2 / 40, "layer 0": 4 / 16, "layer 1": 0.0}
    assert list(density["fish"]["rte"]) == ["embeddings", "layer 0", "layer 1"]  # no head
    jac = plots.jaccard_table(found)["fish"]
    assert jac["labels"] == ["rte s0", "rte s1", "mrpc s0"]
    m = np.asarray(jac["matrix"])
    assert m[0, 1] == 1.0 and m[0, 2] == 0.0 and np.allclose(np.diag(m), 1.0)  # head excluded
    # rte s0 / mrpc s0 is the only same-seed pair; rte s0 / rte s1 the only same-task pair.
    assert jac["across_tasks"] == {"mean": 0.0, "min": 0.0, "max": 0.0, "pairs": 1}
    assert jac["across_seeds"] == {"mean": 1.0, "min": 1.0, "max": 1.0, "pairs": 1}


def test_score_points_mean_std_and_fraction(tmp_path):
    state = plots.load_results(_grid(tmp_path))
    pts = plots.score_points(state)
    assert pts["rte"]["fish"] == {"fraction": 14 / 72, "mean": 55.0, "std": 5.0, "n": 2}
    assert pts["rte"]["full"]["fraction"] == 1.0
    assert "sift" not in pts.get("mrpc", {})


def test_make_plots_writes_pngs_and_stats(tmp_path):
    out = _grid(tmp_path)
    written = plots.make_plots(out)
    names = sorted(os.path.basename(p) for p in written)
    assert names == ["mask_density_per_layer.png", "mask_jaccard.png", "mask_stats.json",
                     "score_vs_trainable.png"]
    for p in written:
        assert os.path.getsize(p) > 0
        if p.endswith(".png"):
            assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    stats = json.load(open(os.path.join(out, "plots", "mask_stats.json")))
    assert stats["jaccard"]["fish"]["matrix"][0][2] == 0.0
    # Through glue.py --report --plots; and a grid without any mask file still plots scores.
    glue.main(["--out", out, "--report", "--plots"])
    for d in os.listdir(os.path.join(out, "cells")):
        path = os.path.join(out, "cells", d, plots.MASK_FILE)
        if os.path.exists(path):
            os.unlink(path)
    names = sorted(os.path.basename(p) for p in plots.make_plots(out, str(tmp_path / "p2")))
    assert names == ["mask_stats.json", "score_vs_trainable.png"]


def test_bad_results_file(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        plots.load_results(str(tmp_path))
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="expected"):
        plots.load_results(str(tmp_path))
