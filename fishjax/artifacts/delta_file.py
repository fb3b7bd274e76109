"""Delta files: a task's sparse increment (+ dense head) on disk, bound to its base model.

A delta file is a safetensors file with, per increment leaf, `<path>/indices` (int32, flat
row-major, sorted, unique) and `<path>/values` (float32), and per densely trained leaf
(the task head) `<path>/dense` (its full trained value: the head is freshly initialised,
so it is stored, not incremented). The JSON metadata in the header (key `fishjax_delta`)
holds the base model id, a fingerprint of the base params (sha256 over the path, dtype,
shape and bytes of every base leaf the file does not replace), the number of labels, the
leaf shapes, and the method's selection settings (rate, selection rule, seed, ...) with the
fishjax version. Files are written atomically.

`apply_delta_file(delta, params)` checks shapes and the fingerprint, so a delta from
another base model fails with a `DeltaError` naming both; `load_model_with_delta` and
`export_merged` load the base with `fishjax.models.load_model` and merge.

Example:
  >>> save_delta("rte.safetensors", delta, head, base, metadata={"base_model": "minilm-l6"})
  >>> export_merged("rte.safetensors", "/tmp/rte-merged")  # a Hugging Face folder
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import DeltaError
from fishjax.core.safetensors_io import read_tagged, write_tagged
from fishjax.core.tree import (
    PyTree,
    flatten_paths,
    host_arrays,
    merge_trees,
    selector_of,
    split_tree,
    unflatten_paths,
)
from fishjax.core.version import __version__
from fishjax.models import load_model
from fishjax.models.export import export_model_folder
from fishjax.objectives import from_metadata
from fishjax.params import sparse as sparse_lib
from fishjax.params.sparse import SparseDelta

META_KEY = "fishjax_delta"
FORMAT_VERSION = 1
DELTA_FILE = "delta.safetensors"


@dataclasses.dataclass
class LoadedDelta:
    """A delta file's content: the increment, the dense (head) leaves, the metadata."""

    delta: SparseDelta
    dense: dict  # nested dict of the densely stored leaves (the head)
    metadata: dict[str, Any]


def save_delta(path: str, delta: SparseDelta, dense: PyTree, base: PyTree,
               metadata: dict[str, Any] | None = None) -> str:
    """Writes a delta file atomically; returns its absolute path.

    `delta`: the increment; `dense`: leaves stored whole (the task head); `base`: the base
    params the increment was trained on (any tree holding at least the leaves `delta`
    touches; the leaves of `dense` are ignored), fingerprinted into the metadata.
    `metadata`: e.g. base_model, the objective's metadata, method, rate, selection, seed, task.

    Example:
      >>> save_delta(f"{workdir}/delta.safetensors", delta, head, base,
      ...            metadata={"base_model": "minilm-l6", **objective.metadata(), "rate": 0.01})
    """
    sparse_lib.validate(delta, base)
    dense_flat = host_arrays(dense)
    dense_names = {"/".join(p) for p in dense_flat}
    base_flat = host_arrays(base)
    tensors: dict[str, np.ndarray] = {}
    sparse_meta = {}
    vals = host_arrays(delta.values)
    for p, idx in host_arrays(delta.indices).items():
        name = "/".join(p)
        tensors[f"{name}/indices"] = idx.astype(np.int32)
        tensors[f"{name}/values"] = vals[p].astype(np.float32)
        sparse_meta[name] = {"shape": list(base_flat[p].shape), "count": int(idx.size)}
    dense_meta = {}
    for p, x in dense_flat.items():
        name = "/".join(p)
        tensors[f"{name}/dense"] = x.astype(np.float32)
        dense_meta[name] = list(x.shape)
    meta = {
        **(metadata or {}),
        "format_version": FORMAT_VERSION,
        "base_fingerprint": base_fingerprint(base, skip=dense_names),
        "sparse": sparse_meta,
        "dense": dense_meta,
        "selected": sparse_lib.count(delta),
        "fishjax_version": __version__,
    }
    return write_tagged(path, tensors, META_KEY, meta)


