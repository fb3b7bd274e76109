"""Flax (linen) BERT/RoBERTa encoders with a sequence-classification or regression head.

Module and parameter names mirror the Hugging Face PyTorch modules (``attention/self/query``,
``output/LayerNorm``, ...) so that checkpoint names map one-to-one, see ``weights.py``.
Parameters are always float32; ``dtype`` only sets the compute dtype.

Optional bottleneck adapters (``fishjax.params.peft``): an ``AddNorm`` block whose params hold
an ``adapter`` subtree (``down``/``up`` Dense params) applies it after its dense + dropout,
before the residual add. The model never creates adapter params (``init`` gives the plain
BERT/RoBERTa tree); they are read only when a params tree carries them, so a tree without
them runs exactly the same computation as a model without adapter support.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from fishjax.models.architectures import ADAPTER_KEY
from fishjax.models.config import EncoderConfig, ModelError

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def _dense(config: EncoderConfig, features: int, dtype: jnp.dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(config.initializer_range),
        bias_init=nn.initializers.zeros,
        name=name,
    )


def _layer_norm(config: EncoderConfig, dtype: jnp.dtype) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=jnp.float32, name="LayerNorm"
    )


class Embeddings(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, *, deterministic: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)

        def embed(num: int, name: str) -> nn.Embed:
            return nn.Embed(
                num,
                cfg.hidden_size,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                embedding_init=init,
                name=name,
            )

        x = (
            embed(cfg.vocab_size, "word_embeddings")(input_ids)
            + embed(cfg.max_position_embeddings, "position_embeddings")(position_ids)
            + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        )
        x = _layer_norm(cfg, self.dtype)(x)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class SelfAttention(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, *, deterministic: bool):
        cfg = self.config
        heads = cfg.num_attention_heads
        head_dim = cfg.hidden_size // heads

        def project(name: str) -> jax.Array:
            y = _dense(cfg, cfg.hidden_size, self.dtype, name)(x)
            return y.reshape(*y.shape[:-1], heads, head_dim)

        q, k, v = project("query"), project("key"), project("value")
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
        # Softmax in float32 whatever the compute dtype; masking with `where` (not by adding a
        # large negative) cannot overflow to -inf, and a fully masked row stays finite.
        scores = scores.astype(jnp.float32)
        scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        return out.reshape(*out.shape[:-2], cfg.hidden_size)


class Adapter(nn.Module):
    """Bottleneck adapter with its own skip: ``h + up(act(down(h)))`` (Houlsby et al., 2019).

    The activation is the encoder's ``hidden_act``. Only ever applied to params that carry
    it (see ``AddNorm``); ``bottleneck`` is read from those params.
    """

    config: EncoderConfig
    bottleneck: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h):
        cfg = self.config
        y = _dense(cfg, self.bottleneck, self.dtype, "down")(h)
        y = _ACTIVATIONS[cfg.hidden_act](y)
        return h + _dense(cfg, cfg.hidden_size, self.dtype, "up")(y)


class AddNorm(nn.Module):
    """HF's ``*Output`` block: dense, dropout, [adapter,] residual add, LayerNorm.

    The adapter runs only when the params hold an ``adapter`` subtree (never created by
    ``init``).
    """

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, residual, *, deterministic: bool):
        cfg = self.config
        x = _dense(cfg, cfg.hidden_size, self.dtype, "dense")(x)
        x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        if self.has_variable("params", ADAPTER_KEY):
            down = self.get_variable("params", ADAPTER_KEY)["down"]["kernel"]
            x = Adapter(cfg, down.shape[-1], self.dtype, name=ADAPTER_KEY)(x)
        return _layer_norm(cfg, self.dtype)(x + residual)


class Attention(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, *, deterministic: bool):
        y = SelfAttention(self.config, self.dtype, name="self")(
            x, key_mask, deterministic=deterministic
        )
        return AddNorm(self.config, self.dtype, name="output")(y, x, deterministic=deterministic)


class Intermediate(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        x = _dense(cfg, cfg.intermediate_size, self.dtype, "dense")(x)
        return _ACTIVATIONS[cfg.hidden_act](x)


class Layer(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, *, deterministic: bool):
        x = Attention(self.config, self.dtype, name="attention")(
            x, key_mask, deterministic=deterministic
        )
        y = Intermediate(self.config, self.dtype, name="intermediate")(x)
        return AddNorm(self.config, self.dtype, name="output")(y, x, deterministic=deterministic)


class Encoder(nn.Module):
    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, *, deterministic: bool):
        for i in range(self.config.num_hidden_layers):
            x = Layer(self.config, self.dtype, name=f"layer_{i}")(
                x, key_mask, deterministic=deterministic
            )
        return x


class Pooler(nn.Module):
    """BERT's pooler: tanh(dense(hidden state of the first token))."""

    config: EncoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden):
        return jnp.tanh(_dense(self.config, self.config.hidden_size, self.dtype, "dense")(hidden))


