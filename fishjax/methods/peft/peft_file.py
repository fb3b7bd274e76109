"""PEFT artefacts on disk: fishjax's own file, PEFT's LoRA/DoRA format, merged export.

- `save_peft_file` / `load_peft_file` / `apply_peft_file`: one safetensors file per run
  holding the trained PEFT tree (`peft/<path>`) *and the task head* (`head/<path>`), with
  JSON metadata (key `fishjax_peft`): the `PeftSpec`, the base model id, a fingerprint of
  the base params (`fishjax.artifacts.fingerprint`), the objective's metadata, the method's
  selection settings. Works for every kind (LoRA, DoRA, adapters).
- `export_peft_folder`: a LoRA/DoRA tree as a PEFT adapter folder (`adapter_config.json` +
  `adapter_model.safetensors`, PEFT key names, head via `modules_to_save`) that
  `peft.PeftModel.from_pretrained` loads onto transformers' `*ForSequenceClassification`
  (a decoder's onto its `*ForCausalLM`: task type CAUSAL_LM, no head).
  Keys: `base_model.model.<module>.lora_A.weight` [r, in] = lora_A.T,
  `...lora_B.weight` [out, r] = lora_B.T, `...lora_magnitude_vector` [out] (DoRA), and
  the head's torch state-dict entries under `base_model.model.`. `lora_alpha` is written
  as scaling * r, so PEFT's alpha / r equals our scaling whatever the rank.
- `export_merged_peft`: the base model with a LoRA/DoRA file merged in, as a Hugging Face
  folder (`fishjax.models.hf_export`); adapters cannot be merged.
All writes are atomic (`fishjax.core.io`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import safetensors.numpy

from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import ConfigError, PeftError
from fishjax.core.io import atomic_directory, write_file
from fishjax.core.safetensors_io import (
    canonical_header,
    contiguous,
    read_tagged,
    write_tagged,
)
from fishjax.core.tree import (
    PyTree,
    flatten_paths,
    host_arrays,
    merge_trees,
    selector_of,
    split_tree,
    unflatten_paths,
)
from fishjax.core.version import __version__
from fishjax.models import EncoderConfig, load_model
from fishjax.models.decoder import DecoderConfig
from fishjax.models.decoder_weights import hf_name as decoder_hf_name
from fishjax.models.export import export_model_folder
from fishjax.models.weights import checkpoint_name
from fishjax.objectives import from_metadata
from fishjax.params.peft import LORA_A, LORA_B, MAGNITUDE, PeftSpec, apply_peft, check_tree

META_KEY = "fishjax_peft"
FORMAT_VERSION = 1
PEFT_FILE = "peft.safetensors"
PEFT_DIR = "peft_adapter"
_PEFT_NAMES = {LORA_A: "lora_A.weight", LORA_B: "lora_B.weight",
               MAGNITUDE: "lora_magnitude_vector"}


def _float32(tree: PyTree) -> dict[tuple[str, ...], np.ndarray]:
    return {p: x.astype(np.float32, copy=False) for p, x in host_arrays(tree).items()}


def save_peft_file(path: str, tree: PyTree, head: PyTree, spec: PeftSpec, base: PyTree,
                   metadata: dict[str, Any] | None = None) -> str:
    """Writes the PEFT tree + head + spec atomically; returns the absolute path.

    `base`: the frozen params the tree was trained on (without the head), fingerprinted.
    """
    check_tree(base, tree, spec)
    tensors = {f"peft/{'/'.join(p)}": x for p, x in _float32(tree).items()}
    tensors.update({f"head/{'/'.join(p)}": x for p, x in _float32(head).items()})
    meta = {**(metadata or {}), "format_version": FORMAT_VERSION, "spec": spec.to_dict(),
            "base_fingerprint": base_fingerprint(base),
            "head": sorted("/".join(p) for p in flatten_paths(head)),
            "fishjax_version": __version__}
    return write_tagged(path, tensors, META_KEY, meta)


def load_peft_file(path: str) -> tuple[dict, dict, PeftSpec, dict[str, Any]]:
    """(PEFT tree, head, spec, metadata) of a file written by `save_peft_file`."""
    tensors, meta = read_tagged(path, META_KEY, PeftError, "PEFT",
                                required=("format_version", "spec", "head",
                                          "base_fingerprint"))
    if meta["format_version"] != FORMAT_VERSION:
        raise PeftError(f"{path!r}: PEFT file format {meta['format_version']!r} is not "
                        f"supported (expected {FORMAT_VERSION})")
    tree, head = {}, {}
    for name, x in tensors.items():
        part, _, rest = name.partition("/")
        if part not in ("peft", "head") or not rest:
            raise PeftError(f"{path!r}: unexpected tensor {name!r}")
        (tree if part == "peft" else head)[tuple(rest.split("/"))] = x
    if sorted("/".join(p) for p in head) != meta["head"]:
        raise PeftError(f"{path!r}: head tensors do not match the metadata")
    try:
        spec = PeftSpec.from_dict(meta["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise PeftError(f"{path!r}: malformed PEFT spec {meta['spec']!r} in the metadata "
                        f"({type(e).__name__}: {e})") from None
    return unflatten_paths(tree), unflatten_paths(head), spec, meta


def apply_peft_file(path: str, params: PyTree) -> dict:
    """Model params: `params` (the base model, any head) with the file's PEFT tree applied
    (merged for LoRA/DoRA, adapter subtrees added) and its head in place of `params`'s.

    Raises PeftError if `params` is not the base the file was trained on.
    """
    tree, head, spec, meta = load_peft_file(path)
    _, base = split_tree(params, selector_of(params, set(flatten_paths(head))))
    got = base_fingerprint(base)
    if got != meta["base_fingerprint"]:
        raise PeftError(f"PEFT file {path!r} was trained on base model "
                        f"{meta.get('base_model', '?')!r} (fingerprint "
                        f"{meta['base_fingerprint'][:12]}), these params differ (fingerprint "
                        f"{got[:12]})")
    check_tree(base, tree, spec)
    return merge_trees(jax.device_get(apply_peft(base, tree, spec)), head)


def _torch_name(path: tuple[str, ...], config: EncoderConfig | DecoderConfig
                ) -> tuple[str, bool]:
    """(the transformers state-dict name of a param path, whether it is transposed)."""
    if isinstance(config, DecoderConfig):
        return decoder_hf_name(path)
    return checkpoint_name(path, config)


def peft_state_dict(tree: PyTree, head: PyTree, spec: PeftSpec,
                    config: EncoderConfig | DecoderConfig) -> dict[str, np.ndarray]:
    """PEFT's `adapter_model.safetensors` entries for a LoRA/DoRA tree and the head."""
    if spec.kind not in ("lora", "dora"):
        raise PeftError(f"only LoRA/DoRA trees have a PEFT format, not {spec.kind!r}")
    out = {}
    for p, x in _float32(tree).items():
        module = _torch_name(p[:-1] + ("kernel",), config)[0].removesuffix(".weight")
        out[f"base_model.model.{module}.{_PEFT_NAMES[p[-1]]}"] = x.T if x.ndim == 2 else x
    for p, x in _float32(head).items():
        name, transposed = _torch_name(p, config)
        out[f"base_model.model.{name}"] = x.T if transposed else x
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def peft_adapter_config(spec: PeftSpec, head: PyTree, config: EncoderConfig | DecoderConfig,
                        base_model: str | None = None) -> dict[str, Any]:
    """PEFT's `adapter_config.json` for a LoRA/DoRA spec (exact module names as targets)."""
    targets = [_torch_name(tuple(t.split("/")) + ("kernel",), config)[0]
               .removesuffix(".weight") for t in spec.targets]
    # PEFT adds "classifier"/"score" to a SEQ_CLS model's modules_to_save itself and cannot
    # nest its wrappers: name each head module by its outermost such ancestor (RoBERTa's
    # classifier.dense / classifier.out_proj -> classifier), else loading fails.
    auto = ("classifier", "score")
    heads = {_torch_name(p, config)[0].rsplit(".", 1)[0] for p in flatten_paths(head)}
    heads = sorted({next((a for a in auto if n == a or n.startswith(a + ".")), n)
                    for n in heads})
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM" if isinstance(config, DecoderConfig) else "SEQ_CLS",
        "r": spec.size,
        "lora_alpha": spec.scaling * spec.size, "lora_dropout": 0.0, "bias": "none",
        "target_modules": targets, "modules_to_save": heads, "fan_in_fan_out": False,
        "use_dora": spec.kind == "dora", "use_rslora": False, "init_lora_weights": True,
        "inference_mode": True, "base_model_name_or_path": base_model,
    }


