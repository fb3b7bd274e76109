"""Encoder configuration read from (and written back to) a Hugging Face ``config.json``.

Only the fields that change the forward pass of a BERT/RoBERTa encoder are kept; everything
else in the Hugging Face file (``use_cache``, ``architectures``, ...) is ignored on read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from fishjax.core.errors import ModelError

# Hugging Face model types that share RoBERTa's architecture and checkpoint layout
# (``roberta.`` prefix, padding-offset positions, two-layer classification head).
_FAMILY = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta", "camembert": "roberta"}
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
POOLINGS = ("pooler", "cls", "mean")  # what an encoder's classifier reads
_INT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)
_FLOAT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a BERT- or RoBERTa-family encoder (defaults are BERT-base's)."""

    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    # Hugging Face falls back to hidden_dropout_prob for the head when this is None.
    classifier_dropout: float | None = None
    # fishjax's option, not a Hugging Face field: what the classifier reads. "pooler" (the
    # Hugging Face head: BERT's pooler, tanh(dense(h_[CLS])), RoBERTa's head on <s>), "cls"
    # (BERT: h_[CLS] itself, the pooler skipped) or "mean" (the mean of the last hidden
    # states over the real tokens in place of h_[CLS] / h_<s>; BERT: no pooler). A model
    # trained for mean pooling (all-MiniLM-L6-v2) is read best by "mean".
    pooling: str = "pooler"

    def __post_init__(self) -> None:
        if self.model_type not in ("bert", "roberta"):
            raise ModelError(
                f"unsupported model_type {self.model_type!r}; supported: {sorted(_FAMILY)}"
            )
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"config field {name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ModelError(
                f"hidden_size ({self.hidden_size}) is not divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ModelError(
                f"unsupported hidden_act {self.hidden_act!r}; supported: {SUPPORTED_ACTIVATIONS}"
            )
        rates = {
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "classifier_dropout": self.classifier_dropout,
        }
        for name, rate in rates.items():
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ModelError(f"config field {name} must be in [0, 1), got {rate!r}")
        if self.pooling not in POOLINGS:
            raise ModelError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.model_type == "roberta" and self.pooling == "cls":
            raise ModelError("pooling 'cls': RoBERTa's head reads <s> through its own dense "
                             "layer (there is no pooler to skip); use 'pooler' or 'mean'")
        if not self.layer_norm_eps > 0 or not self.initializer_range > 0:
            raise ModelError("layer_norm_eps and initializer_range must be positive")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ModelError(
                f"pad_token_id ({self.pad_token_id}) is outside the vocabulary "
                f"(vocab_size={self.vocab_size})"
            )
        if self.model_type == "roberta" and self.max_position_embeddings <= self.pad_token_id + 1:
            # RoBERTa positions start at pad_token_id + 1, so the table must extend past it.
            raise ModelError(
                f"max_position_embeddings ({self.max_position_embeddings}) leaves no room for "
                f"RoBERTa positions, which start at pad_token_id + 1 = {self.pad_token_id + 1}"
            )

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position table supports (RoBERTa loses pad_token_id + 1 slots)."""
        if self.model_type == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        """Build from a parsed Hugging Face ``config.json``; unknown keys are ignored."""
        hf_type = d.get("model_type")
        if hf_type not in _FAMILY:
            raise ModelError(
                f"unsupported model_type {hf_type!r} in config.json; supported: {sorted(_FAMILY)}"
            )
        position_type = d.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ModelError(
                f"position_embedding_type {position_type!r} is not supported (only 'absolute')"
            )
        family = _FAMILY[hf_type]
        kwargs: dict[str, Any] = {"model_type": family}
        try:
            for name in _INT_FIELDS:
                if name in d:
                    kwargs[name] = _as_int(d[name])
            for name in (*_FLOAT_FIELDS, "initializer_range"):
                if name in d:
                    kwargs[name] = float(d[name])
            if d.get("classifier_dropout") is not None:
                kwargs["classifier_dropout"] = float(d["classifier_dropout"])
            if "hidden_act" in d:
                kwargs["hidden_act"] = str(d["hidden_act"])
            pad = d.get("pad_token_id")
            if pad is not None:
                kwargs["pad_token_id"] = _as_int(pad)
            elif family == "roberta":
                kwargs["pad_token_id"] = 1  # RobertaConfig's default
        except (TypeError, ValueError) as e:
            raise ModelError(f"malformed value in config.json: {e}") from e
        if family == "roberta" and "type_vocab_size" not in d:
            kwargs["type_vocab_size"] = 1
        if family == "roberta" and "layer_norm_eps" not in d:
            kwargs["layer_norm_eps"] = 1e-5
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> EncoderConfig:
        """Read a ``config.json`` file, or the ``config.json`` inside a directory."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError as e:
            raise ModelError(f"config file not found: {path}") from e
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"cannot read config file {path}: {e}") from e
        if not isinstance(d, dict):
            raise ModelError(f"config file {path} does not contain a JSON object")
        return cls.from_hf_dict(d)

    def to_hf_dict(self) -> dict[str, Any]:
        """The fields as a Hugging Face config dict (``BertConfig``/``RobertaConfig`` keys)."""
        d = dataclasses.asdict(self)
        del d["pooling"]  # fishjax's own; an export keeps the Hugging Face head ("pooler")
        d["position_embedding_type"] = "absolute"
        if self.model_type == "roberta":
            d.update(bos_token_id=0, eos_token_id=2)
        return d

    @classmethod
    def tiny(cls, model_type: str = "bert", **overrides: Any) -> EncoderConfig:
        """A very small random-test configuration; ``overrides`` replace any field."""
        roberta = _FAMILY.get(model_type) == "roberta"
        base: dict[str, Any] = dict(
            model_type=_FAMILY.get(model_type, model_type),
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            type_vocab_size=1 if roberta else 2,
            layer_norm_eps=1e-5 if roberta else 1e-12,
            pad_token_id=1 if roberta else 0,
        )
        base.update(overrides)
        return cls(**base)


def _as_int(value: Any) -> int:
    # json gives ints for integers; reject floats like 12.5 rather than truncating them.
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)
