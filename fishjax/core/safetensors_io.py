"""Reading and writing safetensors files: the only weight format fishjax loads.

fishjax's own files (masks, deltas, PEFT trees, banks, profiles) are safetensors with a
JSON document under one metadata key naming their kind (`fishjax_mask`, `fishjax_delta`,
...); `write_tagged` writes one atomically with a content hash of its tensors
(`content_sha256`), `read_tagged` reads it and checks the hash, so a changed index or
value is an error, not a silently different model. `read_tensors` reads any safetensors
file (e.g. a Hugging Face `model.safetensors`). Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from fishjax.core.io import atomic_write_bytes, strict_json

CONTENT_HASH = "content_sha256"


def content_hash(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        x = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{x.dtype.str}|{list(x.shape)}\n".encode())
        h.update(x.tobytes())
    return h.hexdigest()


def read_tensors(path: str, error: type[Exception], kind: str = "weights"
                 ) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (bf16 via ml_dtypes); raises
    `error` naming the file if it is missing or not a valid safetensors file."""
    if not os.path.isfile(path):
        raise error(f"{kind} file not found: {path}")
    try:
        return safetensors.numpy.load_file(path)
    except Exception as e:  # the Rust reader raises its own, non-OSError, exception types
        raise error(f"cannot read {path}: not a valid safetensors file ({e})") from e


def write_tagged(path: str, tensors: dict[str, np.ndarray], meta_key: str,
                 meta: dict[str, Any]) -> str:
    """Writes `tensors` with `meta` (and their content hash) as JSON under `meta_key`,
    atomically; returns the absolute path. The bytes are a function of the arguments."""
    path = os.path.abspath(path)
    meta = {**meta, CONTENT_HASH: content_hash(tensors)}
    data = safetensors.numpy.save(tensors, metadata={meta_key: strict_json(meta, sort_keys=True)})
    atomic_write_bytes(path, data)
    return path


def read_tagged(path: str, meta_key: str, error: type[Exception], kind: str,
                required: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, metadata) of a fishjax safetensors file whose header holds JSON under
    `meta_key`; raises `error` naming the file if it is missing, corrupt, not a `kind`, or
    its metadata lacks a `required` key."""
    if not os.path.exists(path):
        raise error(f"{kind} file {path!r} does not exist")
    try:
        with safe_open(path, framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise error(f"{kind} file {path!r} is not a valid safetensors file: {e}") from None
    if meta_key not in header:
        raise error(f"{path!r} is not a fishjax {kind} file (no {meta_key} metadata)")
    try:
        meta = json.loads(header[meta_key])
    except json.JSONDecodeError as e:
        raise error(f"{kind} file {path!r} has corrupt metadata: {e}") from None
    missing = [k for k in required if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise error(f"{kind} file {path!r}: metadata lacks {missing}")
    if CONTENT_HASH in meta and meta[CONTENT_HASH] != content_hash(tensors):
        raise error(f"{kind} file {path!r} is damaged: its tensors do not match the content "
                    "hash it was written with (changed or corrupt bytes); restore or recreate "
                    "it (e.g. rerun the run that wrote it in a new workdir)")
    return tensors, meta
