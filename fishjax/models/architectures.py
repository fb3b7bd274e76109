"""The encoders' adapter slots, for code that adds bottleneck adapters to them.

A family's head and its named adapter placements are in its registry entry
(`fishjax.models.registry`). Adapter slots are the encoder's `AddNorm` blocks (Hugging
Face's `*Output` modules: dense, dropout, residual add, LayerNorm): an `AddNorm` whose
params carry an `ADAPTER_KEY` subtree applies that adapter after its dense + dropout
(`fishjax.models.encoder`). `adapter_slots` lists them in a params tree and `slot_width`
gives the width of the hidden state there.
"""

from __future__ import annotations

import numpy as np

from fishjax.core.errors import ModelError
from fishjax.core.tree import Path, PyTree, flatten_paths

# Name of the optional adapter subtree inside an AddNorm block's params.
ADAPTER_KEY = "adapter"
# An adapter slot's own leaves: its output projection (whose last dim is the slot's width)
# and its LayerNorm.
_SLOT_DENSE = ("dense", "kernel")
_SLOT_NORM = ("LayerNorm", "scale")


def adapter_slots(params: PyTree) -> list[Path]:
    """Module paths of every adapter slot (`AddNorm` block) in a params tree, sorted."""
    flat = flatten_paths(params)
    modules = {p[:-2] for p in flat if p[-2:] == _SLOT_DENSE}
    return sorted(m for m in modules if m + _SLOT_NORM in flat)


def slot_width(params: PyTree, slot: Path) -> int:
    """Width of the hidden state at an adapter slot (its output projection's last dim)."""
    leaf = flatten_paths(params).get(tuple(slot) + _SLOT_DENSE)
    if leaf is None:
        raise ModelError(f"{'/'.join(slot)!r} is not an adapter slot of these params (no "
                         f"{'/'.join(_SLOT_DENSE)!r})")
    return int(np.shape(leaf)[-1])
