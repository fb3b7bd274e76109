"""Hugging Face decoder weights (`model.layers.0.self_attn.q_proj.weight`, ...) to the Flax
tree of `fishjax.models.decoder.CausalLM` and back, one name to one name.

Linear weights are stored [out, in] by PyTorch and [in, out] as Flax kernels (transposed
here); RMSNorm `weight` is Flax's `scale`; embeddings keep their [vocab, hidden] layout. A
checkpoint of a tied model may carry `lm_head.weight` as a copy of the embeddings: it is
checked equal and dropped. Any other name left over, or one missing, is a ModelError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from fishjax.core.errors import ModelError
from fishjax.core.tree import flatten_paths, unflatten_paths
from fishjax.models.decoder import DecoderConfig

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.(weight|bias)$")
_NORM = re.compile(r"^model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight$")


def flax_path(name: str) -> tuple[tuple[str, ...], bool]:
    """(the Flax path of a Hugging Face tensor name, whether it is transposed)."""
    if name == "model.embed_tokens.weight":
        return ("model", "embed_tokens", "embedding"), False
    if name == "model.norm.weight":
        return ("model", "norm", "scale"), False
    if name == "lm_head.weight":
        return ("lm_head", "kernel"), True
    m = _LAYER.match(name)
    if m:
        layer, block, proj, kind = m.groups()
        leaf = "kernel" if kind == "weight" else "bias"
        return ("model", f"layers_{layer}", block, proj, leaf), kind == "weight"
    m = _NORM.match(name)
    if m:
        return ("model", f"layers_{m.group(1)}", m.group(2), "scale"), False
    raise ModelError(f"unexpected decoder weight {name!r}")


def hf_to_flax(tensors: Mapping[str, np.ndarray], config: DecoderConfig,
               expected: Mapping | None = None, source: str = "checkpoint") -> dict:
    """The Flax params of `tensors` (float32). With `expected` (a params tree, e.g. from
    `init`), every leaf must be present with its shape, and nothing else."""
    flat = {}
    for name, value in tensors.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            embed = tensors.get("model.embed_tokens.weight")
            if embed is None or not np.array_equal(np.asarray(embed), np.asarray(value)):
                raise ModelError(f"{source}: tie_word_embeddings is set but lm_head.weight "
                                 "differs from the token embeddings")
            continue
        path, transpose = flax_path(name)
        array = np.asarray(value, np.float32)
        flat[path] = array.T if transpose else array
    if expected is not None:
        want = {p: np.shape(x) for p, x in flatten_paths(expected).items()}
        missing = sorted("/".join(p) for p in set(want) - set(flat))
        extra = sorted("/".join(p) for p in set(flat) - set(want))
        if missing or extra:
            raise ModelError(f"{source}: weights do not fit the config: missing {missing[:4]}"
                             f"{'...' if len(missing) > 4 else ''}, unexpected {extra[:4]}")
        for p, shape in want.items():
            if flat[p].shape != shape:
                raise ModelError(f"{source}: {'/'.join(p)} has shape {flat[p].shape}, the "
                                 f"config wants {shape}")
    return unflatten_paths(flat)


def hf_name(path: tuple[str, ...]) -> tuple[str, bool]:
    """(the Hugging Face tensor name of a Flax decoder param path, whether it is
    transposed): the inverse of `flax_path`."""
    if path == ("model", "embed_tokens", "embedding"):
        return "model.embed_tokens.weight", False
    if path == ("model", "norm", "scale"):
        return "model.norm.weight", False
    if path == ("lm_head", "kernel"):
        return "lm_head.weight", True
    layer = path[1].removeprefix("layers_")
    if path[-1] == "scale":
        return f"model.layers.{layer}.{path[2]}.weight", False
    block, proj, leaf = path[2], path[3], path[4]
    kind = "weight" if leaf == "kernel" else "bias"
    return f"model.layers.{layer}.{block}.{proj}.{kind}", leaf == "kernel"


def flax_to_hf(params: Mapping) -> dict[str, np.ndarray]:
    """Hugging Face tensor names of a Flax decoder tree (the inverse of `hf_to_flax`)."""
    out = {}
    for path, value in flatten_paths(params).items():
        name, transposed = hf_name(path)
        array = np.asarray(value, np.float32)
        out[name] = array.T if transposed else array
    return out
