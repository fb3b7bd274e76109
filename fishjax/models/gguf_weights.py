"""Llama-architecture GGUF files (llama.cpp's format) as a Hugging Face config dict and
Hugging Face-named float32 tensors, through the `gguf` package.

Quantized tensors are dequantized (the loaded model is the dequantized one, not the
original bf16 release). llama.cpp's converter permutes the rows of the query and key
projections for its rotary layout; that permutation is undone here, so the tensors are in
Hugging Face's layout. Names map `blk.N.attn_q.weight` -> `model.layers.N.self_attn.
q_proj.weight` and so on; a file without `output.weight` has tied embeddings.
"""

from __future__ import annotations

import os
from typing import Any

import gguf
import numpy as np

from fishjax.core.errors import ModelError

_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
              "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def hf_name(name: str) -> str:
    """The Hugging Face name of a GGUF tensor name."""
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"
    raise ModelError(f"unexpected GGUF tensor {name!r} for a llama model")


def unpermute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's row permutation of a q or k projection [heads * head_dim, ...]:
    it stores each head's rows as interleaved pairs, Hugging Face as two halves."""
    rows = weight.shape[0]
    return (weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _field(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return default
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8")
    return value.tolist()[0]


def read_gguf(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray], Any]:
    """(a Hugging Face-style config dict, Hugging Face-named float32 tensors, the reader
    for the tokenizer metadata) of a llama GGUF file."""
    if not os.path.isfile(path):
        raise ModelError(f"GGUF file {path!r} does not exist")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ModelError(f"{path}: not a readable GGUF file ({e})") from None
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelError(f"{path}: GGUF architecture {arch!r}; only 'llama' is read")
    heads = int(_field(reader, "llama.attention.head_count"))
    kv_heads = int(_field(reader, "llama.attention.head_count_kv", heads))
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        array = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
        array = array.reshape(tuple(int(n) for n in reversed(t.shape.tolist())))
        if name.endswith("q_proj.weight"):
            array = unpermute_rows(array, heads)
        elif name.endswith("k_proj.weight"):
            array = unpermute_rows(array, kv_heads)
        tensors[name] = array
    hidden = int(_field(reader, "llama.embedding_length"))
    config = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "vocab_size": int(tensors["model.embed_tokens.weight"].shape[0]),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": int(_field(reader, "llama.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, "llama.context_length", 2048)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "hidden_act": "silu",
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
    }
    return config, tensors, reader
