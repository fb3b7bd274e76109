"""What the encoders offer to code that adds modules to them or picks their leaves.

Method and PEFT code never names a model path: it asks this table. Per architecture family
(`EncoderConfig.model_type`):
- `head_regex`: the task head's leaves (trained densely by every sparse method);
- `adapter_sites`: named placements of bottleneck adapters, as regexes over the module
  paths of the adapter slots: Houlsby (after attention and after the FFN) and Pfeiffer
  (after the FFN only).

Adapter slots are the encoder's `AddNorm` blocks (Hugging Face's `*Output` modules: dense,
dropout, residual add, LayerNorm): an `AddNorm` whose params carry an `ADAPTER_KEY` subtree
applies that adapter after its dense + dropout (`fishjax.models.encoder`). `adapter_slots`
lists them in a params tree and `slot_width` gives the width of the hidden state there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from fishjax.core.errors import ModelError
from fishjax.core.tree import Path, PyTree, flatten_paths

# Name of the optional adapter subtree inside an AddNorm block's params.
ADAPTER_KEY = "adapter"
# Every BERT/RoBERTa head leaf: BERT's pooler + classifier, RoBERTa's classifier head.
HEAD_REGEX = r"^(pooler|classifier)/"
# An adapter slot's own leaves: its output projection (whose last dim is the slot's width)
# and its LayerNorm.
_SLOT_DENSE = ("dense", "kernel")
_SLOT_NORM = ("LayerNorm", "scale")

_ENCODER_ADAPTER_SITES = {
    "houlsby": r"^encoder/layer_\d+/(attention/)?output$",
    "pfeiffer": r"^encoder/layer_\d+/output$",
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The paths one model family offers (see the module docstring)."""

    family: str
    head_regex: str
    adapter_sites: Mapping[str, str]


ARCHITECTURES = {
    "bert": Architecture("bert", HEAD_REGEX, _ENCODER_ADAPTER_SITES),
    "roberta": Architecture("roberta", HEAD_REGEX, _ENCODER_ADAPTER_SITES),
}
# Adapter placements every family offers (what `config.method.peft.adapter_variant` takes).
ADAPTER_SITES = _ENCODER_ADAPTER_SITES


def architecture(model_type: str) -> Architecture:
    """The table entry of a model family (`EncoderConfig.model_type`)."""
    if model_type not in ARCHITECTURES:
        raise ModelError(f"no architecture entry for model type {model_type!r}; known: "
                         f"{sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


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
