"""Write a decoder's params as a Hugging Face `*ForCausalLM` folder (config.json, sealed
model.safetensors, tokenizer files) that transformers' `LlamaForCausalLM` (or Qwen2's) loads.

Built in a temporary folder and renamed into place once complete, as the encoders' export
(`fishjax.models.hf_export`). The tokenizer comes from the model's source: a folder's files
are copied; a GGUF file's tokenizer (`fishjax.models.gguf_tokenizer`) is written with
`save_pretrained`, so the export is a complete model folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping

from fishjax.core.io import atomic_directory, write_file
from fishjax.core.safetensors_io import CONFIG_HASH, sealed_safetensors
from fishjax.models.decoder import DecoderConfig
from fishjax.models.decoder_family import is_gguf, param_shapes
from fishjax.models.decoder_weights import flax_to_hf, hf_to_flax
from fishjax.models.gguf_tokenizer import gguf_tokenizer
from fishjax.models.hub import TOKENIZER_FILES


def export_decoder_folder(params: Mapping, config: DecoderConfig, out_dir: str | os.PathLike,
                          *, tokenizer_source: str | None = None) -> str:
    """Write `out_dir` atomically (replacing it); returns its absolute path.
    `tokenizer_source`: a model folder (its tokenizer files are copied) or a GGUF file (its
    tokenizer is saved)."""
    state = flax_to_hf(params)
    # Before anything is written: every leaf the config needs, at its shape, and no other.
    hf_to_flax(state, config, param_shapes(config), "the params to export")
    config_bytes = (json.dumps(config.to_hf_dict(), indent=2, sort_keys=True) + "\n").encode()
    weights = sealed_safetensors(state, {
        "format": "pt", CONFIG_HASH: hashlib.sha256(config_bytes).hexdigest()})
    tokenizer = gguf_tokenizer(tokenizer_source) if tokenizer_source and is_gguf(
        tokenizer_source) else None
    copies = [] if tokenizer_source is None or tokenizer is not None else [
        os.path.join(tokenizer_source, n) for n in TOKENIZER_FILES
        if os.path.isfile(os.path.join(tokenizer_source, n))]

    def fill(tmp: str) -> None:
        write_file(os.path.join(tmp, "config.json"), config_bytes)
        write_file(os.path.join(tmp, "model.safetensors"), weights)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for src in copies:
            shutil.copyfile(src, os.path.join(tmp, os.path.basename(src)))

    return atomic_directory(os.path.abspath(os.fspath(out_dir)), fill)
