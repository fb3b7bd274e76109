"""Fault injection: kill -9 at seeded points, corrupt each file kind, diverge, change config.

  python -m benchmarks.robustness.fault_injection --out=benchmarks/results/fault_injection
  python -m benchmarks.robustness.fault_injection --kills=24 --seed=0 --out=...   # more kill points

Every case runs in a fresh workdir of one scenario: `fish` (FISH Mask, sparse storage: a
mask file, checkpoints, a best model, a Hugging Face export, a delta file, results) on the
tiny random model and the bundled quickstart sample (24 steps, checkpoints every 4, eval
each 12-step epoch). An uninterrupted run gives the reference outputs.

- **kill -9**: a child process trains with one patched function that sends itself SIGKILL
  at the n-th call (n seeded): before a train step, before / during / after a checkpoint
  save, during a best-model save, before `best.json` is updated, before / during the
  export's safetensors write, before the rename of an atomic write (results, run info,
  mask, delta). Then the same command is rerun without injection.
- **corruption**: truncation and random bytes in a checkpoint's array data and its
  metadata, the best model's arrays, `best.json`, the mask file, the delta file and
  `results.json`; then the run is rerun (the delta file is instead loaded, as a user of
  it would).
- **interruptions**: SIGINT and SIGTERM during a checkpoint save, and a full disk
  (`OSError(ENOSPC)`, injected) before a checkpoint save, in the middle of the export's
  weights file and at the rename of an atomic write. The interrupted run must end with one
  line on stderr (exit 130 or 2), no traceback and no temporary file in the workdir; then
  the same command is rerun.
- **header bytes**: one seeded byte of the header of the mask, the delta and the exported
  weights changed (the rerun, or the load, must refuse it); **a mask from another base**
  (`method.mask_file` selected on a tiny model of other weights, same shapes);
  **two runs on one workdir** (the second must stop with one line while the first
  finishes as the reference).
- **divergence** (learning rate 1e4) and **a config change on resume** (another learning
  rate in a stopped run's workdir).

Each case ends as one of: recovered bit-identically (exit 0, and the final checkpoint,
export, mask, delta and final metrics equal the reference's), clear error (a fishjax
error: exit 2 with one `error:` line), silent wrong result (exit 0 but an output differs
from the reference, or a damaged file accepted), other failure (a crash with a
traceback, or an interruption that printed one, or left temporary files). Prints the
table and writes `<out>/fault_injection.json`; `--quick` runs one case of each class.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from benchmarks.common.tiny_model import build_tiny_model_dir, make_tiny_config
from fishjax.artifacts.delta_file import load_delta
from fishjax.core import io as core_io
from fishjax.core.errors import FishjaxError, exit_status
from fishjax.core.io import atomic_write_json
from fishjax.core.safetensors_io import header_end, read_tensors
from fishjax.core.tree import tree_sha256
from fishjax.models import hf_export
from fishjax.train import checkpoints, trainer
from fishjax.train.checkpoints import Checkpoints
from fishjax.train.workdir_lock import LOCK_FILE

OUTCOMES = ("recovered", "clear_error", "silent_wrong", "other_failure")
KILLED_MARK = "killed-at.json"
HOLD_MARK = "hold-until"  # a child with --hold waits in Trainer.run until this file exists
ACTIONS = ("kill", "sigint", "sigterm", "enospc")  # what an injection point does


# -- the scenario (child side) ----------------------------------------------------------------


def scenario_config(model_dir: str, cache_dir: str, learning_rate: float = 1e-3):
    config = make_tiny_config(model_dir, cache_dir)
    config.method.name = "fish"
    config.method.keep_ratio = 0.05
    config.method.sparse_storage = True
    config.method.fisher.num_samples = 32
    config.train.checkpoint_every_steps = 4
    config.train.export = True
    config.train.learning_rate = learning_rate
    return config


def fingerprint(workdir: str, results: dict[str, Any]) -> dict[str, Any]:
    """What must be identical to the reference: hashes of the final train state, the
    export, the mask and delta files, and the final metrics."""
    ckpt = Checkpoints(workdir)
    try:
        state = ckpt.restore_latest(None)
    finally:
        ckpt.close()

    def file_hash(path):
        if path is None or not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    export = results.get("export_dir")
    return {
        "state": tree_sha256(state),
        "export": file_hash(export and os.path.join(export, "model.safetensors")),
        "mask": file_hash(os.path.join(workdir, "mask.safetensors")),
        "delta": file_hash((results.get("artifacts") or {}).get("delta")),
        "final_eval": results.get("final_eval"),
        "best": results.get("best"),
    }


def _kill_now(workdir: str, where: str, action: str = "kill") -> None:
    """SIGKILL, SIGINT or SIGTERM this process, or raise a full disk's OSError, after
    recording where in `KILLED_MARK`."""
    atomic_write_json(os.path.join(workdir, KILLED_MARK), {"where": where})
    if action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected)", where)
    os.kill(os.getpid(), {"kill": signal.SIGKILL, "sigint": signal.SIGINT,
                          "sigterm": signal.SIGTERM}[action])


def install_kill(spec: dict[str, Any], workdir: str) -> None:
    """Patches the function `spec["point"]` names to do `spec["action"]` (default: kill,
    see `ACTIONS`) at its n-th call (`spec["n"]`, counting only calls that match),
    `spec["when"]` it runs."""
    point, n, when = spec["point"], int(spec["n"]), spec.get("when", "before")
    action = spec.get("action", "kill")
    calls = {"n": 0}

    def hit() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    where = f"{point}#{n}:{when}"
    kill_now = lambda w, at: _kill_now(w, at, action)  # noqa: E731
    if point == "train_step":
        original = trainer.Trainer.step

        def step(self, batch):
            if hit():
                kill_now(workdir, where)
            return original(self, batch)

        trainer.Trainer.step = step
    elif point in ("checkpoint_save", "best_save"):
        original_save = checkpoints._save
        want_best = point == "best_save"

        def save(manager, step, tree):
            is_best = os.path.basename(str(manager.directory)) == "best"
            if is_best != want_best or not hit():
                return original_save(manager, step, tree)
            if when == "before":
                kill_now(workdir, where)
            if when == "during":  # a seeded delay into the write
                delay = float(spec.get("delay", 0.01))
                threading.Timer(delay, kill_now, (workdir, f"{where}+{delay:.3f}s")).start()
                original_save(manager, step, tree)
                time.sleep(5)  # the timer fires inside or just after the save
            original_save(manager, step, tree)  # "after": saved, then killed
            kill_now(workdir, where)

        checkpoints._save = save
    elif point == "best_json":
        original_write = checkpoints.atomic_write_json

        def write(path, obj):
            if os.path.basename(path) == "best.json" and hit():
                kill_now(workdir, where)
            return original_write(path, obj)

        checkpoints.atomic_write_json = write
    elif point == "export_write":
        original_file = hf_export.write_file

        def write_file(path, data):
            if os.path.basename(str(path)) == "model.safetensors" and hit():
                if when == "during":  # half of the file's bytes on disk, then the fault
                    with open(path, "wb") as f:
                        f.write(data[: len(data) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                kill_now(workdir, where)
            return original_file(path, data)

        hf_export.write_file = write_file
    elif point == "atomic_rename":
        original_replace = core_io.os.replace

        class _OsProxy:  # core.io's `os`, with replace patched (os itself untouched)
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(src, dst):
                if hit():
                    kill_now(workdir, f"{where}:{os.path.basename(str(dst))}")
                return original_replace(src, dst)

        core_io.os = _OsProxy()
    else:
        raise ValueError(f"unknown kill point {point!r}")


def child(args: argparse.Namespace) -> int:
    """One run of the scenario in `args.workdir` (with an injected fault if asked), as the
    command line runs it (`exit_status`: one line and exit 2 for a fishjax error or a full
    disk, 130 for SIGINT / SIGTERM); writes its outcome (fingerprint) to `args.outcome`."""
    config = scenario_config(args.model_dir, args.cache_dir, args.learning_rate)
    if args.stop_after:
        config.train.stop_after_steps = args.stop_after
    if args.mask_file:
        config.method.mask_file = args.mask_file
    if args.kill:
        install_kill(json.loads(args.kill), args.workdir)
    if args.hold:  # hold the workdir (its lock taken) until the driver says go
        original_run = trainer.Trainer.run

        def held_run(self, *a, **k):
            while not os.path.exists(args.hold):
                time.sleep(0.1)
            return original_run(self, *a, **k)

        trainer.Trainer.run = held_run
    out: dict[str, Any] = {}

    def run() -> None:
        results = trainer.train_and_evaluate(config, args.workdir)
        out.update(finished=results["finished"], fingerprint=fingerprint(args.workdir, results))

    code = exit_status(run)
    if code == 0:
        atomic_write_json(args.outcome, out)
    return code


# -- the driver (parent side) ---------------------------------------------------------------------


@dataclasses.dataclass
class Env:
    model_dir: str
    cache_dir: str
    root: str


def _child_cmd(env: Env, workdir: str, outcome: str, *, kill: dict | None = None,
               stop_after: int = 0, learning_rate: float = 1e-3, mask_file: str = "",
               hold: str = "", model_dir: str = "") -> list[str]:
    cmd = ["--child", f"--workdir={workdir}",
           f"--model_dir={model_dir or env.model_dir}", f"--cache_dir={env.cache_dir}",
           f"--outcome={outcome}", f"--stop_after={stop_after}",
           f"--learning_rate={learning_rate}", f"--mask_file={mask_file}", f"--hold={hold}"]
    return cmd + ([f"--kill={json.dumps(kill)}"] if kill else [])


def _read_outcome(proc, outcome: str, workdir: str) -> dict[str, Any]:
    out: dict[str, Any] = {"returncode": proc.returncode}
    if os.path.exists(outcome):
        with open(outcome) as f:
            out.update(json.load(f))
        os.unlink(outcome)
    if proc.returncode not in (0, 2, 130, -signal.SIGKILL):
        out["stderr_tail"] = proc.stderr[-1500:]
    out["error_lines"] = [line for line in proc.stderr.splitlines()
                          if line.startswith(("error:", "interrupted:"))]
    out["traceback"] = "Traceback" in proc.stderr
    out["litter"] = litter(workdir)
    return out


def run_child(env: Env, workdir: str, **kwargs) -> dict[str, Any]:
    """Runs the scenario in a child process (`_child_cmd` for the options); its outcome:
    returncode, fingerprint, the `error:`/`interrupted:` lines, whether stderr held a
    traceback, and the temporary files left in the workdir."""
    outcome = os.path.join(env.root, f"outcome-{os.getpid()}-{time.monotonic_ns()}.json")
    proc = cli.run_module(__spec__.name, _child_cmd(env, workdir, outcome, **kwargs),
                          capture_output=True, text=True, cwd=cli.REPO, timeout=900)
    return _read_outcome(proc, outcome, workdir)


def litter(workdir: str) -> list[str]:
    """Temporary files and folders an interrupted write leaves (atomic writes', orbax's)
    and a lock file, anywhere under `workdir`."""
    found = []
    for root, dirs, files in os.walk(workdir):
        for name in dirs + files:
            if (name.startswith(core_io.TMP_FILE_PREFIX) or checkpoints.ORBAX_TMP_MARK in name
                    or name == LOCK_FILE or (name.startswith(".") and any(
                        m in name for m in core_io.TMP_DIR_MARKERS))):
                found.append(os.path.relpath(os.path.join(root, name), workdir))
    return sorted(found)


def judge_interrupted(first: dict[str, Any], rerun: dict[str, Any],
                      reference: dict[str, Any]) -> str:
    """An interrupted run (signal, full disk) must stop cleanly: exit 130 or 2, one line,
    no traceback, no temporary file; then the rerun is judged as any rerun."""
    clean = (first["returncode"] in (2, 130) and len(first["error_lines"]) == 1
             and not first["traceback"] and not first["litter"])
    return judge(rerun, reference) if clean else "other_failure"


def judge(rerun: dict[str, Any], reference: dict[str, Any]) -> str:
    if rerun["returncode"] == 2 and len(rerun["error_lines"]) == 1:
        return "clear_error"
    if rerun["returncode"] != 0:
        return "other_failure"
    same = rerun.get("finished") and rerun.get("fingerprint") == reference["fingerprint"]
    return "recovered" if same else "silent_wrong"


def kill_points(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` seeded kill specs, the points in turn (each at least once for count >= 10)."""
    rng = np.random.default_rng(seed)
    # point, when, how many calls the scenario makes (n is drawn in 1..calls)
    menu = [("train_step", "before", 24), ("checkpoint_save", "before", 7),
            ("checkpoint_save", "during", 7), ("checkpoint_save", "after", 7),
            ("best_save", "during", 2), ("best_save", "after", 2), ("best_json", "before", 2),
            ("export_write", "before", 1), ("export_write", "during", 1),
            ("atomic_rename", "before", 8)]
    specs = []
    for i in range(count):  # the points in turn; n drawn for each
        point, when, calls = menu[i % len(menu)]
        spec = {"point": point, "when": when, "n": int(rng.integers(1, calls + 1))}
        if when == "during":
            spec["delay"] = round(float(rng.uniform(0.0, 0.15)), 3)
        specs.append(spec)
    return specs


