"""The model registry: each model family registers, by Hugging Face `model_type`, everything
the rest of fishjax needs from it, so no other module names a model path or class.

A `ModelFamily` says how to read its `config.json`, build its Flax module for a head of a
given size, load and convert its safetensors weights, which parameters are the task head
(`head_regex`, defined here once; `dense_head_regex` adds the pooler that feeds it), where
bottleneck adapters may sit (`adapter_sites`), how its params split over a model-parallel
mesh (`param_rules`) and which objective its checkpoints are for by default (a name in
`fishjax.objectives`, which sits above this layer). Capture (`fishjax.selection.capture`)
needs no entry: it hooks the standard Flax layers (Dense, LayerNorm, Embed) whatever model
holds them.

BERT and RoBERTa (with XLM-R and CamemBERT, which share RoBERTa's layout) and the
Llama-family decoders (Llama, Qwen2, Mistral; `fishjax.models.decoder_family`) are registered
below; a new family is one `register_family` call.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fishjax.core.errors import ModelError
from fishjax.models.config import EncoderConfig
from fishjax.models.decoder import DECODER_MODEL_TYPES, CausalLM
from fishjax.models.decoder_family import (
    DECODER_PARAM_RULES,
    NO_HEAD,
    decoder_without_dropout,
    is_gguf,
    load_decoder_params,
    read_decoder_config,
)
from fishjax.models.encoder import SequenceClassifier
from fishjax.models.gguf_weights import gguf_architecture
from fishjax.models.weights import LoadReport, load_pretrained_params

# The encoders' method defaults (`ModelFamily`): LoRA on the attention's query and value
# (the LoRA paper's choice), SIFT on the attention's four projections (its reference).
ENCODER_LORA_TARGETS = r"attention/self/(query|value)/kernel$"
ENCODER_SIFT_REGEX = r"attention/(self/(query|key|value)|output/dense)/(kernel|bias)$"


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """What fishjax knows of one architecture family (see the module docstring)."""

    name: str
    model_types: tuple[str, ...]  # the Hugging Face `model_type` values it serves
    read_config: Callable[[str], Any]  # model source (folder or file) -> its config object
    # (config, head size, compute dtype) -> the Flax module
    build: Callable[[Any, int, jnp.dtype], nn.Module]
    # (model source, config, head size, key for fresh head weights) -> (params, report)
    load_params: Callable[[str, Any, int | None, jax.Array], tuple[dict, LoadReport]]
    # (config, hidden dropout or None, attention dropout or None) -> config with overrides
    with_dropout: Callable[[Any, float | None, float | None], Any]
    head_regex: str  # the task head: replaced per task, trained densely by sparse methods
    dense_head_regex: str  # the head with the pooler feeding it (SIFT's dense part)
    adapter_sites: Mapping[str, str]  # named placements of bottleneck adapters
    default_objective: str  # `fishjax.objectives` name of what its checkpoints predict
    # How its params split over the mesh's `model` axis: (regex over /-joined paths,
    # partition spec) pairs, first match wins, unmatched leaves replicated
    # (`fishjax.train.sharding`); the default of `config.mesh.param_rules`.
    param_rules: tuple[tuple[str, tuple[str | None, ...]], ...] = ()
    # Whether `load_params` draws a fresh task head (encoders) or keeps the pretrained
    # output layer (causal LMs: `head_regex` then matches nothing, and that is no error).
    fresh_head: bool = True
    # Method defaults that name the family's layers (`fishjax.train.model_defaults`): the
    # kernels LoRA/DoRA adapt, the tensors SIFT may give sparse entries, what BitFit trains.
    lora_targets: str = ENCODER_LORA_TARGETS
    sift_regex: str = ENCODER_SIFT_REGEX
    bitfit_regex: str = r"bias$"


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Registers `family` under each of its model types (each is registered once)."""
    taken = sorted(set(family.model_types) & set(_FAMILIES))
    if taken:
        raise ValueError(f"model types {taken} are already registered")
    for model_type in family.model_types:
        _FAMILIES[model_type] = family
    return family


def registered_model_types() -> list[str]:
    return sorted(_FAMILIES)


