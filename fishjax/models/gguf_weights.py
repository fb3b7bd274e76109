"""Llama-architecture GGUF files (llama.cpp's format) as a Hugging Face config dict and
Hugging Face-named float32 tensors, through the `gguf` package.

Quantized tensors are dequantized (the loaded model is the dequantized one, not the
original bf16 release). llama.cpp's converter permutes the rows of the query and key
projections for its rotary layout; that permutation is undone here, so the tensors are in
Hugging Face's layout. Names map `blk.N.attn_q.weight` -> `model.layers.N.self_attn.
q_proj.weight` and so on; a file without `output.weight` has tied embeddings.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=2)
def _open(path: str, mtime_ns: int, size: int) -> gguf.GGUFReader:
    del mtime_ns, size  # part of the cache key only: a changed file is read again
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ModelError(f"{path}: not a readable GGUF file ({e})") from None


def open_gguf(path: str) -> gguf.GGUFReader:
    """The (memory-mapped) reader of a GGUF file, cached: opening parses all of its
    metadata (seconds for a 49k-token vocabulary), and the config, the weights and the
    tokenizer each need it."""
    if not os.path.isfile(path):
        raise ModelError(f"GGUF file {path!r} does not exist")
    stat = os.stat(path)
    return _open(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


def gguf_field(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
    """A scalar or string metadata field of a GGUF file (`default` if absent)."""
    field = reader.fields.get(key)
    if field is None or not field.data:
        return default
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8")
    return value.tolist()[0]


def string_array(reader: gguf.GGUFReader, key: str) -> list[str]:
    """A string-array metadata field (the vocabulary, the merges)."""
    field = reader.fields.get(key)
    if field is None:
        raise ModelError(f"the GGUF file has no {key!r}")
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def gguf_architecture(path: str) -> str:
    """The file's `general.architecture` (e.g. 'llama')."""
    return str(gguf_field(open_gguf(path), "general.architecture"))


def _check_llama(reader: gguf.GGUFReader, path: str) -> None:
    arch = gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise ModelError(f"{path}: GGUF architecture {arch!r}; only 'llama' is read")


def gguf_config(path: str) -> dict[str, Any]:
    """The Hugging Face-style config dict of a llama GGUF file (metadata and tensor shapes
    only: nothing is dequantized)."""
    reader = open_gguf(path)
    _check_llama(reader, path)
    heads = int(gguf_field(reader, "llama.attention.head_count"))
    hidden = int(gguf_field(reader, "llama.embedding_length"))
    shapes = {t.name: [int(n) for n in t.shape.tolist()] for t in reader.tensors}
    if "token_embd.weight" not in shapes:
        raise ModelError(f"{path}: the GGUF file has no token_embd.weight")
    return {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "vocab_size": shapes["token_embd.weight"][-1],  # GGUF lists dims innermost first
        "hidden_size": hidden,
        "intermediate_size": int(gguf_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(gguf_field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(gguf_field(reader, "llama.attention.head_count_kv", heads)),
        "head_dim": int(gguf_field(reader, "llama.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(gguf_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(gguf_field(reader, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(gguf_field(reader, "llama.context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in shapes,
        "hidden_act": "silu",
        "bos_token_id": gguf_field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": gguf_field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": gguf_field(reader, "tokenizer.ggml.padding_token_id"),
    }


def gguf_tensors(path: str) -> dict[str, np.ndarray]:
    """The Hugging Face-named float32 tensors of a llama GGUF file: dequantized, q/k rows
    in Hugging Face's order (module docstring)."""
    reader = open_gguf(path)
    _check_llama(reader, path)
    config = gguf_config(path)
    heads = {"q_proj.weight": config["num_attention_heads"],
             "k_proj.weight": config["num_key_value_heads"]}
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        array = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
        array = array.reshape(tuple(int(n) for n in reversed(t.shape.tolist())))
        suffix = name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]
        if suffix in heads:
            array = unpermute_rows(array, heads[suffix])
        tensors[name] = array
    return tensors
