"""Mask files: a bool mask shaped like the params, on disk.

Safetensors with one int32 array of flat indices per leaf that has any selected entry
(keyed by the leaf's `/`-joined path), and JSON metadata (shapes of every leaf, the
number selected, the selection settings, seed, model id, fishjax version) in the header.
`load_mask` checks the file against the params it is meant for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fishjax.core.errors import MaskError
from fishjax.core.safetensors_io import read_tagged, write_tagged
from fishjax.core.tree import PyTree, count_true, leaf_paths, numpy_leaves, unflatten_like
from fishjax.core.version import __version__

META_KEY = "fishjax_mask"
MASK_FILE = "mask.safetensors"


def save_mask(path: str, mask: PyTree, metadata: dict[str, Any] | None = None) -> None:
    """Writes `mask` as int32 flat indices per leaf + JSON metadata, atomically."""
    paths, leaves = leaf_paths(mask), numpy_leaves(mask)
    tensors = {p: np.flatnonzero(m).astype(np.int32) for p, m in zip(paths, leaves, strict=True)
               if m.any()}
    meta = {
        "shapes": {p: list(m.shape) for p, m in zip(paths, leaves, strict=True)},
        "selected": count_true(mask),
        "fishjax_version": __version__,
        **(metadata or {}),
    }
    write_tagged(path, tensors, META_KEY, meta)


def _leaf_mask(path: str, name: str, tensors: dict[str, np.ndarray], size: int) -> np.ndarray:
    """The flat bool mask of leaf `name` (of `size` entries) from the file's tensors."""
    m = np.zeros(size, dtype=bool)
    if name in tensors:
        idx = tensors[name]
        if idx.dtype != np.int32 or idx.ndim != 1 or (idx.size and (
                idx.min() < 0 or idx.max() >= m.size)):
            raise MaskError(f"mask {path!r}: indices of {name!r} are out of range or malformed")
        m[idx] = True
    return m


def _check_count(path: str, selected: int, meta: dict[str, Any]) -> None:
    if selected != meta["selected"]:
        raise MaskError(f"mask {path!r}: {selected} entries read, header says "
                        f"{meta['selected']} (duplicate indices?)")


def load_mask(path: str, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Reads a mask file and checks it against `like` (the params): (mask, metadata)."""
    tensors, meta = read_tagged(path, META_KEY, MaskError, "mask",
                                required=("shapes", "selected"))
    paths, leaves = leaf_paths(like), numpy_leaves(like)
    want = {p: list(np.shape(x)) for p, x in zip(paths, leaves, strict=True)}
    if meta["shapes"] != want:
        missing = sorted(set(want) - set(meta["shapes"]))
        extra = sorted(set(meta["shapes"]) - set(want))
        differ = sorted(p for p in set(want) & set(meta["shapes"]) if want[p] != meta["shapes"][p])
        raise MaskError(
            f"mask {path!r} (model {meta.get('model', '?')}) does not fit these params: "
            f"missing leaves {missing[:5]}, unknown leaves {extra[:5]}, "
            f"shape mismatches {[(p, meta['shapes'][p], want[p]) for p in differ[:5]]}")
    mask = unflatten_like(like, [_leaf_mask(path, p, tensors, np.size(x)).reshape(np.shape(x))
                                 for p, x in zip(paths, leaves, strict=True)])
    _check_count(path, count_true(mask), meta)
    return mask, meta


def read_mask(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """({leaf path: bool array}, metadata) of a mask file, shaped by the shapes it records
    (no params needed; e.g. to compare masks across runs)."""
    tensors, meta = read_tagged(path, META_KEY, MaskError, "mask",
                                required=("shapes", "selected"))
    out = {p: _leaf_mask(path, p, tensors, int(np.prod(shape))).reshape(shape)
           for p, shape in sorted(meta["shapes"].items())}
    _check_count(path, sum(int(m.sum()) for m in out.values()), meta)
    return out, meta
