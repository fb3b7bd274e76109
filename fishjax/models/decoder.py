"""Flax (linen) Llama-family decoders: Llama, Qwen2 and any `model_type` on the same blocks.

RMSNorm, rotary position embeddings (default, linear and llama3 scaling), grouped-query
attention, a SwiGLU MLP, tied or untied output embeddings, optional q/k/v biases (Qwen2) and
o/MLP biases (Llama's `attention_bias` / `mlp_bias`). Module and parameter names mirror
Hugging Face's PyTorch modules (`model/layers_0/self_attn/q_proj`, `model/norm`, `lm_head`)
so checkpoint names map one-to-one; parameters are float32, `dtype` sets the compute dtype.
Bottleneck adapters (`fishjax.params.peft`) sit after the attention's `o_proj` and the MLP's
`down_proj`, before the residual add, when the params carry them.
Positions come from the attention mask (cumulative count of real tokens, as Hugging Face's
`generate` does for left padding); attention is causal and masks padding.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fishjax.core.errors import ModelError
from fishjax.models.architectures import ADAPTER_KEY

# model_type values whose config.json maps onto these blocks, and which q/k/v biases they
# always have (Qwen2: q, k and v; Llama and Mistral: `attention_bias`).
DECODER_MODEL_TYPES = ("llama", "qwen2", "mistral")
ROPE_TYPES = ("default", "linear", "llama3")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "mistral": "MistralForCausalLM"}


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """The fields of a Hugging Face decoder config.json that the blocks read."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    model_type: str = "llama"
    initializer_range: float = 0.02

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> DecoderConfig:
        model_type = d.get("model_type", "llama")
        if model_type not in DECODER_MODEL_TYPES:
            raise ModelError(f"{source}: model_type {model_type!r} is not a Llama-family "
                             f"decoder ({', '.join(DECODER_MODEL_TYPES)})")
        if d.get("hidden_act", "silu") != "silu":
            raise ModelError(f"{source}: hidden_act {d.get('hidden_act')!r}: the decoder "
                             "blocks use SwiGLU (silu)")
        # transformers 5 names it rope_parameters (with rope_theta inside); 4.x rope_scaling
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ModelError(f"{source}: rope type {rope_type!r} is not supported "
                             f"({', '.join(ROPE_TYPES)})")
        heads = int(d["num_attention_heads"])
        attention_bias = bool(d.get("attention_bias", False))
        try:
            return cls(
                vocab_size=int(d["vocab_size"]), hidden_size=int(d["hidden_size"]),
                intermediate_size=int(d["intermediate_size"]),
                num_hidden_layers=int(d["num_hidden_layers"]), num_attention_heads=heads,
                num_key_value_heads=int(d.get("num_key_value_heads") or heads),
                head_dim=int(d.get("head_dim") or int(d["hidden_size"]) // heads),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))),
                rope_type=rope_type, rope_factor=float(rope.get("factor", 1.0)),
                rope_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                rope_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                rope_original_max_positions=int(rope.get(
                    "original_max_position_embeddings",
                    d.get("max_position_embeddings", 8192))),
                max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                qkv_bias=model_type == "qwen2" or attention_bias,
                o_bias=attention_bias, mlp_bias=bool(d.get("mlp_bias", False)),
                model_type=model_type,
                initializer_range=float(d.get("initializer_range", 0.02)))
        except KeyError as e:
            raise ModelError(f"{source}: missing field {e.args[0]!r}") from None

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` fields of this config (read back by `from_dict`, and by
        transformers 4 and 5: RoPE scaling as `rope_scaling` beside `rope_theta`)."""
        out: dict[str, Any] = {
            "model_type": self.model_type,
            "architectures": [_ARCHITECTURES[self.model_type]],
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "hidden_act": "silu",
            "initializer_range": self.initializer_range, "dtype": "float32",
        }
        if self.model_type == "qwen2":
            if not self.qkv_bias or self.o_bias or self.mlp_bias:
                raise ModelError("a qwen2 config has q/k/v biases and no o/MLP biases")
        else:
            out.update(attention_bias=self.o_bias, mlp_bias=self.mlp_bias)
            if self.qkv_bias != self.o_bias:
                raise ModelError(f"a {self.model_type} config has q/k/v and o biases alike")
        if self.rope_type == "linear":
            out["rope_scaling"] = {"rope_type": "linear", "factor": self.rope_factor}
        elif self.rope_type == "llama3":
            out["rope_scaling"] = {
                "rope_type": "llama3", "factor": self.rope_factor,
                "low_freq_factor": self.rope_low_freq_factor,
                "high_freq_factor": self.rope_high_freq_factor,
                "original_max_position_embeddings": self.rope_original_max_positions}
        return out

    @property
    def max_sequence_length(self) -> int:
        """The most positions the model was trained for (what the trainer checks)."""
        return self.max_position_embeddings

    @classmethod
    def from_json(cls, path: str) -> DecoderConfig:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), path)


def rope_inverse_frequencies(config: DecoderConfig) -> jax.Array:
    """The rotary inverse frequencies [head_dim / 2], scaled as `config.rope_type` says."""
    dim = config.head_dim
    inv = 1.0 / (config.rope_theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    if config.rope_type == "linear":
        return inv / config.rope_factor
    if config.rope_type == "llama3":  # Llama 3.1: long wavelengths slowed, a smooth band
        factor, low, high = (config.rope_factor, config.rope_low_freq_factor,
                             config.rope_high_freq_factor)
        old = config.rope_original_max_positions
        wavelen = 2 * math.pi / inv
        scaled = jnp.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / high) & (wavelen <= old / low)
        return jnp.where(medium, smoothed, scaled)
    return inv


def position_ids(attention_mask: jax.Array) -> jax.Array:
    """Each real token's position among the real tokens of its row (0 at padding)."""
    return jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0)


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _dense(config: DecoderConfig, features: int, bias: bool, dtype, name: str) -> nn.Dense:
    return nn.Dense(features, use_bias=bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=nn.initializers.normal(config.initializer_range), name=name)


def _rms_norm(config: DecoderConfig, dtype, name: str) -> nn.RMSNorm:
    return nn.RMSNorm(epsilon=config.rms_norm_eps, dtype=dtype, param_dtype=jnp.float32,
                      name=name)


class Adapter(nn.Module):
    """Bottleneck adapter with its own skip, `h + up(silu(down(h)))` (Houlsby et al., 2019,
    with the decoder's activation); `bottleneck` is read from the params that carry it."""

    config: DecoderConfig
    bottleneck: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h):
        cfg = self.config
        y = jax.nn.silu(_dense(cfg, self.bottleneck, True, self.dtype, "down")(h))
        return h + _dense(cfg, cfg.hidden_size, True, self.dtype, "up")(y)


def _adapted(block: nn.Module, out: jax.Array) -> jax.Array:
    """A block's output through its adapter when its params carry one (`ADAPTER_KEY`;
    never created by `init`: a plain tree runs exactly as without adapter support)."""
    if not block.has_variable("params", ADAPTER_KEY):
        return out
    down = block.get_variable("params", ADAPTER_KEY)["down"]["kernel"]
    return Adapter(block.config, down.shape[-1], block.dtype, name=ADAPTER_KEY)(out)


class Attention(nn.Module):
    """Grouped-query attention. With a key/value `cache` ({"k", "v"}: [B, S, kv heads, d])
    this call's keys and values are written at slots `index`.. of it, the queries attend
    over all S slots (`mask` [B, T, S]), and (output, updated cache) is returned."""

    config: DecoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache=None, index=None):
        cfg = self.config
        b, t, _ = x.shape
        hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        q = _dense(cfg, hq * d, cfg.qkv_bias, self.dtype, "q_proj")(x).reshape(b, t, hq, d)
        k = _dense(cfg, hkv * d, cfg.qkv_bias, self.dtype, "k_proj")(x).reshape(b, t, hkv, d)
        v = _dense(cfg, hkv * d, cfg.qkv_bias, self.dtype, "v_proj")(x).reshape(b, t, hkv, d)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if cache is not None:
            at = (0, index, 0, 0)
            k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), at)
            v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), at)
            cache = {"k": k, "v": v}
        group = hq // hkv  # grouped-query attention: each k/v head serves `group` q heads
        q = q.reshape(b, t, hkv, group, d)
        scores = jnp.einsum("bqhgd,bkhd->bhgqk", q, k).astype(jnp.float32) / math.sqrt(d)
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v.astype(self.dtype)).reshape(
            b, t, hq * d)
        out = _adapted(self, _dense(cfg, cfg.hidden_size, cfg.o_bias, self.dtype, "o_proj")(out))
        return out if cache is None else (out, cache)


class MLP(nn.Module):
    config: DecoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        gate = _dense(cfg, cfg.intermediate_size, cfg.mlp_bias, self.dtype, "gate_proj")(x)
        up = _dense(cfg, cfg.intermediate_size, cfg.mlp_bias, self.dtype, "up_proj")(x)
        return _adapted(self, _dense(cfg, cfg.hidden_size, cfg.mlp_bias, self.dtype,
                                     "down_proj")(jax.nn.silu(gate) * up))


class DecoderLayer(nn.Module):
    config: DecoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin, mask, cache=None, index=None):
        cfg = self.config
        attn = Attention(cfg, self.dtype, name="self_attn")(
            _rms_norm(cfg, self.dtype, "input_layernorm")(x), cos, sin, mask, cache, index)
        if cache is not None:
            attn, cache = attn
        x = x + attn
        x = x + MLP(cfg, self.dtype, name="mlp")(
            _rms_norm(cfg, self.dtype, "post_attention_layernorm")(x))
        return x if cache is None else (x, cache)


class DecoderModel(nn.Module):
    """The stack: token embeddings, the layers, the final norm (Hugging Face's `model`).

    Without a cache: `attention_mask` [B, T] marks real tokens; attention is causal over
    them and positions count them. With a key/value cache (one per layer, `init_cache`):
    the tokens sit at cache slots `index`..`index + T`, `attention_mask` [B, S] marks the
    slots that hold real tokens (these included), `positions` [B, T] are given by the
    caller, and (hidden states, updated caches) is returned."""

    config: DecoderConfig
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype,
                                     param_dtype=jnp.float32,
                                     embedding_init=nn.initializers.normal(
                                         cfg.initializer_range))
        self.layers = [DecoderLayer(cfg, self.dtype, name=f"layers_{i}")
                       for i in range(cfg.num_hidden_layers)]
        self.norm = _rms_norm(cfg, self.dtype, "norm")

    def __call__(self, input_ids, attention_mask, caches=None, index=None, positions=None):
        t = input_ids.shape[1]
        if positions is None:
            positions = position_ids(attention_mask)
        angles = positions[..., None].astype(jnp.float32) * rope_inverse_frequencies(
            self.config)
        angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, D]
        cos, sin = jnp.cos(angles).astype(self.dtype), jnp.sin(angles).astype(self.dtype)
        if caches is None:
            causal = jnp.tril(jnp.ones((t, t), bool))
            mask = causal[None] & attention_mask[:, None, :].astype(bool)  # [B, Tq, Tk]
        else:  # a query at slot index + i sees the filled slots up to its own
            slots = jnp.arange(attention_mask.shape[1])
            causal = slots[None, :] <= (index + jnp.arange(t))[:, None]  # [T, S]
            mask = causal[None] & attention_mask[:, None, :].astype(bool)
        x = self.embed_tokens(input_ids)
        new_caches = []
        for i, layer in enumerate(self.layers):
            if caches is None:
                x = layer(x, cos, sin, mask)
            else:
                x, cache = layer(x, cos, sin, mask, caches[i], index)
                new_caches.append(cache)
        x = self.norm(x)
        return x if caches is None else (x, new_caches)

    def attend(self, x):
        return self.embed_tokens.attend(x)


def init_cache(config: DecoderConfig, batch: int, slots: int, dtype: Any = jnp.float32
               ) -> list[dict[str, jax.Array]]:
    """Empty key/value caches, one per layer: {"k", "v"} [batch, slots, kv heads, head_dim]."""
    shape = (batch, slots, config.num_key_value_heads, config.head_dim)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
            for _ in range(config.num_hidden_layers)]


class CausalLM(nn.Module):
    """Next-token logits [B, T, vocab] (Hugging Face's `*ForCausalLM`); the output layer is
    the token embedding when `tie_word_embeddings` (no `lm_head` params then). With
    `caches` (see `DecoderModel`), (logits, updated caches) is returned: generation
    (`fishjax.models.generate`)."""

    config: DecoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids, attention_mask, *, deterministic: bool = True, caches=None,
                 index=None, positions=None):
        del deterministic  # no dropout in these blocks (the trainer's apply passes it)
        model = DecoderModel(self.config, self.dtype, name="model")
        x = model(input_ids, attention_mask, caches, index, positions)
        if caches is not None:
            x, caches = x
        if self.config.tie_word_embeddings:
            logits = model.attend(x)
        else:
            logits = _dense(self.config, self.config.vocab_size, False, self.dtype,
                            "lm_head")(x)
        logits = logits.astype(jnp.float32)
        return logits if caches is None else (logits, caches)
