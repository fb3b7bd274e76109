"""Helpers the notebooks share: logs in the cell output, the runtime and its mesh, settings
for accelerators, and the small summaries they plot (mask density per layer, metrics).

Kept here (not in each notebook) so that the notebooks stay short and this code is tested
with the rest (`tests/test_notebooks.py` runs the notebooks themselves).

Example:
  >>> from fishjax.train import notebook
  >>> notebook.show_logs()
  >>> print(notebook.runtime().describe())
  >>> config = notebook.for_accelerator(config)   # bf16 and a device-filling batch on TPU/GPU
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np

from fishjax.core import progress
from fishjax.core.tree import PyTree, flatten_paths
from fishjax.train import sharding

log = logging.getLogger("fishjax")
_LAYER = re.compile(r"^(?:encoder/)?(layer_\d+)/")
# Examples per device on TPU/GPU: MiniLM at length 128 fills a v5e core or a T4 with ~32.
PER_DEVICE_BATCH = 32


def show_logs(level: int = logging.INFO) -> None:
    """Sends fishjax's log lines to the cell output. `logging.basicConfig` does nothing in
    Jupyter/Colab (the root logger already has a handler there), so progress would vanish.
    Rerunning the cell adds no second handler."""
    progress.show_logs(sys.stdout, level)


@dataclasses.dataclass(frozen=True)
class Runtime:
    platform: str  # cpu, gpu or tpu
    device_kind: str  # e.g. "TPU v5 lite", "NVIDIA T4", "cpu"
    devices: int
    processes: int
    mesh_shape: dict[str, int]  # the mesh the default config builds: {"data": n, "model": 1}

    @property
    def accelerator(self) -> bool:
        return self.platform in ("gpu", "tpu")

    def describe(self) -> str:
        return (f"{self.devices} x {self.device_kind} ({self.platform}), "
                f"{self.processes} process(es); mesh {self.mesh_shape}")


def runtime(mesh: ml_collections.ConfigDict | None = None) -> Runtime:
    """What this runtime has, and the mesh `config.mesh` (default: all devices on `data`)
    makes of it."""
    devices = jax.devices()
    m = sharding.make_mesh(mesh.data if mesh else -1, mesh.model if mesh else 1)
    return Runtime(platform=devices[0].platform, device_kind=devices[0].device_kind,
                   devices=len(devices), processes=jax.process_count(),
                   mesh_shape={str(k): int(v) for k, v in m.shape.items()})


def for_accelerator(config: ml_collections.ConfigDict,
                    rt: Runtime | None = None) -> ml_collections.ConfigDict:
    """On TPU/GPU: bfloat16 compute (params and optimizer state stay float32) and a global
    batch of `PER_DEVICE_BATCH` per data-axis device (at least the config's); unchanged on
    CPU. A copy: the config passed in is not modified."""
    rt = rt or runtime(config.mesh)
    out = config.copy_and_resolve_references()
    if rt.accelerator:
        out.model.dtype = "bfloat16"
        data = rt.mesh_shape["data"]
        out.train.batch_size = max(int(config.train.batch_size), PER_DEVICE_BATCH * data)
        out.train.eval_batch_size = max(int(config.train.eval_batch_size),
                                        PER_DEVICE_BATCH * data)
    return out


def layer_of(path: str) -> str:
    """The group a `/`-joined parameter path is plotted under: `layer_3`, or its first
    component (`embeddings`, `pooler`, `classifier`)."""
    hit = _LAYER.match(path)
    return hit.group(1) if hit else path.split("/", 1)[0]


def density_by_layer(mask: PyTree | dict[str, np.ndarray]) -> dict[str, float]:
    """Share of selected entries per layer group (`layer_of`), in model order: embeddings,
    layer_0 ... layer_N, then the rest."""
    # Flat ({"a/b": array}, as read_mask returns) or a nested tree shaped like the params.
    nested = any(isinstance(v, Mapping) for v in mask.values())
    flat = {"/".join(p): v for p, v in flatten_paths(mask).items()} if nested else mask
    selected: dict[str, int] = {}
    total: dict[str, int] = {}
    for path, m in flat.items():
        g = layer_of(path)
        m = np.asarray(m)
        selected[g] = selected.get(g, 0) + int(np.count_nonzero(m))
        total[g] = total.get(g, 0) + m.size

    def order(g: str) -> tuple[int, int, str]:
        if g == "embeddings":
            return (0, 0, g)
        if g.startswith("layer_"):
            return (1, int(g.split("_")[1]), g)
        return (2, 0, g)

    return {g: selected[g] / total[g] for g in sorted(total, key=order)}


def read_metrics(workdir: str, keys: Sequence[str] = ("train/loss",)) -> dict[str, list]:
    """`{"step": [...], key: [...]}` for the metrics.jsonl rows of a run that hold every key
    (e.g. `("train/loss",)`, `("eval/accuracy",)`)."""
    path = os.path.join(workdir, "metrics.jsonl")
    out: dict[str, list] = {"step": [], **{k: [] for k in keys}}
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if all(k in row for k in keys):
                out["step"].append(row["step"])
                for k in keys:
                    out[k].append(row[k])
    return out