def load_delta(path: str) -> LoadedDelta:
    """Reads and checks a delta file (tensor names, dtypes, index ranges, counts)."""
    tensors, meta = read_tagged(
        path, META_KEY, DeltaError, "delta",
        required=("format_version", "sparse", "dense", "selected", "base_fingerprint"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise DeltaError(f"{path!r}: delta format {meta.get('format_version')!r} is not "
                         f"supported (expected {FORMAT_VERSION})")
    expected = {f"{n}/{s}" for n in meta["sparse"] for s in ("indices", "values")}
    expected |= {f"{n}/dense" for n in meta["dense"]}
    if set(tensors) != expected:
        raise DeltaError(f"{path!r}: tensors {sorted(set(tensors) ^ expected)[:5]} do not "
                         "match the metadata")
    indices, values, dense = {}, {}, {}
    for name, info in meta["sparse"].items():
        idx, val = tensors[f"{name}/indices"], tensors[f"{name}/values"]
        n = int(np.prod(info["shape"]))
        if idx.dtype != np.int32 or idx.ndim != 1 or val.shape != idx.shape or \
                idx.size != info["count"] or not np.issubdtype(val.dtype, np.floating):
            raise DeltaError(f"{path!r}: {name}: malformed indices/values "
                             f"({idx.dtype}{list(idx.shape)}, {val.dtype}{list(val.shape)})")
        if idx.size and (idx[0] < 0 or idx[-1] >= n or np.any(np.diff(idx) <= 0)):
            raise DeltaError(f"{path!r}: {name}: indices must be sorted, unique and in "
                             f"[0, {n})")
        indices[tuple(name.split("/"))] = idx
        values[tuple(name.split("/"))] = val
    for name, shape in meta["dense"].items():
        x = tensors[f"{name}/dense"]
        if list(x.shape) != list(shape):
            raise DeltaError(f"{path!r}: {name}: shape {list(x.shape)}, metadata says {shape}")
        dense[tuple(name.split("/"))] = x
    delta = SparseDelta(indices=unflatten_paths(indices), values=unflatten_paths(values))
    if sparse_lib.count(delta) != meta["selected"]:
        raise DeltaError(f"{path!r}: {sparse_lib.count(delta)} entries read, header says "
                         f"{meta['selected']}")
    return LoadedDelta(delta=delta, dense=unflatten_paths(dense), metadata=meta)


def check_base(loaded: LoadedDelta, params: PyTree) -> None:
    """Raises DeltaError unless `params` is the base model the delta was trained on."""
    meta = loaded.metadata
    flat = host_arrays(params)
    shapes = {"/".join(p): list(x.shape) for p, x in flat.items()}
    wrong = [(n, info["shape"], shapes.get(n)) for n, info in meta["sparse"].items()
             if shapes.get(n) != info["shape"]]
    wrong += [(n, s, shapes.get(n)) for n, s in meta["dense"].items() if shapes.get(n) != s]
    base_id = meta.get("base_model", "?")
    if wrong:
        raise DeltaError(
            f"delta (base model {base_id!r}) does not fit these params: (leaf, shape in the "
            f"delta, shape here) {wrong[:5]}")
    got = base_fingerprint(params, skip=set(meta["dense"]))
    if got != meta["base_fingerprint"]:
        raise DeltaError(
            f"delta was trained on base model {base_id!r} (fingerprint "
            f"{meta['base_fingerprint'][:12]}), but these params are a different base "
            f"(fingerprint {got[:12]}): apply it to the base model it was trained on")


def apply_delta_file(delta: str | LoadedDelta, params: PyTree) -> dict:
    """Dense params (numpy): `params` (the base, any head) with the delta applied.

    The increment is added to the base leaves and the stored dense leaves (the head)
    replace those of `params`. Raises DeltaError if `params` is not the delta's base.
    """
    loaded = load_delta(delta) if isinstance(delta, str) else delta
    check_base(loaded, params)
    dense_paths = set(flatten_paths(loaded.dense))
    _, base = split_tree(params, selector_of(params, dense_paths))
    merged = sparse_lib.merge(base, loaded.delta)
    return merge_trees(merged, loaded.dense)


def load_model_with_delta(delta: str | LoadedDelta, model_name: str | None = None,
                          **load_kwargs):
    """`fishjax.models.load_model` of the delta's base (or `model_name`), delta applied.

    Returns the `LoadedModel` with merged params. Raises DeltaError for a wrong base.
    """
    loaded = load_delta(delta) if isinstance(delta, str) else delta
    name = model_name or loaded.metadata.get("base_model")
    if not name:
        raise DeltaError("the delta names no base model; pass model_name")
    load_kwargs.setdefault("key", jax.random.PRNGKey(0))  # the head is replaced anyway
    objective = from_metadata(loaded.metadata, "the delta")
    model = load_model(name, objective.head_size, **load_kwargs)
    model.params = apply_delta_file(loaded, model.params)
    return model


def export_merged(path: str, out_dir: str, model_name: str | None = None) -> str:
    """Writes the base model with the delta applied as a Hugging Face folder."""
    loaded = load_delta(path)
    model = load_model_with_delta(loaded, model_name)
    return export_model_folder(
        model.params, model.config, out_dir, tokenizer_source=model.model_dir,
        objective_metadata=from_metadata(loaded.metadata, repr(path)).metadata())
