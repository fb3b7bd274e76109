"""Resumable checkpoints (latest) and the best model by dev metric, with orbax, verified.

- `<workdir>/checkpoints/<step>`: the full train state (trainable params, optimizer state,
  step, PRNG key), saved every `checkpoint_every_steps`; the newest two are kept. A rerun
  with the same workdir restores the newest and continues with identical results.
- `<workdir>/best/<step>`: only the trainable params of the best evaluation so far, with
  its score in `<workdir>/best/best.json`.
- `<workdir>/train_time.json`: the training seconds spent up to each kept checkpoint, over
  every run of the workdir, so a resumed run can report what the whole training cost.

Each step folder also holds an integrity record: the sha256 of the saved tree
(`fishjax.core.tree.tree_sha256`), checked when it is restored. A damaged newest
checkpoint is reported (folder and reason) and the one before it is used, with a warning;
with none usable, a `CheckpointError` says which folder to delete or to start a new
workdir. Orbax writes each step into a temporary folder and renames it when complete, so an
interrupted save never leaves a checkpoint that looks finished (and its leftovers are
removed when the manager opens).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp

from fishjax.core.errors import CheckpointError
from fishjax.core.io import TMP_DIR_MARKERS, atomic_write_json, read_json
from fishjax.core.tree import all_finite, tree_sha256

log = logging.getLogger("fishjax")
KEEP_LATEST = 2
FOLDERS = ("checkpoints", "best")
TRAIN_TIME_FILE = "train_time.json"
ORBAX_TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's <step>.orbax-checkpoint-tmp-<time>/


def remove_partial_saves(workdir: str) -> list[str]:
    """Removes the temporary folders of saves that did not finish (a Ctrl-C, SIGTERM or a
    full disk during a save); returns them. Finished checkpoints are untouched."""
    removed = []
    for sub in FOLDERS:
        folder = os.path.join(workdir, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
            if ORBAX_TMP_MARK in name:
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
                removed.append(os.path.join(folder, name))
    return removed


def remove_checkpoints(workdir: str) -> list[str]:
    """Deletes a finished run's `checkpoints/`, `best/` and the training times recorded per
    checkpoint (train.keep_checkpoints=False; results.json keeps the total); returns what it
    deleted. Each folder is first renamed to a hidden temporary name, so a kill half-way
    leaves no half-deleted checkpoint, only litter the next run removes."""
    removed = []
    for name in FOLDERS:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            doomed = os.path.join(workdir, f".{name}{TMP_DIR_MARKERS[0]}deleted")
            shutil.rmtree(doomed, ignore_errors=True)  # left by a kill during an earlier one
            os.rename(path, doomed)
            shutil.rmtree(doomed)
            removed.append(path)
    times = os.path.join(workdir, TRAIN_TIME_FILE)
    if os.path.exists(times):
        os.remove(times)
        removed.append(times)
    return removed


def _manager(path: str, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False,
        cleanup_tmp_directories=True)
    return ocp.CheckpointManager(path, options=options)


def abstract(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of `tree`, the restore target."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _save(manager: ocp.CheckpointManager, step: int, tree: Any) -> None:
    with interrupts_deferred():
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree),
            integrity=ocp.args.JsonSave({"sha256": tree_sha256(tree), "step": int(step)})),
            force=True)
        manager.wait_until_finished()


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Holds SIGINT and SIGTERM until the block ends, then raises KeyboardInterrupt: a
    save is never cut half-way (orbax's writer threads would go on writing after the main
    thread stopped, leaving a temporary folder behind). A second signal raises at once.
    Only in the main thread (the only one signals reach); elsewhere a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum, frame):
        if held:
            raise KeyboardInterrupt(f"signal {signum}")
        held.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if held:
        raise KeyboardInterrupt(f"signal {held[0]} during a checkpoint save (the save finished)")


def _restore(manager: ocp.CheckpointManager, step: int, like: Any, folder: str) -> Any:
    """The verified tree of `step`; CheckpointError (folder and reason) if it cannot be."""
    where = os.path.join(folder, str(step))
    try:
        out = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract(like)),
            integrity=ocp.args.JsonRestore()))
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{where} cannot be read ({type(e).__name__}: {reason})") from None
    if tree_sha256(out.state) != (out.integrity or {}).get("sha256"):
        raise CheckpointError(f"{where} is damaged: its arrays do not match the integrity "
                              "record written with it")
    return out.state


class Checkpoints:
    def __init__(self, workdir: str, keep: int = KEEP_LATEST):
        self.workdir = os.path.abspath(workdir)
        self._latest_dir = os.path.join(self.workdir, FOLDERS[0])
        self._best_dir = os.path.join(self.workdir, FOLDERS[1])
        self._latest = _manager(self._latest_dir, keep)
        self._best = _manager(self._best_dir, 1)
        self._best_json = os.path.join(self._best_dir, "best.json")
        self._train_time_json = os.path.join(self.workdir, TRAIN_TIME_FILE)

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def save(self, step: int, state: Any, train_s: float | None = None) -> None:
        """Saves `state` as step `step`; `train_s`: the training seconds it took to get
        here, over all runs (None: unknown), kept for `train_s_at`."""
        if self._latest.latest_step() == step:
            return
        _save(self._latest, step, state)
        if jax.process_index() == 0:
            kept = {str(s) for s in self._latest.all_steps()}
            times = {k: v for k, v in self._train_times().items() if k in kept}
            times[str(step)] = train_s
            atomic_write_json(self._train_time_json, times)

    def _train_times(self) -> dict[str, float | None]:
        if not os.path.exists(self._train_time_json):
            return {}
        try:
            times = read_json(self._train_time_json)
        except ValueError:
            times = None
        if not isinstance(times, dict):  # only a clock: warn, never stop the run for it
            log.warning("%s is not a JSON object of step: seconds; the training time of "
                        "this workdir's earlier runs is unknown", self._train_time_json)
            return {}
        return times

    def train_s_at(self, step: int) -> float | None:
        """The training seconds, over all runs, up to the checkpoint of `step` (None:
        not recorded, e.g. a workdir from before the record existed)."""
        value = self._train_times().get(str(step))
        return float(value) if isinstance(value, (int, float)) else None

    def restore_latest(self, like: Any) -> Any | None:
        """The newest usable saved state, placed like `like` (a state or its abstract
        tree): a damaged newest one is reported and the one before it used."""
        steps = sorted(self._latest.all_steps(), reverse=True)
        problems = []
        for step in steps:
            try:
                state = _restore(self._latest, step, like, self._latest_dir)
            except CheckpointError as e:
                problems.append(str(e))
                log.warning("%s; trying an older checkpoint", e)
                continue
            if problems:
                log.warning("resuming from %s/%d instead", self._latest_dir, step)
            return state
        if problems:
            raise CheckpointError(
                f"no usable checkpoint in {self._latest_dir}: {'; '.join(problems)}. Delete "
                f"{self._latest_dir} to train again from step 0 in this workdir, or use a "
                "new workdir")
        return None

    def best(self) -> dict[str, Any] | None:
        """`{"step": s, "score": x, "metrics": {...}}` of the best evaluation, if any."""
        if not os.path.exists(self._best_json):
            return None
        try:
            return read_json(self._best_json)
        except ValueError as e:
            raise CheckpointError(f"{self._best_json} is not valid JSON ({e}); delete "
                                  f"{self._best_dir} to keep the last checkpoint's params "
                                  "as the result") from None

    def maybe_save_best(
        self, step: int, trainable: Any, score: float, metrics: dict[str, float]
    ) -> bool:
        """Saves `trainable` if `score` beats the best so far; returns whether it did.

        A diverged model is never "best": every eval metric and every parameter must be
        finite (a NaN model predicts one class, which can score above chance).
        """
        if not math.isfinite(score) or not all(math.isfinite(v) for v in metrics.values()):
            return False
        best = self.best()
        if best is not None and best.get("score") is not None and score <= best["score"]:
            return False
        if not all_finite(trainable):
            log.warning("step %d: non-finite parameters: not kept as the best model", step)
            return False
        if step not in self._best.all_steps():  # saved before a crash, before best.json
            _save(self._best, step, trainable)
        if jax.process_index() == 0:
            atomic_write_json(self._best_json, {"step": step, "score": score, "metrics": metrics})
        return True

    def best_step(self) -> int | None:
        """The step of the params `restore_best` returns."""
        return self._best.latest_step()

    def restore_best(self, like: Any) -> Any | None:
        # Only improvements are ever saved, so the newest step in best/ is the best one
        # (even if a crash came between its save and the update of best.json).
        step = self._best.latest_step()
        if step is None:
            return None
        try:
            return _restore(self._best, step, like, self._best_dir)
        except CheckpointError as e:
            raise CheckpointError(f"{e}. Delete {self._best_dir} to export the last "
                                  "checkpoint's params instead (results.json will say so), or "
                                  "rerun in a new workdir") from None

    def close(self) -> None:
        self._latest.close()
        self._best.close()
