"""benchmarks/robustness/fault_injection.py: its verdicts, its kill points, and one real kill -9."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def reference_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    env = fi.Env(model_dir=tiny_model_dir, cache_dir=str(root / "cache"), root=str(root))
    return env, fi.run_child(env, str(root / "reference"))


@pytest.mark.slow
@pytest.mark.parametrize("action,point,when,n", [
    ("sigint", "checkpoint_save", "during", 2),
    ("enospc", "checkpoint_save", "before", 2),
    ("enospc", "export_write", "during", 1),
])
def test_an_interrupted_save_stops_with_one_line_and_the_rerun_matches(
        reference_run, tmp_path, action, point, when, n):
    env, reference = reference_run
    row = fi.interruption_case(env, reference, str(tmp_path / "case"), action, point, when, n)
    assert row["exit"] == (130 if action == "sigint" else 2), row
    assert not row["traceback"] and row["litter"] == [], row
    assert row["outcome"] == "recovered", row
