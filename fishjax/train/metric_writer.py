"""Metrics to `metrics.jsonl` and TensorBoard event files (tensorboardX: no TensorFlow).

Each line is strict JSON: a non-finite value is written as null and named under
`_non_finite` (e.g. the eval loss of a model whose outputs overflowed).
"""

from __future__ import annotations

import os
from typing import Any

import jax
from tensorboardX import SummaryWriter

from fishjax.core.io import strict_json


class MetricWriter:
    """Appends `{"step": s, "<prefix>/<name>": v, ...}` lines; only process 0 writes."""

    def __init__(self, workdir: str, tensorboard: bool = True):
        self._active = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if not self._active:
            return
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        if tensorboard:
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any], prefix: str) -> None:
        if not self._active:
            return
        scalars = {f"{prefix}/{k}": float(v) for k, v in metrics.items()}
        self._jsonl.write(strict_json({"step": int(step), **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
