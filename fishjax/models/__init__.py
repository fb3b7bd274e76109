"""Flax BERT/RoBERTa sequence classifiers on Hugging Face (safetensors) weights, the
architecture table that PEFT code asks for slots and heads, and their Hugging Face export
(task losses over a model's `apply` are the objectives': `fishjax.objectives`)."""

from fishjax.models.architectures import (
    ADAPTER_KEY,
    ADAPTER_SITES,
    HEAD_REGEX,
    Architecture,
    adapter_slots,
    architecture,
    slot_width,
)
from fishjax.models.config import EncoderConfig, ModelError
from fishjax.models.encoder import SequenceClassifier, init_params
from fishjax.models.hub import LoadedModel, load_model, load_tokenizer, resolve_model_dir
from fishjax.models.weights import LoadReport, load_pretrained_params

__all__ = [
    "ADAPTER_KEY",
    "ADAPTER_SITES",
    "HEAD_REGEX",
    "Architecture",
    "EncoderConfig",
    "LoadReport",
    "LoadedModel",
    "ModelError",
    "SequenceClassifier",
    "adapter_slots",
    "architecture",
    "init_params",
    "load_model",
    "load_pretrained_params",
    "load_tokenizer",
    "resolve_model_dir",
    "slot_width",
]
