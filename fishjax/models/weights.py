"""Conversion between fishjax parameter trees and PyTorch-layout Hugging Face checkpoints.

Names map one-to-one: ``encoder/layer_3/attention/self/query/kernel`` is
``<prefix>encoder.layer.3.attention.self.query.weight`` transposed (torch Linear stores
[out, in], Flax Dense [in, out]). Files are read with ``safetensors`` only, never unpickled.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fishjax.core.safetensors_io import read_tensors
from fishjax.models.config import EncoderConfig, ModelError
from fishjax.models.encoder import init_params, subset_initializer

Path = tuple[str, ...]

# Non-persistent buffers that older checkpoints still carry; they are not parameters.
_BUFFERS = frozenset({"embeddings.position_ids", "embeddings.token_type_ids"})
_LEAF_NAMES = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}
_MAX_LISTED = 8


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What ``load_pretrained_params`` did beyond copying tensors.

    ``newly_initialized``: '/'-joined param paths initialised randomly (absent from the file,
    or a classifier whose num_labels differs). ``ignored``: checkpoint keys that were not used
    (other heads, RoBERTa's unused pooler, a replaced classifier). Buffers are skipped silently.
    """

    newly_initialized: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()

    def __str__(self) -> str:
        return (
            f"newly initialized: {list(self.newly_initialized) or 'none'}; "
            f"ignored checkpoint keys: {list(self.ignored) or 'none'}"
        )


def checkpoint_name(path: Path, config: EncoderConfig) -> tuple[str, bool]:
    """Torch state-dict key of a param path, and whether its array is transposed."""
    *modules, leaf = path
    modules = [f"layer.{m[len('layer_') :]}" if m.startswith("layer_") else m for m in modules]
    name = ".".join([*modules, _LEAF_NAMES[leaf]])
    # The task head sits outside the base model in *ForSequenceClassification.
    if path[0] != "classifier":
        name = f"{config.model_type}.{name}"
    return name, leaf == "kernel"


@functools.lru_cache(maxsize=16)
def param_shapes(config: EncoderConfig, num_labels: int) -> dict[Path, tuple[int, ...]]:
    """Flat ``path -> shape`` of the params of ``SequenceClassifier(config, num_labels)``."""
    tree = jax.eval_shape(functools.partial(init_params, config, num_labels), jax.random.PRNGKey(0))
    return {p: tuple(s.shape) for p, s in traverse_util.flatten_dict(tree).items()}


def _head_units(config: EncoderConfig) -> tuple[str, ...]:
    # Sub-trees that are loaded or re-initialised as a whole.
    return ("pooler", "classifier") if config.model_type == "bert" else ("classifier",)


def load_pretrained_params(
    model_dir: str, config: EncoderConfig, num_labels: int, key: jax.Array
) -> tuple[dict, LoadReport]:
    """Params from ``model_dir/model.safetensors``; missing head weights are drawn from ``key``."""
    tensors = read_tensors(os.path.join(model_dir, "model.safetensors"), ModelError)
    return params_from_state_dict(tensors, config, num_labels, key)


def params_from_state_dict(
    tensors: Mapping[str, np.ndarray], config: EncoderConfig, num_labels: int, key: jax.Array
) -> tuple[dict, LoadReport]:
    """Convert a torch-layout state dict (``bert.``/``roberta.`` prefix optional)."""
    shapes = param_shapes(config, num_labels)
    by_name = {checkpoint_name(p, config)[0]: p for p in shapes}
    prefix = f"{config.model_type}."
    found: dict[Path, np.ndarray] = {}
    source: dict[Path, str] = {}
    ignored: list[str] = []
    for key_name, array in tensors.items():
        name = _canonical(key_name, prefix)
        if name.removeprefix(prefix) in _BUFFERS:
            continue
        path = by_name.get(name)
        if path is None:
            ignored.append(key_name)
            continue
        if path in found:
            raise ModelError(f"checkpoint keys {source[path]!r} and {key_name!r} are duplicates")
        array = array.T if checkpoint_name(path, config)[1] else array
        found[path], source[path] = array, key_name

    units = _head_units(config)
    reinit: list[Path] = []
    for unit in units:
        unit_paths = [p for p in shapes if p[0] == unit]
        present = [p for p in unit_paths if p in found]
        fits = all(found[p].shape == shapes[p] for p in present)
        if (fits and len(present) == len(unit_paths)) or (not fits and unit != "classifier"):
            continue  # loaded as is, or a pooler of the wrong size (reported below)
        # Absent, partial, or a classifier for another num_labels: initialise the unit afresh.
        ignored += [source[p] for p in present]
        for p in present:
            del found[p]
        reinit += unit_paths

    for path, shape in shapes.items():
        if path in found and found[path].shape != shape:
            raise ModelError(
                f"shape mismatch for parameter {'/'.join(path)} (checkpoint key "
                f"{source[path]!r}): checkpoint {tensors[source[path]].shape}, expected "
                f"{shape}{' after transposing' if checkpoint_name(path, config)[1] else ''}"
            )
    missing = [p for p in shapes if p not in found and p[0] not in units]
    if missing:
        names = [checkpoint_name(p, config)[0] for p in missing]
        raise ModelError(
            f"checkpoint lacks {len(missing)} encoder weights for a {config.model_type} model, "
            f"e.g. {names[:_MAX_LISTED]}"
        )

    flat = {p: jnp.asarray(a, dtype=jnp.float32) for p, a in found.items()}
    if reinit:
        fresh = subset_initializer(config, num_labels, tuple(reinit))(key)
        flat.update(zip(reinit, fresh, strict=True))
    params = traverse_util.unflatten_dict({p: flat[p] for p in shapes})
    report = LoadReport(tuple("/".join(p) for p in reinit), tuple(ignored))
    return params, report


def _canonical(key_name: str, prefix: str) -> str:
    """Checkpoint key with TF-era LayerNorm names fixed and the base-model prefix added."""
    name = key_name.replace("LayerNorm.gamma", "LayerNorm.weight")
    name = name.replace("LayerNorm.beta", "LayerNorm.bias")
    if name.startswith(prefix) or name.startswith("classifier."):
        return name
    return prefix + name  # bare BertModel/RobertaModel checkpoints have no prefix


def state_dict_from_params(
    params: Mapping, config: EncoderConfig, num_labels: int
) -> dict[str, np.ndarray]:
    """Torch-layout float32 state dict (names as in ``*ForSequenceClassification``)."""
    if set(params) == {"params"}:
        params = params["params"]
    flat = traverse_util.flatten_dict(dict(params))
    shapes = param_shapes(config, num_labels)
    missing = sorted("/".join(p) for p in shapes.keys() - flat.keys())
    extra = sorted("/".join(p) for p in flat.keys() - shapes.keys())
    if missing or extra:
        raise ModelError(
            f"params do not match a {config.model_type} model with num_labels={num_labels}: "
            f"missing {missing[:_MAX_LISTED]}, unexpected {extra[:_MAX_LISTED]}"
        )
    out = {}
    for path, shape in shapes.items():
        array = np.asarray(jax.device_get(flat[path]), dtype=np.float32)
        if array.shape != shape:
            raise ModelError(
                f"shape mismatch for parameter {'/'.join(path)}: got {array.shape}, "
                f"expected {shape}"
            )
        name, transposed = checkpoint_name(path, config)
        out[name] = np.ascontiguousarray(array.T if transposed else array)
    return out