def model_family(model_type: str) -> ModelFamily:
    """The family registered for a Hugging Face `model_type` (ModelError if none)."""
    if model_type not in _FAMILIES:
        raise ModelError(f"unsupported model_type {model_type!r}; registered: "
                         f"{', '.join(registered_model_types())}")
    return _FAMILIES[model_type]


def family_of_folder(model_dir: str) -> ModelFamily:
    """The family of a model source: a folder, by the `model_type` of its `config.json`,
    or a GGUF file, by its architecture."""
    if is_gguf(model_dir):
        return model_family(gguf_architecture(model_dir))
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelError(f"cannot read the model_type of {path}: {e}") from None
    return model_family(model_type)


# -- the encoder families ------------------------------------------------------------------

# Adapter placements, as regexes over the module paths of the encoder's adapter slots
# (`fishjax.models.architectures`): Houlsby (after attention and after the FFN) and
# Pfeiffer (after the FFN only).
ENCODER_ADAPTER_SITES = {
    "houlsby": r"^encoder/layer_\d+/(attention/)?output$",
    "pfeiffer": r"^encoder/layer_\d+/output$",
}
# Megatron-style model parallelism for the encoders: the attention projections and the FFN's
# first kernel split by output column, the FFN's second kernel by input row (one all-reduce
# per block).
ENCODER_PARAM_RULES = (
    (r"attention/self/(query|key|value)/kernel$", (None, "model")),
    (r"intermediate/dense/kernel$", (None, "model")),
    (r"layer_\d+/output/dense/kernel$", ("model", None)),
)
# The decoders': Houlsby after the attention's o_proj and after the MLP's down_proj,
# Pfeiffer after the MLP only (`fishjax.models.decoder`).
DECODER_ADAPTER_SITES = {
    "houlsby": r"^model/layers_\d+/(self_attn|mlp)$",
    "pfeiffer": r"^model/layers_\d+/mlp$",
}
# Adapter placements every family offers (what `config.method.peft.adapter_variant` takes).
ADAPTER_SITES = ENCODER_ADAPTER_SITES


def _encoder_dropout(config: EncoderConfig, hidden: float | None,
                     attention: float | None) -> EncoderConfig:
    overrides = {"hidden_dropout_prob": hidden, "attention_probs_dropout_prob": attention}
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _encoder_family(name: str, model_types: tuple[str, ...]) -> ModelFamily:
    return ModelFamily(
        name=name,
        model_types=model_types,
        read_config=lambda folder: EncoderConfig.from_json(os.path.join(folder, "config.json")),
        build=lambda config, head_size, dtype: SequenceClassifier(config, head_size,
                                                                  dtype=dtype),
        load_params=load_pretrained_params,
        with_dropout=_encoder_dropout,
        head_regex=r"^classifier/",  # BERT's classifier; RoBERTa's two-layer head
        dense_head_regex=r"^(pooler|classifier)/",
        adapter_sites=ENCODER_ADAPTER_SITES,
        default_objective="sequence_classification",
        param_rules=ENCODER_PARAM_RULES,
    )


register_family(_encoder_family("bert", ("bert",)))
register_family(_encoder_family("roberta", ("roberta", "xlm-roberta", "camembert")))


# -- the decoder family --------------------------------------------------------------------

register_family(ModelFamily(
    name="llama",
    model_types=DECODER_MODEL_TYPES,
    read_config=read_decoder_config,
    build=lambda config, head_size, dtype: CausalLM(config, dtype=dtype),
    load_params=load_decoder_params,
    with_dropout=decoder_without_dropout,
    head_regex=NO_HEAD,
    dense_head_regex=NO_HEAD,
    adapter_sites=DECODER_ADAPTER_SITES,
    default_objective="causal_lm",
    param_rules=DECODER_PARAM_RULES,
    fresh_head=False,
    # The encoders' choices on the same layers: LoRA on q and v, SIFT on the attention's four
    # projections; BitFit, with no biases in Llama, trains the RMSNorm scales (and any bias).
    lora_targets=r"self_attn/(q_proj|v_proj)/kernel$",
    sift_regex=r"self_attn/(q_proj|k_proj|v_proj|o_proj)/(kernel|bias)$",
    bitfit_regex=r"(bias|norm/scale)$",
))
