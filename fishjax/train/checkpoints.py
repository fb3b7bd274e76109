"""Resumable checkpoints (latest) and the best model by dev metric, with orbax.

- `<workdir>/checkpoints/<step>`: the full train state (trainable params, optimizer state,
  step, PRNG key), saved every `checkpoint_every_steps`; only the newest is kept. A rerun
  with the same workdir restores it and continues with identical results.
- `<workdir>/best/<step>`: only the trainable params of the best evaluation so far, with
  its score in `<workdir>/best/best.json`.

Orbax writes each step into a temporary folder and renames it when complete, so an
interrupted save never leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from fishjax.core.io import atomic_write_json, read_json


def _manager(path: str, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(path, options=options)


def abstract(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of `tree`, the restore target."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    def __init__(self, workdir: str, keep: int = 1):
        self.workdir = os.path.abspath(workdir)
        self._latest = _manager(os.path.join(self.workdir, "checkpoints"), keep)
        self._best = _manager(os.path.join(self.workdir, "best"), 1)
        self._best_json = os.path.join(self.workdir, "best", "best.json")

    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def save(self, step: int, state: Any) -> None:
        if self._latest.latest_step() == step:
            return
        self._latest.save(step, args=ocp.args.StandardSave(state), force=True)
        self._latest.wait_until_finished()

    def restore_latest(self, like: Any) -> Any | None:
        """The newest saved state, placed like `like` (a state or its abstract tree)."""
        step = self._latest.latest_step()
        if step is None:
            return None
        return self._latest.restore(step, args=ocp.args.StandardRestore(abstract(like)))

    def best(self) -> dict[str, Any] | None:
        """`{"step": s, "score": x, "metrics": {...}}` of the best evaluation, if any."""
        if not os.path.exists(self._best_json):
            return None
        return read_json(self._best_json)

    def maybe_save_best(
        self, step: int, trainable: Any, score: float, metrics: dict[str, float]
    ) -> bool:
        """Saves `trainable` if `score` beats the best so far; returns whether it did."""
        if not math.isfinite(score):  # a diverged eval (NaN correlation) is never "best"
            return False
        best = self.best()
        if best is not None and math.isfinite(best["score"]) and score <= best["score"]:
            return False
        if step not in self._best.all_steps():  # saved before a crash, before best.json
            self._best.save(step, args=ocp.args.StandardSave(trainable), force=True)
            self._best.wait_until_finished()
        if jax.process_index() == 0:
            atomic_write_json(self._best_json, {"step": step, "score": score, "metrics": metrics})
        return True

    def restore_best(self, like: Any) -> Any | None:
        # Only improvements are ever saved, so the newest step in best/ is the best one
        # (even if a crash came between its save and the update of best.json).
        step = self._best.latest_step()
        if step is None:
            return None
        return self._best.restore(step, args=ocp.args.StandardRestore(abstract(like)))

    def close(self) -> None:
        self._latest.close()
        self._best.close()
