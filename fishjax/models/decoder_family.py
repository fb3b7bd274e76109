"""What the model registry needs from the Llama-family decoders (`fishjax.models.decoder`):
their config and weights from a Hugging Face folder or a GGUF file, and their mesh rules.

A decoder's source is a folder (`config.json` with `model.safetensors`, or shards listed by
`model.safetensors.index.json`) or a `.gguf` file (config, weights and tokenizer all from
its metadata and tensors; `fishjax.models.gguf_weights`). A causal LM keeps its pretrained
output layer: there is no fresh task head, so the head size asked for must be the
vocabulary (or None).
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import ModelError
from fishjax.core.safetensors_io import read_tensors
from fishjax.models.decoder import CausalLM, DecoderConfig
from fishjax.models.decoder_weights import hf_to_flax
from fishjax.models.gguf_weights import gguf_config, gguf_tensors
from fishjax.models.weights import LoadReport

GGUF_SUFFIX = ".gguf"
SHARD_INDEX = "model.safetensors.index.json"
# A regex that matches no parameter path: a causal LM has no task head of its own (its
# output layer is pretrained and chosen from like every other weight).
NO_HEAD = r"(?!)"
# Megatron-style model parallelism: q/k/v and the MLP's gate/up kernels split by output
# column, o_proj and down_proj by input row (one all-reduce per attention and per MLP).
DECODER_PARAM_RULES = (
    (r"self_attn/(q_proj|k_proj|v_proj)/kernel$", (None, "model")),
    (r"self_attn/(q_proj|k_proj|v_proj)/bias$", ("model",)),
    (r"mlp/(gate_proj|up_proj)/kernel$", (None, "model")),
    (r"self_attn/o_proj/kernel$", ("model", None)),
    (r"mlp/down_proj/kernel$", ("model", None)),
)


def is_gguf(source: str) -> bool:
    return os.fspath(source).endswith(GGUF_SUFFIX)


def read_decoder_config(source: str) -> DecoderConfig:
    """The decoder config of a model folder's config.json or of a GGUF file's metadata."""
    if is_gguf(source):
        return DecoderConfig.from_dict(gguf_config(source), source)
    return DecoderConfig.from_json(os.path.join(source, "config.json"))


def _folder_tensors(folder: str) -> dict[str, np.ndarray]:
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return read_tensors(single, ModelError)
    index_path = os.path.join(folder, SHARD_INDEX)
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{folder}: no model.safetensors and no readable {SHARD_INDEX} "
                         f"({type(e).__name__}: {e})") from None
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard:
            raise ModelError(f"{index_path}: shard {shard!r} is not a file of the folder")
        part = read_tensors(os.path.join(folder, shard), ModelError)
        listed = {n for n, s in weight_map.items() if s == shard}
        if listed - set(part):
            raise ModelError(f"{index_path}: {sorted(listed - set(part))[:3]} are listed in "
                             f"{shard} but not stored there")
        tensors.update({n: v for n, v in part.items() if n in listed})
    return tensors


@functools.lru_cache(maxsize=8)
def param_shapes(config: DecoderConfig) -> dict:
    """The params tree of `CausalLM(config)` as shape structs (nothing allocated)."""
    ids = np.zeros((1, 1), np.int32)
    return jax.eval_shape(lambda k: CausalLM(config).init(k, ids, ids)["params"],
                          jax.random.PRNGKey(0))


def load_decoder_params(source: str, config: DecoderConfig, head_size: int | None,
                        key: jax.Array) -> tuple[dict, LoadReport]:
    """Float32 params of a decoder folder or GGUF file; every weight comes from the file
    (nothing is initialised: `key` is unused)."""
    del key
    if head_size is not None and head_size != config.vocab_size:
        raise ModelError(f"a causal language model predicts its vocabulary "
                         f"({config.vocab_size} tokens), not a head of {head_size}")
    tensors = gguf_tensors(source) if is_gguf(source) else _folder_tensors(source)
    params = hf_to_flax(tensors, config, param_shapes(config), source)
    # On the device as jax arrays, as the encoders' loader gives them.
    return jax.tree_util.tree_map(jnp.asarray, params), LoadReport()


def decoder_without_dropout(config: DecoderConfig, hidden: float | None,
                            attention: float | None) -> DecoderConfig:
    """Decoders have no dropout: asking for a nonzero rate is an error, not ignored."""
    if any(rate for rate in (hidden, attention)):
        raise ModelError(f"the decoder blocks have no dropout (model.hidden_dropout="
                         f"{hidden}, model.attention_dropout={attention}): leave them None")
    return config
