"""benchmarks/grid/merge_results.py: parallel grid folders merged into one results.json."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.grid import cells as grid_cells
from benchmarks.grid import glue, merge_results
from fishjax.core.io import file_sha256


def _cell(task, method, seed, score, overrides=(), status="ok"):
    metric = glue.get_task(task).main_metric
    return {"status": status, "task": task, "method": method, "seed": seed,
            "main_metric": metric, "final": {metric: score}, "trainable_entries": 5,
            "total_params": 1000, "overrides": list(overrides)}


def _part(root, name, cells):
    folder = root / name
    state = {"cells": {}}
    for c in cells:
        cid = grid_cells.cell_id(c["task"], c["method"], c["seed"])
        state["cells"][cid] = {**c, "workdir": str(folder / "cells" / cid)}
        os.makedirs(folder / "cells" / cid / "checkpoints")
        (folder / "cells" / cid / "mask.safetensors").write_bytes(cid.encode())
    (folder / "results.json").write_text(json.dumps(state))
    return str(folder)


def test_merge_copies_cells_and_files_variants_by_their_overrides(tmp_path):
    a = _part(tmp_path, "a", [_cell("rte", "fish", 0, 0.5), _cell("rte", "lora", 0, 0.6),
                              _cell("rte", "ird", 0, 0.1, status="error")])
    b = _part(tmp_path, "b", [_cell("rte", "lora_fish", 0, 0.55,
                                    [glue.AT_INIT, "method.peft.selection=random"]),
                              _cell("rte", "lora_fish", 1, 0.54,
                                    [glue.AT_INIT, "method.peft.selection=random",
                                     "train.num_epochs=1"])])
    out = str(tmp_path / "merged")
    state = merge_results.merge(out, [a, b])
    cells = state["cells"]
    assert sorted(cells) == ["rte-fish-s0", "rte-lora-s0", "rte-lora_fish-s1",
                             "rte-lora_fish_random-s0"]  # failed cells are not merged
    v = cells["rte-lora_fish_random-s0"]
    assert v["method"] == "lora_fish_random" and v["base_method"] == "lora_fish"
    assert v["workdir"] == os.path.join(out, "cells", "rte-lora_fish_random-s0")
    assert v["merged_from"] == os.path.join(b, "results.json")
    # Extra overrides make it another run: it keeps its own method name.
    assert cells["rte-lora_fish-s1"]["method"] == "lora_fish"
    folder = os.path.join(out, "cells", "rte-lora_fish_random-s0")
    assert open(os.path.join(folder, "mask.safetensors"), "rb").read() == \
        b"rte-lora_fish-s0"
    assert not os.path.exists(os.path.join(folder, "checkpoints"))
    assert json.load(open(os.path.join(out, "results.json"))) == state
    # The merged folder is a normal grid folder: the report reads it, variants included.
    table = glue.results_table(state)
    assert "| lora_fish_random | 55.0 ± 0.0 (n=1) |" in table
    # Merging the same sources again changes nothing.
    assert merge_results.merge(out, [a, b]) == state


def test_merge_refuses_conflicting_results_and_writes_nothing(tmp_path):
    a = _part(tmp_path, "a", [_cell("rte", "fish", 0, 0.5)])
    b = _part(tmp_path, "b", [_cell("rte", "fish", 0, 0.7)])
    out = tmp_path / "merged"
    with pytest.raises(SystemExit, match="rte-fish-s0: .* different finished result"):
        merge_results.merge(str(out), [a, b])
    assert not out.exists()
    with pytest.raises(SystemExit, match="not found"):
        merge_results.merge(str(out), [str(tmp_path / "nope")])


def test_replace_starts_afresh_and_reused_cells_keep_their_workdir(tmp_path):
    a = _part(tmp_path, "a", [_cell("rte", "fish", 0, 0.5)])
    out = str(tmp_path / "merged")
    merge_results.merge(out, [a])
    b = _part(tmp_path, "b", [_cell("rte", "fish", 0, 0.7)])  # a rerun: new result
    state = merge_results.merge(out, [b], replace=True)
    assert state["cells"]["rte-fish-s0"]["final"]["accuracy"] == 0.7
    # A cell whose folder is elsewhere (reused from another grid) keeps its recorded path.
    c = tmp_path / "c"
    c.mkdir()
    cell = {**_cell("rte", "ird", 0, 0.6), "workdir": "/elsewhere/rte-ird-s0"}
    (c / "results.json").write_text(json.dumps({"cells": {"rte-ird-s0": cell}}))
    state = merge_results.merge(out, [str(c)])
    assert state["cells"]["rte-ird-s0"]["workdir"] == "/elsewhere/rte-ird-s0"
    assert sorted(state["cells"]) == ["rte-fish-s0", "rte-ird-s0"]


def test_validation_cells_keep_their_ids_and_bring_their_split(tmp_path):
    src = tmp_path / "share"
    (src / "splits").mkdir(parents=True)
    split = src / "splits" / "rte-validation.json"
    split.write_text('{"validation": [1, 2]}')
    cells = {f"rte-fish-lr{lr}-s0": {**_cell("rte", "fish", 0, 0.5), "learning_rate": lr,
                                     "select_on": "validation",
                                     "row_split": {"path": str(split),
                                                   "sha256": file_sha256(split)}}
             for lr in (0.0002, 0.0006)}
    (src / "results.json").write_text(json.dumps({"cells": cells}))
    out = str(tmp_path / "part")
    state = merge_results.merge(out, [str(src)])
    assert sorted(state["cells"]) == ["rte-fish-lr0.0002-s0", "rte-fish-lr0.0006-s0"]
    ours = os.path.join(out, "splits", "rte-validation.json")
    assert open(ours).read() == split.read_text()
    assert {c["row_split"]["path"] for c in state["cells"].values()} == {ours}
    split.write_text('{"validation": [3]}')  # another share on other rows: refused
    cells["rte-fish-lr0.002-s0"] = {**cells.pop("rte-fish-lr0.0002-s0"), "learning_rate": 0.002,
                                    "row_split": {"path": str(split),
                                                  "sha256": file_sha256(split)}}
    (src / "results.json").write_text(json.dumps({"cells": cells}))
    with pytest.raises(SystemExit, match="other rows"):
        merge_results.merge(out, [str(src)])


def test_a_validation_variant_is_filed_under_its_name_and_a_split_elsewhere_is_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    own = {"path": "/elsewhere/rte.json", "sha256": "abc"}  # --row_split's own file
    cell = {**_cell("rte", "lora_fish", 0, 0.5, [glue.AT_INIT, "method.peft.selection=random"]),
            "learning_rate": 0.0002, "select_on": "validation", "row_split": own}
    (src / "results.json").write_text(json.dumps({"cells": {"x": cell}}))
    state = merge_results.merge(str(tmp_path / "out"), [str(src)])
    assert list(state["cells"]) == ["rte-lora_fish_random-lr0.0002-s0"]  # what vp looks up
    assert state["cells"]["rte-lora_fish_random-lr0.0002-s0"]["row_split"] == own
