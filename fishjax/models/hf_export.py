"""Write fishjax params as a Hugging Face ``*ForSequenceClassification`` folder.

The folder (``config.json``, ``model.safetensors``, optional tokenizer files) is built in a
temporary directory beside the target and renamed into place only once complete
(``fishjax.core.io.atomic_directory``). The weights file is sealed and records the sha256
of ``config.json`` (``fishjax.core.safetensors_io``), so fishjax refuses an export whose
weights or config changed after it was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from fishjax.core.io import atomic_directory, write_file
from fishjax.core.safetensors_io import CONFIG_HASH, sealed_safetensors
from fishjax.models.config import EncoderConfig, ModelError
from fishjax.models.hub import TOKENIZER_FILES
from fishjax.models.weights import state_dict_from_params

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
_ARCHITECTURES = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
}


def export_hf_folder(
    params: Mapping,
    config: EncoderConfig,
    num_labels: int,
    out_dir: str | os.PathLike,
    *,
    id2label: Mapping[int, str] | Sequence[str] | None = None,
    problem_type: str | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
) -> str:
    """Write ``out_dir`` atomically (replacing it if present); returns its absolute path."""
    if config.pooling != "pooler":
        raise ModelError(f"a classifier reading pooling={config.pooling!r} has no Hugging Face "
                         "*ForSequenceClassification form (that head reads the pooler)")
    # Validate and convert everything before touching the disk.
    state = state_dict_from_params(params, config, num_labels)
    hf_config = hf_config_dict(config, num_labels, id2label=id2label, problem_type=problem_type)
    tokenizer_files = _tokenizer_files(tokenizer_dir) if tokenizer_dir is not None else []

    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ModelError(f"export target exists and is not a directory: {out_dir}")

    config_bytes = (json.dumps(hf_config, indent=2, sort_keys=True) + "\n").encode("utf-8")
    # transformers refuses safetensors files whose metadata lacks the framework format. The
    # weights are sealed and record config.json's sha256: fishjax refuses a changed byte of
    # either (`read_tensors`); transformers reads them as any export.
    weights = sealed_safetensors(state, {
        "format": "pt", CONFIG_HASH: hashlib.sha256(config_bytes).hexdigest()})

    def fill(tmp: str) -> None:
        write_file(os.path.join(tmp, "config.json"), config_bytes)
        write_file(os.path.join(tmp, "model.safetensors"), weights)
        for src in tokenizer_files:
            shutil.copyfile(src, os.path.join(tmp, os.path.basename(src)))

    return atomic_directory(out_dir, fill)


def hf_config_dict(
    config: EncoderConfig,
    num_labels: int,
    *,
    id2label: Mapping[int, str] | Sequence[str] | None = None,
    problem_type: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` contents for a ``*ForSequenceClassification`` model."""
    if num_labels < 1:
        raise ModelError(f"num_labels must be >= 1, got {num_labels}")
    if id2label is None:
        labels = [f"LABEL_{i}" for i in range(num_labels)]
    elif isinstance(id2label, Mapping):
        if sorted(id2label) != list(range(num_labels)):
            raise ModelError(f"id2label keys must be 0..{num_labels - 1}, got {sorted(id2label)}")
        labels = [str(id2label[i]) for i in range(num_labels)]
    else:
        labels = [str(label) for label in id2label]
    if len(labels) != num_labels or len(set(labels)) != num_labels:
        raise ModelError(f"id2label must give {num_labels} distinct labels, got {labels}")
    if problem_type is None:
        problem_type = "regression" if num_labels == 1 else "single_label_classification"
    if problem_type not in PROBLEM_TYPES:
        raise ModelError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    return {
        "architectures": [_ARCHITECTURES[config.model_type]],
        **config.to_hf_dict(),
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "problem_type": problem_type,
        "dtype": "float32",
    }


def _tokenizer_files(tokenizer_dir: str | os.PathLike) -> list[str]:
    tokenizer_dir = os.fspath(tokenizer_dir)
    files = [os.path.join(tokenizer_dir, n) for n in TOKENIZER_FILES]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise ModelError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {tokenizer_dir}")
    return files
