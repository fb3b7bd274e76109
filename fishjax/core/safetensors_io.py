"""Reading and writing safetensors files: the only weight format fishjax loads.

fishjax's own files (masks, deltas, PEFT trees, banks, profiles) are safetensors with a
JSON document under one metadata key naming their kind (`fishjax_mask`, `fishjax_delta`,
...); `write_tagged` writes one atomically, sealed (`fishjax.core.integrity`: a sha256 of
every byte, header and metadata included) and with a content hash of its tensors
(`content_sha256`, which files from before seals also carry); `read_tagged` checks both,
so a changed index, value, shape or metadata field is an error, not a silently different
model. `read_tensors` reads any safetensors
file (e.g. a Hugging Face `model.safetensors`). Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from fishjax.core.integrity import check_seal, seal, seal_entries
from fishjax.core.io import atomic_write_bytes, file_sha256, strict_json

CONTENT_HASH = "content_sha256"
# In an exported model.safetensors: the sha256 of the config.json written beside it.
CONFIG_HASH = "fishjax_config_sha256"


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
    `error` naming the file if it is missing, not a valid safetensors file, or sealed by
    fishjax (an export) and changed since, itself or the `config.json` it records."""
    if not os.path.isfile(path):
        raise error(f"{kind} file not found: {path}")
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            header = f.read(int.from_bytes(prefix, "little")) if len(prefix) == 8 else b""
        if b"fishjax_" not in header:  # a plain file (e.g. from the Hub): memory-mapped
            return safetensors.numpy.load_file(path)
        with open(path, "rb") as f:
            data = f.read()
        intact = check_seal(data, header_end(data))
        if not isinstance(intact, str):  # a damaged file is reported as such, below
            meta = json.loads(data[8:header_end(data)]).get("__metadata__") or {}
            tensors = dict(sorted(safetensors.numpy.load(data).items()))  # name order
    except Exception as e:  # the Rust reader raises its own, non-OSError, exception types
        raise error(f"cannot read {path}: not a valid safetensors file ({e})") from None
    if isinstance(intact, str):
        raise error(f"{kind} file {path} is damaged: {intact}; export it again")
    config = os.path.join(os.path.dirname(path), "config.json")
    if CONFIG_HASH in meta and (not os.path.isfile(config)
                                or file_sha256(config) != meta[CONFIG_HASH]):
        raise error(f"{config} is not the config exported with {path} (missing or changed "
                    "since the export: sizes, labels); export the model again")
    return tensors


def contiguous(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors as C-contiguous arrays: `safetensors.numpy.save` writes a transposed view's
    memory as if it were C order (a silently scrambled tensor)."""
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def sealed_safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The bytes of a safetensors file of `tensors` and `metadata`, sealed; a function of
    the arguments alone (`canonical_header`)."""
    data = canonical_header(safetensors.numpy.save(contiguous(tensors), metadata={
        **metadata, **seal_entries()}))
    return seal(data, header_end(data))


def canonical_header(data: bytes) -> bytes:
    """`data` (a safetensors file) with its header's metadata keys sorted. The Rust writer
    orders them by a hash seeded per process, so with more than one key the same file
    would come out with other bytes in another run. The tensor table and data are kept."""
    end = header_end(data)
    header = json.loads(data[8:end])
    metadata = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(metadata.items()))} if metadata else {}) | header
    text = json.dumps(ordered, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned, as written
    return len(text).to_bytes(8, "little") + text + data[end:]


def write_tagged(path: str, tensors: dict[str, np.ndarray], meta_key: str,
                 meta: dict[str, Any]) -> str:
    """Writes `tensors` with `meta` (and their content hash) as JSON under `meta_key`,
    sealed, atomically; returns the absolute path. The bytes are a function of the
    arguments."""
    path = os.path.abspath(path)
    meta = {**meta, CONTENT_HASH: content_hash(tensors)}
    atomic_write_bytes(path, sealed_safetensors(
        tensors, {meta_key: strict_json(meta, sort_keys=True)}))
    return path


def header_end(data: bytes) -> int:
    """The offset where a safetensors file's JSON header ends (8-byte length + header)."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors length prefix")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise ValueError("its header length runs past the end of the file")
    return 8 + n


def read_tagged(path: str, meta_key: str, error: type[Exception], kind: str,
                required: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, metadata) of a fishjax safetensors file whose header holds JSON under
    `meta_key`; raises `error` naming the file if it is missing, corrupt (any changed
    byte of a sealed file), not a `kind`, or its metadata lacks a `required` key."""
    if not os.path.exists(path):
        raise error(f"{kind} file {path!r} does not exist")
    damaged = (f"{kind} file {path!r} is damaged: {{}}; restore or recreate it (e.g. rerun "
               "the run that wrote it in a new workdir)")
    try:
        with open(path, "rb") as f:
            data = f.read()
        intact = check_seal(data, header_end(data))
        if isinstance(intact, str):
            raise error(damaged.format(intact))
        header = json.loads(data[8:header_end(data)]).get("__metadata__") or {}
        tensors = dict(sorted(safetensors.numpy.load(data).items()))  # name order, as before
    except (SafetensorError, OSError, ValueError, AttributeError) as e:
        if isinstance(e, error):
            raise
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
        raise error(damaged.format("its tensors do not match the content hash it was "
                                   "written with (changed or corrupt bytes)"))
    return tensors, meta
