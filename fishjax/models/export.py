"""A model's params as a Hugging Face folder, whatever its family: encoders as
`*ForSequenceClassification` (`fishjax.models.hf_export`), decoders as `*ForCausalLM`
(`fishjax.models.decoder_export`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fishjax.models.config import EncoderConfig
from fishjax.models.decoder import DecoderConfig
from fishjax.models.decoder_export import export_decoder_folder
from fishjax.models.hf_export import export_hf_folder


def export_model_folder(params: Mapping, config: EncoderConfig | DecoderConfig,
                        out_dir: str | os.PathLike, *, tokenizer_source: str | None,
                        objective_metadata: Mapping[str, Any]) -> str:
    """Writes `out_dir` atomically; returns its absolute path. `objective_metadata`: the
    task objective's `metadata()` (the encoders' label count and names)."""
    if isinstance(config, DecoderConfig):
        return export_decoder_folder(params, config, out_dir, tokenizer_source=tokenizer_source)
    return export_hf_folder(params, config, out_dir=out_dir, tokenizer_dir=tokenizer_source,
                            **objective_metadata)
