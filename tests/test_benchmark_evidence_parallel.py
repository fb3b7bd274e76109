"""benchmarks/grid/evidence_parallel.py: the evidence grid cut into shares (part, task,
method) that run as parallel processes and merge back into the part's folder."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from benchmarks.common.tiny_model import write_tiny_rte
from benchmarks.grid import evidence, evidence_parallel, glue
from benchmarks.grid import validation_protocol as vp
from fishjax.core.io import file_sha256


def _args(out, parts="main,budget"):
    return argparse.Namespace(out=out, parts=parts, model="minilm-l6", glue_dir="g", set=[])


def _ok(task, method, lr, seed, val=0.8, **extra):
    return {"status": "ok", "task": task, "method": method, "seed": seed, "learning_rate": lr,
            "main_metric": "accuracy", "select_on": "validation",
            "final": {"dev/accuracy": 0.7, "validation/accuracy": val}, **extra}


def test_plan_keeps_shares_with_cells_left_and_waits_like_the_grid(tmp_path):
    out = str(tmp_path)
    cells = {}
    for m in evidence.METHODS:  # SST-2 finished: each method's three seed-0 rates + 2 seeds
        rates = vp.grid_of(m, glue.base_method(m), vp.parse_lr_grid(""))
        for lr in rates:
            cells[vp.cell_id("sst2", m, lr, 0)] = _ok("sst2", m, lr, 0, val=0.8 - 0.1 * (
                lr != rates[1]))  # the middle rate best: no extension
        for s in (1, 2):
            cells[vp.cell_id("sst2", m, rates[1], s)] = _ok("sst2", m, rates[1], s)
    os.makedirs(f"{out}/main")
    json.dump({"cells": cells}, open(f"{out}/main/results.json", "w"))
    shares = evidence_parallel.plan(_args(out))
    # main: only MRPC is left; budget waits for main's SST-2 selection (none written here)
    assert [s.name for s in shares] == [f"main-mrpc-{m}" for m in evidence.METHODS]
    with pytest.raises(SystemExit, match="unknown part"):
        evidence_parallel.plan(_args(out, "main,nope"))


def _split(folder, task, content):
    os.makedirs(f"{folder}/splits", exist_ok=True)
    path = f"{folder}/splits/{task}-validation.json"
    with open(path, "w") as f:
        f.write(content)
    return {"path": path, "sha256": file_sha256(path)}


def _results(folder, cells):
    os.makedirs(folder, exist_ok=True)
    json.dump({"cells": cells}, open(f"{folder}/results.json", "w"))


OLD, NEW = vp.cell_id("mrpc", "fish", 1e-3, 0), vp.cell_id("mrpc", "fish", 3e-3, 0)


def test_merge_adds_new_cells_points_them_at_the_parts_split_and_refuses_conflicts(tmp_path):
    out, work = str(tmp_path / "out"), str(tmp_path / "work")
    part_split = _split(f"{out}/main", "mrpc", '{"validation": [1, 2]}')
    old = _ok("mrpc", "fish", 1e-3, 0, row_split=part_split, workdir="a")
    _results(f"{out}/main", {OLD: old})
    share = f"{work}/main-mrpc-fish"
    split = _split(share, "mrpc", '{"validation": [1, 2]}')  # the copy: same sha256
    new = _ok("mrpc", "fish", 3e-3, 0, row_split=split, workdir="b", device="gpu: H100")
    failed = {"status": "error", "task": "mrpc", "method": "fish", "seed": 0}
    _results(share, {OLD: {**old, "workdir": "c"}, NEW: new, "bad": failed})
    assert evidence_parallel.merge(out, "main", [share]) == 1
    cells = json.load(open(f"{out}/main/results.json"))["cells"]
    assert set(cells) == {OLD, NEW} and cells[OLD] == old
    assert cells[NEW]["row_split"] == part_split  # the part's file, same content
    assert cells[NEW]["merged_from"] == f"{share}/results.json"
    assert cells[NEW]["device"] == "gpu: H100"

    before = open(f"{out}/main/results.json").read()
    _results(share, {OLD: {**old, "final": {"dev/accuracy": 0.1}}})
    with pytest.raises(SystemExit, match="different finished result"):
        evidence_parallel.merge(out, "main", [share])
    other = _split(share, "mrpc", '{"validation": [3]}')  # other rows than the part's
    _results(share, {"x": _ok("mrpc", "fish", 1e-2, 0, row_split=other)})
    with pytest.raises(SystemExit, match="other rows"):
        evidence_parallel.merge(out, "main", [share])
    assert open(f"{out}/main/results.json").read() == before  # nothing written


@pytest.mark.slow
def test_the_rte_part_runs_as_parallel_shares_and_merges(tiny_model_dir, tmp_path):
    """The `rte` part (full, fish, sift x the rate grid on seed 0, then seeds 1, 2) as three
    processes on the tiny encoder: every cell merged into <out>/rte with one split file,
    the selection rebuilt, and a rerun finds nothing left."""
    glue_dir = write_tiny_rte(str(tmp_path), 60)
    out, work = str(tmp_path / "out"), str(tmp_path / "work")
    argv = ["--parts", "rte", "--glue_dir", glue_dir, "--model", tiny_model_dir,
            "--out", out, "--work", work, "--jobs", "3", "--poll_s", "0.5",
            "--set", f"data.cache_dir={tmp_path}/cache", "--set", "train.num_steps=2",
            "--set", "train.batch_size=8", "--set", "data.max_length=32",
            "--set", "data.buckets=(16, 32)"]
    merged = evidence_parallel.main(argv)
    state = json.load(open(f"{out}/rte/results.json"))
    cells = state["cells"]
    assert {c["status"] for c in cells.values()} == {"ok"}
    assert merged == {"rte": len(cells)}
    assert {c["method"] for c in cells.values()} == {"full", "fish", "sift"}
    for m in ("full", "fish", "sift"):
        sel = state["selection"]["rte"][m]
        assert sel["chosen_lr"] is not None and len(sel["dev_scores"]) == 3
    split = f"{out}/rte/splits/rte-validation.json"
    assert {c["row_split"]["path"] for c in cells.values()} == {split}
    assert {c["row_split"]["sha256"] for c in cells.values()} == {file_sha256(split)}
    assert evidence_parallel.plan(argparse.Namespace(**{**vars(_args(out, "rte"))})) == []
    # the share folders merged again (as when brought back from a GPU): nothing new, no error
    assert evidence_parallel.main([*argv, "--merge_only"]) == {"rte": 0}
    assert json.load(open(f"{out}/rte/results.json"))["cells"] == cells


def test_launch_stops_new_shares_at_the_deadline_and_ends_running_ones_at_kill_time(
        tmp_path, monkeypatch):
    work = str(tmp_path / "work")
    os.makedirs(work)
    monkeypatch.setattr(evidence_parallel, "prepare",
                        lambda args, share: os.path.join(work, share.name))
    # each child clears the stop file as it starts, as glue.py does, then runs on
    monkeypatch.setattr(evidence_parallel.cli, "module_cmd", lambda *a: [
        "sh", "-c", f"sleep 0.3; rm -f {work}/STOP; sleep 60"])
    shares = [evidence_parallel.Share("rte", "rte", m, "") for m in ("full", "fish", "sift")]
    args = argparse.Namespace(work=work, jobs=2, deadline_s=0.1, kill_s=1.5, poll_s=0.1,
                              out=str(tmp_path), model="m", glue_dir=None, set=[])
    codes = evidence_parallel.launch(args, shares)
    started = sorted(f for f in os.listdir(work) if f.endswith(".log"))
    assert started == ["rte-rte-fish.log", "rte-rte-full.log"]  # the third never started
    assert os.path.exists(os.path.join(work, "STOP"))  # asked again after the children
    assert codes == {"rte-rte-full": -15, "rte-rte-fish": -15}  # ended at kill time


def test_launch_ends_its_children_when_it_fails(tmp_path, monkeypatch):
    work = str(tmp_path / "work")
    os.makedirs(work)
    monkeypatch.setattr(evidence_parallel, "prepare",
                        lambda args, share: os.path.join(work, share.name))
    monkeypatch.setattr(evidence_parallel.cli, "module_cmd", lambda *a: ["sleep", "60"])
    procs = []
    real_popen = evidence_parallel.subprocess.Popen

    def popen(*a, **k):
        procs.append(real_popen(*a, **k))
        if len(procs) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C while the second starts
        return procs[-1]

    monkeypatch.setattr(evidence_parallel.subprocess, "Popen", popen)
    shares = [evidence_parallel.Share("rte", "rte", m, "") for m in ("full", "fish", "sift")]
    args = argparse.Namespace(work=work, jobs=3, deadline_s=60, kill_s=60, poll_s=0.1,
                              out=str(tmp_path), model="m", glue_dir=None, set=[])
    with pytest.raises(KeyboardInterrupt):
        evidence_parallel.launch(args, shares)
    assert procs[0].poll() is not None  # the first child did not outlive the launcher
    procs[1].kill()


def test_prepare_keeps_a_cut_short_shares_cells_and_adds_the_parts(tmp_path, monkeypatch):
    out, work = str(tmp_path / "out"), str(tmp_path / "work")
    split = _split(f"{out}/rte", "rte", '{"validation": [1]}')["path"]
    cfg = argparse.Namespace(data=argparse.Namespace(row_split=split))
    monkeypatch.setattr(evidence_parallel.glue, "validation_cell_config", lambda *a: cfg)
    _results(f"{out}/rte", {"p": _ok("rte", "fish", 2e-4, 0),
                            "other": _ok("rte", "sift", 2e-4, 0)})
    share = evidence_parallel.Share("rte", "rte", "fish", "")
    _results(f"{work}/rte-rte-fish", {"s": _ok("rte", "fish", 6e-4, 0),  # not merged yet
                                      "e": {"status": "error", "task": "rte"}})
    args = argparse.Namespace(out=out, work=work, model="m", glue_dir=None, set=[])
    folder = evidence_parallel.prepare(args, share)
    assert set(json.load(open(f"{folder}/results.json"))["cells"]) == {"s", "p"}
    assert open(f"{folder}/splits/rte-validation.json").read() == open(split).read()
