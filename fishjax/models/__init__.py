"""The model families (BERT, RoBERTa) behind one registry, and loading a model by name.

`load_model(name_or_path, head_size, key=...)` resolves a short name, a local Hugging Face
folder, an installed model package or a Hub id, and returns a `LoadedModel` (module,
params, tokenizer folder, family: head regex, default objective, adapter sites). Also the
families' Hugging Face export; task losses over a model's `apply` are the objectives'
(`fishjax.objectives`).
"""

from fishjax.models.architectures import ADAPTER_KEY, adapter_slots, slot_width
from fishjax.models.config import EncoderConfig, ModelError
from fishjax.models.encoder import SequenceClassifier, init_params
from fishjax.models.hub import LoadedModel, load_model, load_tokenizer, resolve_model_dir
from fishjax.models.registry import (
    ADAPTER_SITES,
    ModelFamily,
    model_family,
    register_family,
    registered_model_types,
)
from fishjax.models.weights import LoadReport, load_pretrained_params

__all__ = [
    "ADAPTER_KEY",
    "ADAPTER_SITES",
    "EncoderConfig",
    "LoadReport",
    "LoadedModel",
    "ModelError",
    "ModelFamily",
    "SequenceClassifier",
    "adapter_slots",
    "init_params",
    "load_model",
    "load_pretrained_params",
    "load_tokenizer",
    "model_family",
    "register_family",
    "registered_model_types",
    "resolve_model_dir",
    "slot_width",
]
