"""A fingerprint of base params, so a file trained on one base is never applied to another."""

from __future__ import annotations

import hashlib

import numpy as np

from fishjax.core.tree import PyTree, host_arrays


def base_fingerprint(params: PyTree, skip: set[str] | None = None) -> str:
    """sha256 over path, dtype, shape and bytes of every leaf whose path is not in `skip`."""
    h = hashlib.sha256()
    for p, x in sorted(host_arrays(params).items()):
        name = "/".join(p)
        if skip and name in skip:
            continue
        x = np.ascontiguousarray(x)
        h.update(f"{name}|{x.dtype.str}|{list(x.shape)}\n".encode())
        h.update(x.tobytes())
    return h.hexdigest()
