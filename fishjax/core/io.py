"""Atomic file writes: write to a temp file in the same folder, then rename into place.

Readers (or a concurrent writer) see either the old file or the complete new one, never a
partial file; an interrupted write leaves no temp file behind, and a process killed
mid-write leaves only temp names that `remove_orphans` recognises. Files and folders get
the permissions the umask allows (temp files are created private, then opened up before
the rename). JSON is written strictly: a NaN or infinity becomes null, and the document
says which values were not finite (`"_non_finite": {"path": "nan"}`), so every file is
valid JSON. `atomic_write_json(..., sealed=True)` seals a document (`fishjax.core.integrity`:
a sha256 of every byte, inside it), and `read_json(..., error=...)` checks the seal.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO

from fishjax.core.integrity import SEAL_KEY, SEALED_KEY, check_seal, seal, seal_entries

TMP_FILE_PREFIX = ".tmp-"  # atomic_write's temp files
TMP_DIR_MARKERS = (".tmp-", ".old-")  # atomic_directory's: .<name>.tmp-* and .<name>.old-*


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Calls `write(f)` on a binary temp file beside `path`, then renames it to `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_FILE_PREFIX,
                               suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` (not atomic: for files inside an `atomic_directory`), with
    the permissions the umask allows."""
    with open(path, "wb") as f:
        f.write(data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json_value(obj: Any, path: str = "", bad: dict[str, str] | None = None) -> Any:
    """`obj` with every non-finite float replaced by None (numpy scalars made Python
    ones); `bad` collects {path: repr} of what was replaced."""
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy/jax scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        if bad is not None:
            bad[path or "."] = repr(obj)
        return None
    if isinstance(obj, dict):
        return {k: strict_json_value(v, f"{path}/{k}" if path else str(k), bad)
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json_value(v, f"{path}/{i}" if path else str(i), bad)
                for i, v in enumerate(obj)]
    return obj


def strict_json(obj: Any, **dumps_kwargs) -> str:
    """JSON text of `obj` with non-finite numbers as null (and named under `_non_finite`
    when `obj` is a dict); never the invalid `NaN`/`Infinity` tokens."""
    bad: dict[str, str] = {}
    clean = strict_json_value(obj, "", bad)
    if bad and isinstance(clean, dict):
        clean = {**clean, "_non_finite": bad}
    return json.dumps(clean, allow_nan=False, default=str, **dumps_kwargs)


def atomic_write_json(path: str | os.PathLike, obj: Any, sealed: bool = False) -> None:
    """Writes `obj` as strict JSON, atomically; `sealed` (a dict `obj`): with the seal of
    its bytes inside, checked by `read_json(path, error=...)`."""
    if not sealed:
        atomic_write_text(path, strict_json(obj, indent=2, sort_keys=True) + "\n")
        return
    text = strict_json({**obj, **seal_entries()}, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, seal(text.encode("utf-8")))


def atomic_directory(out_dir: str | os.PathLike, fill: Callable[[str], None]) -> str:
    """Calls `fill(tmp)` on a fresh temp folder beside `out_dir`, fsyncs its files, then
    renames it to `out_dir` (replacing a previous folder); returns the absolute path.

    Readers see the old folder or the complete new one; a failed `fill` leaves nothing.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"target exists and is not a directory: {out_dir}")
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        fill(tmp)
        # So that a crash right after the rename cannot expose empty or truncated files.
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), "rb") as f:
                os.fsync(f.fileno())
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _move_into_place(tmp: str, out_dir: str) -> None:
    if not os.path.exists(out_dir):
        os.rename(tmp, out_dir)
        return
    # A non-empty directory cannot be replaced by rename(2): move the old one aside first.
    parent, base = os.path.split(out_dir)
    old = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex}")
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_orphans(folder: str | os.PathLike) -> list[str]:
    """Removes the temp files and folders that killed atomic writes left in `folder` (not
    recursive); returns what was removed. Only names this module creates are touched."""
    removed = []
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        full = os.path.join(folder, name)
        if os.path.isfile(full) and name.startswith(TMP_FILE_PREFIX):
            os.unlink(full)
        elif os.path.isdir(full) and name.startswith(".") and any(
                m in name for m in TMP_DIR_MARKERS):
            shutil.rmtree(full, ignore_errors=True)
        else:
            continue
        removed.append(full)
    return removed


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike, error: type[Exception] | None = None,
              kind: str = "JSON") -> Any:
    """The parsed content of a JSON file. With `error`: a sealed file's seal is checked
    (and its entries dropped from the result); a damaged file, or one that is not JSON,
    raises `error` naming the file (else OSError / ValueError propagate)."""
    with open(path, "rb") as f:
        data = f.read()
    if error is None:
        return json.loads(data.decode("utf-8"))
    intact = check_seal(data)
    if isinstance(intact, str):
        raise error(f"{kind} file {os.fspath(path)!r} is damaged: {intact}; restore or "
                    "recreate it")
    try:
        obj = json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise error(f"{kind} file {os.fspath(path)!r} is not valid JSON ({e})") from None
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k not in (SEAL_KEY, SEALED_KEY)}
    return obj
