"""Multi-host on two real processes: `jax.distributed` on a local coordinator, 2 CPU devices each.

A FISH run of the tiny model over the 4-device mesh, stopped at step 12 and resumed (both
times as two processes), against one process over 4 devices with the same seed: the same
mask, the same metrics and the same params (to float32 rounding: the two processes sum
gradients across the mesh with gloo, one process with XLA's in-process all-reduce, in
another order); each host fed only its own rows; only process 0 wrote fishjax's files;
the Fisher pass ran half of its backward passes on each process. And a process that dies
stops the other with an error within the heartbeat timeout, instead of a hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.common.cli import module_env

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp, name, workdir, model_dir, *, processes, extra=()):
    """Starts the worker(s); returns [(process, out path)]."""
    port = _free_port()
    procs = []
    for pid in range(processes):
        out = str(tmp / f"{name}-{pid}.json")
        cmd = [sys.executable, WORKER, f"--out={out}", f"--workdir={workdir}",
               f"--model_dir={model_dir}", f"--cache_dir={tmp / 'cache'}",
               f"--devices={4 // processes}", *extra]
        if processes > 1:
            cmd += [f"--process_id={pid}", f"--num_processes={processes}", f"--port={port}"]
        log = open(tmp / f"{name}-{pid}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                       env=module_env()), out))
    return procs


def _finish(procs, timeout=600):
    outs = []
    for proc, out in procs:
        proc.wait(timeout=timeout)
        assert proc.returncode == 0, open(out.replace(".json", ".log")).read()[-3000:]
        with open(out) as f:
            outs.append(json.load(f))
    return outs


def _params(out_path):
    with np.load(out_path + ".npz") as z:
        return {k: z[k] for k in z.files}


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    single = _launch(tmp, "single", str(tmp / "single"), tiny_model_dir, processes=1)
    (one,) = _finish(single)
    two_dir = str(tmp / "two")
    stopped = _finish(_launch(tmp, "stopped", two_dir, tiny_model_dir, processes=2,
                              extra=["--stop_after=12"]))
    resumed = _finish(_launch(tmp, "resumed", two_dir, tiny_model_dir, processes=2))
    return {"tmp": tmp, "one": one, "stopped": stopped, "resumed": resumed,
            "single_dir": str(tmp / "single"), "two_dir": two_dir}


@pytest.mark.slow
def test_two_processes_match_one_process_over_the_same_mesh(runs):
    one, (r0, r1) = runs["one"], runs["resumed"]
    assert r0["process_count"] == 2 and one["process_count"] == 1
    assert runs["stopped"][0]["results"]["step"] == 12
    assert r0["results"]["finished"] and r0["results"]["step"] == one["results"]["step"]
    for key, value in one["results"]["final_eval"].items():
        assert r0["results"]["final_eval"][key] == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert r0["results"]["best"]["step"] == one["results"]["best"]["step"]
    # Both processes end with the same params, bit for bit; the single process's differ
    # only by the rounding of the cross-device sums.
    tmp = runs["tmp"]
    a, b = _params(str(tmp / "resumed-0.json")), _params(str(tmp / "resumed-1.json"))
    ref = _params(str(tmp / "single-0.json"))
    assert r0["state_sha256"] == r1["state_sha256"]
    for k in ref:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_allclose(a[k], ref[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.slow
def test_the_two_process_fisher_pass_is_shared_and_gives_the_same_mask(runs):
    one, (s0, s1) = runs["one"], runs["stopped"]
    assert _sha(os.path.join(runs["two_dir"], "mask.safetensors")) == _sha(
        os.path.join(runs["single_dir"], "mask.safetensors"))
    (total,) = one["fisher_backward_passes"]
    assert one["fisher_local_backward_passes"] == [total] == s0["fisher_backward_passes"]
    assert s0["fisher_local_backward_passes"] == s1["fisher_local_backward_passes"] == [total // 2]
    # The resumed run reused the mask file: no second Fisher pass.
    assert runs["resumed"][0]["fisher_backward_passes"] == []


@pytest.mark.slow
def test_an_odd_fisher_batch_is_split_unevenly_and_gives_the_same_mask(tiny_model_dir,
                                                                     tmp_path):
    """7 rows per Fisher batch over 2 processes: 4 and 3 (+1 padding row of weight 0)."""
    extra = ["--fisher_batch_size=7", "--stop_after=1"]
    (one,) = _finish(_launch(tmp_path, "one", str(tmp_path / "one"), tiny_model_dir,
                             processes=1, extra=extra))
    p0, p1 = _finish(_launch(tmp_path, "two", str(tmp_path / "two"), tiny_model_dir,
                             processes=2, extra=extra))
    assert _sha(str(tmp_path / "two" / "mask.safetensors")) == _sha(
        str(tmp_path / "one" / "mask.safetensors"))
    (total,) = one["fisher_backward_passes"]
    assert p0["fisher_local_backward_passes"][0] + p1["fisher_local_backward_passes"][0] == total
    assert p0["fisher_local_backward_passes"][0] > p1["fisher_local_backward_passes"][0]


@pytest.mark.slow
def test_each_host_feeds_its_own_rows_and_only_process_0_writes(runs):
    one, (s0, s1) = runs["one"], runs["stopped"]
    assert s0["fed"] and len(s0["fed"]) == len(s1["fed"])
    for full, mine0, mine1 in zip(one["fed"], s0["fed"], s1["fed"], strict=False):
        rows = full["global_rows"]
        assert len(mine0["local"]) == len(mine1["local"]) == rows // 2
        assert mine0["local"] + mine1["local"] == full["local"]  # p0 the first half
    assert "results.json" in s0["writes"] and "mask.safetensors" in s0["writes"]
    assert s1["writes"] == [] and runs["resumed"][1]["writes"] == []


@pytest.mark.slow
def test_a_dead_process_stops_the_other_within_the_heartbeat_timeout(tiny_model_dir,
                                                                     tmp_path):
    procs = _launch(tmp_path, "die", str(tmp_path / "die"), tiny_model_dir, processes=2,
                    extra=["--heartbeat_timeout=10", "--die_at_step=6"])
    (p0, _), (p1, _) = procs
    p1.wait(timeout=300)  # process 1 SIGKILLs itself before its 6th step
    assert p1.returncode == -signal.SIGKILL
    died_at = time.monotonic()
    p0.wait(timeout=120)
    waited = time.monotonic() - died_at
    log = open(tmp_path / "die-0.log").read()
    assert p0.returncode != 0, log[-3000:]
    assert waited < 10 + 60, f"process 0 took {waited:.0f} s to stop"
    assert "another task died" in log or "stopped sending heartbeats" in log, (
        p0.returncode, log[-3000:])


def test_every_fishjax_logger_is_tagged_with_its_process(monkeypatch):
    import logging

    from fishjax.train import distributed

    saved = logging.getLogRecordFactory()
    monkeypatch.setattr(distributed, "process_tag", lambda: "[process 1/2] ")
    try:
        distributed._tag_fishjax_records()
        distributed._tag_fishjax_records()  # idempotent: one prefix, not two
        make = logging.getLogRecordFactory()
        for name, tagged in (("fishjax", True), ("fishjax.data.pipeline", True),
                             ("orbax", False), ("fishjaxish", False)):
            record = make(name, logging.INFO, __file__, 1, "hello", (), None)
            assert record.getMessage() == ("[process 1/2] hello" if tagged else "hello"), name
    finally:
        logging.setLogRecordFactory(saved)
