"""Device mesh and parameter/batch placement.

One train step runs over a `jax.sharding.Mesh` with a `data` axis (batch split across
devices) and an optional `model` axis (selected weight matrices split across devices).
Which weights are split is decided, big_vision style, by regexes over `/`-joined parameter
paths: the first rule whose regex `re.search`-matches a leaf's path gives its
`PartitionSpec`; leaves matching no rule are replicated. Because the rules search rather
than anchor at the start, the same rules also place optimizer-state leaves, whose paths end
with the parameter path (e.g. `1/0/mu/encoder/layer_0/attention/self/query/kernel`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fishjax.core.errors import ConfigError, ShardingError
from fishjax.core.tree import PyTree, path_str

DATA_AXIS = "data"
MODEL_AXIS = "model"

# (regex, partition spec as a tuple of axis names or None per array dimension)
ShardingRules = Sequence[tuple[str, Sequence[str | None]]]


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds a ('data', 'model') mesh. `data=-1` takes every device not used by `model`."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if model < 1:
        raise ShardingError(f"mesh.model must be >= 1, got {model}")
    if data == -1:
        if n % model:
            raise ShardingError(f"{n} devices cannot be split into model axis of size {model}")
        data = n // model
    if data < 1 or data * model != n:
        raise ShardingError(
            f"mesh data={data} x model={model} = {data * model} devices, but {n} are available"
        )
    # Auto axes: the compiler propagates shardings from the inputs (GSPMD); the model code
    # stays free of sharding annotations.
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), (DATA_AXIS, MODEL_AXIS), axis_types=auto,
                         devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def spec_for(path: str, ndim: int, rules: ShardingRules) -> PartitionSpec:
    """The partition spec of the first rule matching `path` (replicated if none does)."""
    for pattern, spec in rules:
        if re.search(pattern, path):
            spec = tuple(spec)
            if len(spec) != ndim:
                raise ShardingError(
                    f"sharding rule {pattern!r} gives {len(spec)} dims {spec} but {path!r} "
                    f"has {ndim}"
                )
            return PartitionSpec(*spec)
    return PartitionSpec()


def tree_shardings(tree: Any, mesh: Mesh, rules: ShardingRules = ()) -> Any:
    """A tree of `NamedSharding`s for `tree` (arrays or ShapeDtypeStructs) from `rules`."""

    def one(path, leaf):
        spec = spec_for(path_str(path), np.ndim(leaf), rules)
        for dim, axis in zip(leaf.shape, spec, strict=False):  # spec may be shorter
            if axis is not None and dim % mesh.shape[axis]:
                raise ShardingError(
                    f"{path_str(path)}: dimension {dim} is not divisible by mesh axis "
                    f"{axis!r} of size {mesh.shape[axis]}"
                )
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(one, tree)


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a global host batch on the mesh, each process supplying its own rows.

    Every process builds the same global batch (the data plan is deterministic), then
    contributes the contiguous slice of rows that its local devices hold.
    """
    sharding = batch_sharding(mesh)
    n_proc, proc = jax.process_count(), jax.process_index()

    def one(x):
        rows = x.shape[0] // n_proc
        local = x[proc * rows : (proc + 1) * rows]
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    return {k: one(v) for k, v in batch.items()}


def checked_shardings(tree: PyTree, mesh: Mesh, rules: ShardingRules, what: str) -> Any:
    """`tree_shardings`, with a rule that does not fit a leaf of `tree` (a method's own
    trees: e.g. a 2-D kernel rule that also matches a sparse increment's 1-D `delta/...`
    values, or an optimizer state leaf) reported as a ConfigError on `mesh.param_rules`."""
    try:
        return tree_shardings(tree, mesh, rules)
    except ShardingError as e:
        raise ConfigError(
            f"config.mesh.param_rules do not fit the {what}: {e}. A rule's regex searches "
            "every path of the trees the method trains and freezes (e.g. `base/...`, "
            "`delta/...`, `peft/...` besides the plain parameter paths): anchor it so that "
            "it matches only the leaves it is written for (e.g. r\"^base/.*query/kernel$\")"
        ) from None
