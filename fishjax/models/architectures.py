"""The models' adapter slots, for code that adds bottleneck adapters to them.

A family's head and its named adapter placements are in its registry entry
(`fishjax.models.registry`). Adapter slots are the blocks whose output projection feeds a
residual add: the encoder's `AddNorm` blocks (Hugging Face's `*Output` modules: dense,
dropout, residual add, LayerNorm) and the decoder's attention (`o_proj`) and MLP
(`down_proj`) blocks. A slot whose params carry an `ADAPTER_KEY` subtree applies that
adapter to its output projection's result, before the residual add
(`fishjax.models.encoder`, `fishjax.models.decoder`). `adapter_slots` lists them in a
params tree and `slot_width` gives the width of the hidden state there.
"""

from __future__ import annotations

import numpy as np

from fishjax.core.errors import ModelError
from fishjax.core.tree import Path, PyTree, flatten_paths

# Name of the optional adapter subtree inside an AddNorm block's params.
ADAPTER_KEY = "adapter"
# An adapter slot's output projection (whose last dim is the slot's width), and what else
# the slot must hold: the encoder's AddNorm its LayerNorm; the decoder's blocks nothing.
_SLOT_OUTPUTS = {("dense", "kernel"): ("LayerNorm", "scale"),
                 ("o_proj", "kernel"): None, ("down_proj", "kernel"): None}


def _slot_output(flat: dict, module: Path) -> tuple[str, ...] | None:
    for leaf, beside in _SLOT_OUTPUTS.items():
        if module + leaf in flat and (beside is None or module + beside in flat):
            return leaf
    return None


def adapter_slots(params: PyTree) -> list[Path]:
    """Module paths of every adapter slot in a params tree, sorted."""
    flat = flatten_paths(params)
    modules = {p[:-2] for p in flat if p[-2:] in _SLOT_OUTPUTS}
    return sorted(m for m in modules if _slot_output(flat, m) is not None)


def slot_width(params: PyTree, slot: Path) -> int:
    """Width of the hidden state at an adapter slot (its output projection's last dim)."""
    flat = flatten_paths(params)
    leaf = _slot_output(flat, tuple(slot))
    if leaf is None:
        raise ModelError(f"{'/'.join(slot)!r} is not an adapter slot of these params (no "
                         f"output projection among {['/'.join(k) for k in _SLOT_OUTPUTS]})")
    return int(np.shape(flat[tuple(slot) + leaf])[-1])