class RobertaClassificationHead(nn.Module):
    """RoBERTa's head on <s>: dropout, dense, tanh, dropout, out_proj."""

    config: EncoderConfig
    num_labels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        cfg = self.config
        x = nn.Dropout(_classifier_dropout(cfg))(x, deterministic=deterministic)
        x = jnp.tanh(_dense(cfg, cfg.hidden_size, self.dtype, "dense")(x))
        x = nn.Dropout(_classifier_dropout(cfg))(x, deterministic=deterministic)
        return _dense(cfg, self.num_labels, self.dtype, "out_proj")(x)


class SequenceClassifier(nn.Module):
    """Encoder plus the Hugging Face ``*ForSequenceClassification`` head of its family.

    ``num_labels == 1`` is a regression head (STS-B). Returns float32 logits [B, num_labels].
    Dropout draws from the ``'dropout'`` rng collection when ``deterministic=False``.
    """

    config: EncoderConfig
    num_labels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, input_ids, attention_mask, token_type_ids=None, *, deterministic: bool = True
    ):
        cfg = self.config
        if self.num_labels < 1:
            raise ModelError(f"num_labels must be >= 1, got {self.num_labels}")
        if input_ids.shape[1] > cfg.max_sequence_length:
            # Out-of-range position ids would be clamped silently by the gather.
            raise ModelError(
                f"sequence length {input_ids.shape[1]} exceeds the model's maximum "
                f"({cfg.max_sequence_length})"
            )
        input_ids = jnp.asarray(input_ids, jnp.int32)
        key_mask = jnp.asarray(attention_mask).astype(bool)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if cfg.model_type == "roberta":
            # As HF/fairseq: non-pad tokens count up from pad_token_id + 1, pads get pad_token_id.
            not_pad = (input_ids != cfg.pad_token_id).astype(jnp.int32)
            position_ids = jnp.cumsum(not_pad, axis=1) * not_pad + cfg.pad_token_id
        else:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)

        x = Embeddings(cfg, self.dtype, name="embeddings")(
            input_ids, token_type_ids, position_ids, deterministic=deterministic
        )
        x = Encoder(cfg, self.dtype, name="encoder")(x, key_mask, deterministic=deterministic)
        first = x[:, 0]
        if cfg.pooling == "mean":  # over the real tokens
            weights = key_mask.astype(x.dtype)[..., None]
            first = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        if cfg.model_type == "roberta":
            logits = RobertaClassificationHead(cfg, self.num_labels, self.dtype, name="classifier")(
                first, deterministic=deterministic
            )
        else:
            # The pooler always runs, so its params exist whatever the pooling (one tree
            # per model; XLA drops the unused output).
            pooled = Pooler(cfg, self.dtype, name="pooler")(x[:, 0])
            if cfg.pooling != "pooler":
                pooled = first
            pooled = nn.Dropout(_classifier_dropout(cfg))(pooled, deterministic=deterministic)
            logits = _dense(cfg, self.num_labels, self.dtype, "classifier")(pooled)
        return logits.astype(jnp.float32)


def _classifier_dropout(cfg: EncoderConfig) -> float:
    return cfg.hidden_dropout_prob if cfg.classifier_dropout is None else cfg.classifier_dropout


def init_params(config: EncoderConfig, num_labels: int, key: jax.Array) -> dict:
    """Randomly initialised ``params`` (HF-style: normal kernels, zero biases, unit LayerNorm)."""
    if num_labels < 1:
        raise ModelError(f"num_labels must be >= 1, got {num_labels}")
    # Eager rather than jitted: op-by-op init reuses compiled primitives across configs,
    # while a jitted init recompiles for every (config, num_labels).
    ids = jnp.zeros((1, 2), jnp.int32)
    return SequenceClassifier(config, num_labels).init(key, ids, jnp.ones_like(ids))["params"]


@functools.lru_cache(maxsize=8)
def subset_initializer(
    config: EncoderConfig, num_labels: int, paths: tuple[tuple[str, ...], ...]
) -> Callable[[jax.Array], list[jax.Array]]:
    """A jitted ``key -> [params at paths]``, the values ``init_params`` gives them (to rounding).

    Pruning inside jit lets XLA drop the random draws of every other param, so a head is
    initialised without materialising (or compiling the init of) the rest of the model.
    """

    def init(key):
        flat = traverse_util.flatten_dict(init_params(config, num_labels, key))
        return [flat[p] for p in paths]

    return jax.jit(init)
