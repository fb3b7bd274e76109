"""Flax BERT/RoBERTa sequence classifiers on Hugging Face (safetensors) weights."""

from fishjax.models.config import EncoderConfig, ModelError
from fishjax.models.encoder import HEAD_REGEX, SequenceClassifier, init_params
from fishjax.models.export import export_hf_folder
from fishjax.models.hub import LoadedModel, load_model, load_tokenizer, resolve_model_dir
from fishjax.models.weights import LoadReport, load_pretrained_params

__all__ = [
    "HEAD_REGEX",
    "EncoderConfig",
    "LoadReport",
    "LoadedModel",
    "ModelError",
    "SequenceClassifier",
    "export_hf_folder",
    "init_params",
    "load_model",
    "load_pretrained_params",
    "load_tokenizer",
    "resolve_model_dir",
]
