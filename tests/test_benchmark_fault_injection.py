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
