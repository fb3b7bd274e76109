"""One run per workdir: a second run stops at once with one line; a dead run's lock is
taken over with a warning; the lock file goes when the run ends."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

from fishjax.core.errors import WorkdirError
from fishjax.train import trainer as trainer_lib
from fishjax.train.checkpoints import Checkpoints
from fishjax.train.workdir_lock import LOCK_FILE, WorkdirLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_held_lock_refuses_a_second_holder_and_release_removes_it(tmp_path):
    workdir = str(tmp_path / "w")
    with WorkdirLock(workdir):
        record = json.load(open(os.path.join(workdir, LOCK_FILE)))
        assert record["pid"] == os.getpid()
        with pytest.raises(WorkdirError, match=rf"in use by another run \(process {os.getpid()}"):
            WorkdirLock(workdir).acquire()
    assert not os.path.exists(os.path.join(workdir, LOCK_FILE))
    WorkdirLock(workdir).acquire()  # free again


def test_the_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    workdir = tmp_path / "w"
    workdir.mkdir()
    # A run killed with SIGKILL leaves its record but no flock (the kernel dropped it).
    (workdir / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "h", "since": "t"}))
    lock = WorkdirLock(str(workdir))
    with caplog.at_level(logging.WARNING, logger="fishjax"):
        lock.acquire()
    assert "took over the lock of process 999999" in caplog.text
    assert json.load(open(workdir / LOCK_FILE))["pid"] == os.getpid()
    lock.release()


def test_a_second_run_on_a_busy_workdir_exits_2_and_the_first_finishes(
        tiny_config, tiny_model_dir, tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    tiny_config.train.num_steps = 4
    started, go, out = threading.Event(), threading.Event(), {}
    real_run = trainer_lib.Trainer.run

    def held_run(self, *args, **kwargs):  # the first run holds the workdir until told
        started.set()
        go.wait(300)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(trainer_lib.Trainer, "run", held_run)

    def first():
        try:
            out["results"] = trainer_lib.train_and_evaluate(tiny_config, workdir)
        except BaseException as e:  # reported below
            out["error"] = e

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(300), out
        second = subprocess.run(
            [sys.executable, "train.py", "--config=configs/quickstart.py",
             f"--workdir={workdir}", f"--config.model.name={tiny_model_dir}"],
            capture_output=True, text=True, cwd=REPO, timeout=300)
    finally:
        go.set()
        thread.join()
    assert second.returncode == 2, second.stderr
    lines = second.stderr.splitlines()
    assert len(lines) == 1 and "in use by another run" in lines[0], lines
    assert f"process {os.getpid()}" in lines[0]
    assert "error" not in out, out.get("error")
    assert out["results"]["finished"] and out["results"]["step"] == 4
    assert not os.path.exists(os.path.join(workdir, LOCK_FILE))
    ckpt = Checkpoints(workdir)
    try:
        assert ckpt.latest_step() == 4 and ckpt.restore_latest(None) is not None
    finally:
        ckpt.close()