def _step_dirs(workdir: str, sub: str) -> list[str]:
    folder = os.path.join(workdir, sub)
    steps = sorted((int(n) for n in os.listdir(folder) if n.isdigit()), reverse=True)
    return [os.path.join(folder, str(s)) for s in steps]


def _files(folder: str, data: bool) -> list[str]:
    """Array data files (data=True) or metadata files (False) of an orbax step folder,
    sorted by path."""
    out = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            is_data = "/d/" in path or "ocdbt" in path
            if is_data == data and name != "commit_success.txt":
                out.append(path)
    return sorted(out)


def corrupt(path: str, mode: str, rng: np.random.Generator) -> None:
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if mode == "truncate":
        data = data[: int(len(data) * rng.uniform(0.2, 0.8))]
    else:  # random bytes: up to 4 KB at a seeded offset
        n = min(4096, max(len(data) // 2, 1))
        start = int(rng.integers(0, max(len(data) - n, 1)))
        data[start:start + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(bytes(data))


def corruption_case(env: Env, kind: str, mode: str, rng: np.random.Generator,
                    reference: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Prepares a workdir, corrupts one file of `kind`, then reruns (or loads)."""
    stopped = kind in ("checkpoint_data", "checkpoint_metadata", "best_data", "best_json")
    first = run_child(env, workdir, stop_after=16 if stopped else 0)
    assert first["returncode"] == 0, first
    if kind.startswith("checkpoint"):  # a seeded file of the newest checkpoint
        files = _files(_step_dirs(workdir, "checkpoints")[0], data=kind.endswith("data"))
        target = files[int(rng.integers(len(files)))]
    elif kind == "best_data":
        files = _files(_step_dirs(workdir, "best")[0], data=True)
        target = files[int(rng.integers(len(files)))]
    elif kind == "best_json":
        target = os.path.join(workdir, "best", "best.json")
    elif kind == "mask":
        target = os.path.join(workdir, "mask.safetensors")
    elif kind == "delta":
        target = os.path.join(workdir, "delta.safetensors")
    elif kind == "results":
        target = os.path.join(workdir, "results.json")
    else:
        raise ValueError(kind)
    corrupt(target, mode, rng)
    row = {"case": f"corrupt {kind} ({mode})", "file": os.path.relpath(target, workdir)}
    if kind == "delta":  # what a user of the delta file does: load it
        row["outcome"] = judge_delta_load(target, reference)
        return row
    rerun = run_child(env, workdir)
    row["outcome"] = judge(rerun, reference)
    row["error"] = (rerun.get("error_lines") or [None])[0]
    return row


def judge_delta_load(path: str, reference: dict[str, Any]) -> str:
    try:
        load_delta(path)
    except FishjaxError:
        return "clear_error"
    except Exception:  # noqa: BLE001 (any other exception is an unclear failure)
        return "other_failure"
    with open(path, "rb") as f:  # accepted: right only if the bytes are the reference's
        same = hashlib.sha256(f.read()).hexdigest() == reference["fingerprint"]["delta"]
    return "recovered" if same else "silent_wrong"


# (action, point, when, n): each interruption the table probes
INTERRUPTIONS = [
    ("sigint", "checkpoint_save", "during", 2),
    ("sigterm", "checkpoint_save", "during", 3),
    ("enospc", "checkpoint_save", "before", 2),
    ("enospc", "export_write", "during", 1),
    ("enospc", "atomic_rename", "before", 4),
]


def interruption_case(env: Env, reference: dict[str, Any], workdir: str, action: str,
                      point: str, when: str, n: int, delay: float = 0.01) -> dict[str, Any]:
    spec = {"point": point, "when": when, "n": n, "action": action, "delay": delay}
    first = run_child(env, workdir, kill=spec)
    mark = os.path.join(workdir, KILLED_MARK)
    if not os.path.exists(mark):
        raise RuntimeError(f"interruption {spec} is never reached: {first}")
    with open(mark) as f:
        where = json.load(f)["where"]
    os.unlink(mark)
    rerun = run_child(env, workdir)
    return {"case": f"{action} at {where}", "outcome": judge_interrupted(first, rerun, reference),
            "error": (first["error_lines"] or [None])[0], "exit": first["returncode"],
            "traceback": first["traceback"], "litter": first["litter"]}


def change_header_byte(path: str, rng: np.random.Generator) -> int:
    """Adds 1 (mod 256) to one seeded byte of a safetensors file's header; returns where."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    i = int(rng.integers(0, header_end(bytes(data))))
    data[i] = (data[i] + 1) % 256
    with open(path, "wb") as f:
        f.write(bytes(data))
    return i


def header_case(env: Env, kind: str, rng: np.random.Generator, reference_dir: str,
                reference: dict[str, Any], workdir: str) -> dict[str, Any]:
    """A copy of the reference workdir with one header byte of its mask, delta or exported
    weights changed: a rerun (mask) or a load (delta, export) must refuse it."""
    shutil.copytree(reference_dir, workdir)
    target = {"mask": "mask.safetensors", "delta": "delta.safetensors",
              "export": os.path.join("export", "model.safetensors")}[kind]
    path = os.path.join(workdir, target)
    at = change_header_byte(path, rng)
    row = {"case": f"header byte {at} of {target} changed", "file": target}
    if kind == "mask":
        rerun = run_child(env, workdir)
        row.update(outcome=judge(rerun, reference), error=(rerun["error_lines"] or [None])[0])
    elif kind == "delta":
        row["outcome"] = judge_delta_load(path, reference)
    else:
        try:
            read_tensors(path, FishjaxError)
            row["outcome"] = "silent_wrong"
        except FishjaxError as e:
            row.update(outcome="clear_error", error=str(e))
    return row


def wrong_base_case(env: Env, reference_dir: str, reference: dict[str, Any],
                    workdir: str) -> dict[str, Any]:
    """The reference's mask as `method.mask_file` of a run on another tiny model (same
    shapes, other weights): refused."""
    other = build_tiny_model_dir(os.path.join(env.root, "tiny-other"), seed=1)
    run = run_child(env, workdir, model_dir=other,
                    mask_file=os.path.join(reference_dir, "mask.safetensors"))
    return {"case": "mask of another base model (method.mask_file)",
            "outcome": judge(run, reference), "error": (run["error_lines"] or [None])[0]}


def concurrent_case(env: Env, reference: dict[str, Any], workdir: str) -> dict[str, Any]:
    """A second run on a workdir a first run holds: it must stop with one line, and the
    first must finish as the reference did."""
    hold = os.path.join(env.root, f"go-{os.path.basename(workdir)}")
    outcome = os.path.join(env.root, f"outcome-first-{time.monotonic_ns()}.json")
    first = subprocess.Popen(
        cli.module_cmd(__spec__.name, *_child_cmd(env, workdir, outcome, hold=hold)),
        env=cli.module_env(), cwd=cli.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 600
    while not os.path.exists(os.path.join(workdir, LOCK_FILE)) and first.poll() is None:
        if time.monotonic() > deadline:
            first.kill()
            raise RuntimeError("the first run never took the workdir lock")
        time.sleep(0.2)
    second = run_child(env, workdir)
    open(hold, "w").close()
    stdout, stderr = first.communicate(timeout=900)
    first_out = _read_outcome(subprocess.CompletedProcess(first.args, first.returncode,
                                                          stdout, stderr), outcome, workdir)
    if judge(first_out, reference) != "recovered":
        outcome_name = "silent_wrong" if first_out["returncode"] == 0 else "other_failure"
    else:
        outcome_name = judge(second, reference)  # clear_error when refused with one line
    return {"case": "a second run on a busy workdir", "outcome": outcome_name,
            "error": (second["error_lines"] or [None])[0]}


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__)
    p.add_argument("--out", default="benchmarks/results/fault_injection")
    p.add_argument("--kills", type=int, default=24, help="kill -9 points (>= 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the case workdirs")
    p.add_argument("--quick", action="store_true",
                   help="one case of each class (2 kills, 1 corruption, every interruption, "
                        "header, wrong base, concurrent run); no divergence / config cases")
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("workdir", "model_dir", "cache_dir", "outcome", "kill", "mask_file", "hold"):
        p.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    p.add_argument("--stop_after", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--learning_rate", type=float, default=1e-3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    os.makedirs(args.out, exist_ok=True)
    root = tempfile.mkdtemp(prefix="fishjax-faults-")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env = Env(model_dir=build_tiny_model_dir(os.path.join(root, "tiny")),
              cache_dir=os.path.join(root, "cache"), root=root)
    t0 = time.perf_counter()
    reference_dir = os.path.join(root, "reference")
    reference = run_child(env, reference_dir)
    assert reference["returncode"] == 0 and reference["finished"], reference
    rows: list[dict[str, Any]] = []
    case_no = [0]

    def fresh() -> str:
        case_no[0] += 1
        return os.path.join(root, f"case-{case_no[0]:03d}")

    def report(row):
        rows.append(row)
        print(f"{len(rows):3d} {row['outcome']:14s} {row['case']}"
              + (f"  [{row['error'][:110]}]" if row.get("error") else ""), flush=True)

    # kill -9 at every drawn point (one drawn past the calls a run makes is moved earlier)
    specs = kill_points(args.kills, args.seed)[:2 if args.quick else None]
    while specs:
        spec = specs.pop(0)
        workdir = fresh()
        first = run_child(env, workdir, kill=spec)
        mark = os.path.join(workdir, KILLED_MARK)
        if first["returncode"] != -signal.SIGKILL or not os.path.exists(mark):
            if spec["n"] == 1:
                raise RuntimeError(f"kill point {spec} is never reached: {first}")
            specs.insert(0, {**spec, "n": max(1, spec["n"] // 2)})  # never reached: earlier
            shutil.rmtree(workdir, ignore_errors=True)
            continue
        with open(mark) as f:
            where = json.load(f)["where"]
        os.unlink(mark)
        rerun = run_child(env, workdir)
        report({"case": f"kill -9 at {where}", "outcome": judge(rerun, reference),
                "error": (rerun.get("error_lines") or [None])[0], "spec": spec})

    rng = np.random.default_rng(args.seed + 1000)
    kinds = ("checkpoint_data", "checkpoint_metadata", "best_data", "best_json", "mask",
             "delta", "results")
    for kind in kinds[:1] if args.quick else kinds:
        for mode in ("truncate",) if args.quick else ("truncate", "random_bytes"):
            report(corruption_case(env, kind, mode, rng, reference, fresh()))

    for action, point, when, n in INTERRUPTIONS:
        delay = round(float(rng.uniform(0.0, 0.15)), 3)
        report(interruption_case(env, reference, fresh(), action, point, when, n, delay))
    for kind in ("mask", "delta", "export"):
        report(header_case(env, kind, rng, reference_dir, reference, fresh()))
    report(wrong_base_case(env, reference_dir, reference, fresh()))
    report(concurrent_case(env, reference, fresh()))
    if args.quick:
        return _summarise(args, rows, root, t0)

    workdir = fresh()
    diverged = run_child(env, workdir, learning_rate=1e4)
    report({"case": "diverging run (learning rate 1e4)",
            "outcome": "clear_error" if diverged["returncode"] == 2 and not os.path.exists(
                os.path.join(workdir, "export")) else judge(diverged, reference),
            "error": (diverged.get("error_lines") or [None])[0]})
    workdir = fresh()
    run_child(env, workdir, stop_after=8)
    changed = run_child(env, workdir, learning_rate=3e-3)
    report({"case": "config change on resume (learning rate 1e-3 -> 3e-3)",
            "outcome": judge(changed, reference),
            "error": (changed.get("error_lines") or [None])[0]})
    return _summarise(args, rows, root, t0)


def _summarise(args: argparse.Namespace, rows: list[dict[str, Any]], root: str,
               t0: float) -> int:
    """Prints the table, writes `<out>/fault_injection.json`; exit 1 on any silent wrong
    result or other failure."""
    for row in rows:
        row["expected"] = expected_outcomes(row["case"])
    table = {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}
    summary = {"injected": len(rows), **table, "seconds": round(time.perf_counter() - t0, 1),
               "kills": args.kills, "seed": args.seed, "quick": args.quick,
               "machine": machine(), "cases": rows}
    name = "fault_injection_quick" if args.quick else "fault_injection"
    atomic_write_json(os.path.join(args.out, f"{name}.json"), summary)
    totals = ("| injected | recovered bit-identically | clear error | silent wrong result | "
              "other failure |\n|---|---|---|---|---|\n"
              f"| {len(rows)} | {table['recovered']} | {table['clear_error']} | "
              f"{table['silent_wrong']} | {table['other_failure']} |")
    probes = "\n".join(["| probe | expected | seen | message |", "|---|---|---|---|"] + [
        f"| {r['case']} | {' or '.join(r['expected'])} | {r['outcome']} | "
        f"{(r.get('error') or '').replace('|', '/')[:140]} |" for r in rows])
    core_io.atomic_write_text(os.path.join(args.out, f"{name}.md"),
                              f"{totals}\n\n{probes}\n")
    print("\n" + totals)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if table["silent_wrong"] or table["other_failure"] or any(
        r["outcome"] not in r["expected"] for r in rows) else 0


def expected_outcomes(case: str) -> tuple[str, ...]:
    """What a probe may end as: a killed or interrupted run recovers; a damaged checkpoint
    or results file recovers (an older checkpoint, a re-evaluation) or is a clear error;
    bad input (a damaged artefact, another base, a busy workdir, a diverging run, another
    config) is a clear error."""
    if case.startswith(("kill -9", "sigint", "sigterm", "enospc")):
        return ("recovered",)
    if case.startswith("corrupt"):
        return ("recovered", "clear_error")
    return ("clear_error",)


if __name__ == "__main__":
    sys.exit(main())