def export_peft_folder(out_dir: str, tree: PyTree, head: PyTree, spec: PeftSpec,
                       config: EncoderConfig | DecoderConfig, base_model: str | None = None,
                       base_fp: str | None = None) -> str:
    """Writes a PEFT adapter folder atomically; returns its absolute path.

    Example:
      >>> export_peft_folder("/tmp/rte-lora", trainable["peft"], trainable["head"], spec,
      ...                    model.config, base_model="minilm-l6")
      # torch: PeftModel.from_pretrained(BertForSequenceClassification..., "/tmp/rte-lora")
    """
    if getattr(config, "pooling", "pooler") != "pooler":
        raise PeftError(f"a classifier reading pooling={config.pooling!r} has no PEFT-package "
                        "form (its Hugging Face head reads the pooler)")
    state = peft_state_dict(tree, head, spec, config)
    adapter_config = peft_adapter_config(spec, head, config, base_model)

    def fill(tmp: str) -> None:
        with open(os.path.join(tmp, "adapter_config.json"), "w", encoding="utf-8") as f:
            json.dump(adapter_config, f, indent=2, sort_keys=True)
            f.write("\n")
        # PEFT reads only "format"; the base's fingerprint pins the weights the name means
        meta = {"format": "pt", **({"fishjax_base_fingerprint": base_fp} if base_fp else {})}
        write_file(os.path.join(tmp, "adapter_model.safetensors"),
                   canonical_header(safetensors.numpy.save(contiguous(state), metadata=meta)))

    return atomic_directory(out_dir, fill)


def export_merged_peft(path: str, out_dir: str, model_name: str | None = None) -> str:
    """The base model with a LoRA/DoRA file merged in, as a Hugging Face folder."""
    _, _, spec, meta = load_peft_file(path)
    if spec.kind == "adapter":
        raise PeftError("adapters are nonlinear and cannot be merged into the base weights")
    name = model_name or meta.get("base_model")
    if not name:
        raise PeftError(f"{path!r} names no base model; pass model_name")
    try:
        objective = from_metadata(meta, repr(path))
    except ConfigError as e:
        raise PeftError(f"{e}; cannot rebuild the model to merge into") from None
    model = load_model(name, objective.head_size, key=jax.random.PRNGKey(0))  # head replaced
    return export_model_folder(apply_peft_file(path, model.params), model.config, out_dir,
                               tokenizer_source=model.model_dir,
                               objective_metadata=objective.metadata())
