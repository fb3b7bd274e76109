"""benchmarks/robustness/fault_injection.py: its verdicts, its kill points, one real kill -9,
and (slow) the whole quick table."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from benchmarks.robustness import fault_injection as fi


def test_kill_points_take_every_point_in_turn_and_are_seeded():
    a, b = fi.kill_points(24, seed=3), fi.kill_points(24, seed=3)
    assert a == b and a != fi.kill_points(24, seed=4)
    assert len({(s["point"], s["when"]) for s in a}) == 10  # every point, then again
    assert all(s["n"] >= 1 for s in a)


def test_judge_separates_the_four_outcomes():
    ref = {"fingerprint": {"state": "x"}}
    ok = {"returncode": 0, "finished": True, "fingerprint": {"state": "x"}, "error_lines": []}
    assert fi.judge(ok, ref) == "recovered"
    assert fi.judge({**ok, "fingerprint": {"state": "y"}}, ref) == "silent_wrong"
    assert fi.judge({**ok, "finished": False}, ref) == "silent_wrong"
    assert fi.judge({"returncode": 2, "error_lines": ["error: bad"]}, ref) == "clear_error"
    assert fi.judge({"returncode": 1, "error_lines": []}, ref) == "other_failure"


@pytest.mark.parametrize("mode", ["truncate", "random_bytes"])
def test_corrupt_changes_the_file(tmp_path, mode):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 64)
    fi.corrupt(str(path), mode, np.random.default_rng(0))
    data = path.read_bytes()
    assert data != bytes(range(256)) * 64
    assert (len(data) < 256 * 64) == (mode == "truncate")


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_save_recovers_bit_identically(tiny_model_dir, tmp_path):
    env = fi.Env(model_dir=tiny_model_dir, cache_dir=str(tmp_path / "cache"),
                 root=str(tmp_path))
    reference = fi.run_child(env, str(tmp_path / "reference"))
    assert reference["returncode"] == 0 and reference["fingerprint"]["export"]
    workdir = str(tmp_path / "killed")
    killed = fi.run_child(env, workdir, kill={"point": "checkpoint_save", "when": "during",
                                              "n": 2, "delay": 0.01})
    assert killed["returncode"] == -signal.SIGKILL
    assert os.path.exists(os.path.join(workdir, fi.KILLED_MARK))
    assert fi.judge(fi.run_child(env, workdir), reference) == "recovered"


def test_litter_finds_temporary_files_and_the_lock(tmp_path):
    (tmp_path / "checkpoints" / "4.orbax-checkpoint-tmp-123").mkdir(parents=True)
    (tmp_path / ".tmp-abc-results.json").write_text("{")
    (tmp_path / ".lock").write_text("{}")
    (tmp_path / "results.json").write_text("{}")
    assert fi.litter(str(tmp_path)) == [".lock", ".tmp-abc-results.json",
                                        "checkpoints/4.orbax-checkpoint-tmp-123"]


def test_an_interrupted_run_must_stop_cleanly_to_count_as_recovered():
    ref = {"fingerprint": {"state": "x"}}
    rerun = {"returncode": 0, "finished": True, "fingerprint": {"state": "x"},
             "error_lines": []}
    clean = {"returncode": 130, "error_lines": ["interrupted: ..."], "traceback": False,
             "litter": []}
    assert fi.judge_interrupted(clean, rerun, ref) == "recovered"
    assert fi.judge_interrupted({**clean, "traceback": True}, rerun, ref) == "other_failure"
    assert fi.judge_interrupted({**clean, "litter": [".lock"]}, rerun, ref) == "other_failure"
    assert fi.judge_interrupted(clean, {**rerun, "fingerprint": {"state": "y"}},
                                ref) == "silent_wrong"
    assert fi.expected_outcomes("sigint at checkpoint_save#2:during") == ("recovered",)
    assert fi.expected_outcomes("a second run on a busy workdir") == ("clear_error",)


@pytest.mark.slow
def test_the_quick_table_has_no_silent_wrong_result(tmp_path):
    """The quick fault table (one probe of each class: kill -9, corruption, SIGINT, SIGTERM,
    a full disk, header bytes, a mask of another base, two runs on one workdir), as CI's
    slow part runs it: every probe ends as expected, none silently wrong."""
    status = fi.main(["--quick", f"--out={tmp_path}"])
    table = json.load(open(tmp_path / "fault_injection_quick.json"))
    bad = [r for r in table["cases"] if r["outcome"] not in r["expected"]]
    assert status == 0 and not bad, bad
    assert table["silent_wrong"] == 0 and table["other_failure"] == 0
    assert table["injected"] >= 12
    assert {r["case"].split(" ")[0] for r in table["cases"]} >= {
        "kill", "corrupt", "sigint", "sigterm", "enospc"}
