"""Checks of a run config and workdir, done before any data or model is loaded.

Every problem raises `ConfigError` naming the field and the bad value, so a run never
starts training on a config that cannot finish. The trainer-owned sections (model, data,
train, mesh) are checked here; `config.method` is checked by the method itself
(`Method.validate`), so this module knows no method's options.
"""

from __future__ import annotations

import math
import os
import tempfile

import ml_collections

from fishjax.core.errors import ConfigError, DataError
from fishjax.data import get_task
from fishjax.data.instructions import Mixture
from fishjax.data.mixture import parse_mix
from fishjax.methods import get_method, method_options
from fishjax.models.config import POOLINGS
from fishjax.train.dropout import DROPOUT_PRNGS
from fishjax.train.model_defaults import resolve_model_defaults
from fishjax.train.task_data import INSTRUCT_TASK

DTYPES = ("float32", "bfloat16")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _non_finite_fields(node, prefix: str = "config") -> list[str]:
    """`config.<path>=<value>` of every float field that is NaN or infinite."""
    out = []
    for key, value in node.items():
        name = f"{prefix}.{key}"
        if isinstance(value, ml_collections.ConfigDict | dict):
            out += _non_finite_fields(value, name)
        elif isinstance(value, float) and not math.isfinite(value):
            out.append(f"{name}={value}")
    return out


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the first invalid field found."""
    for section in ("model", "data", "train", "mesh", "method", "distributed"):
        _require(section in config, f"config has no `{section}` section")
    bad = _non_finite_fields(config)
    _require(not bad, f"{bad[0] if bad else ''} is not a finite number"
             + (f" (also {', '.join(bad[1:])})" if len(bad) > 1 else ""))
    try:
        get_task(config.task)
    except DataError as e:
        raise ConfigError(f"config.task: {e}") from None
    reduction = (config.method.get("fisher") or {}).get("token_reduction", "mean")
    _require(reduction == "mean" or get_task(config.task).generative,
             f"config.method.fisher.token_reduction={reduction!r} applies to causal "
             f"language-model tasks only; {config.task!r} has one output per example")
    _require(bool(config.model.name), "config.model.name is empty")
    _require(config.model.dtype in DTYPES,
             f"config.model.dtype must be one of {DTYPES}, got {config.model.dtype!r}")
    pooling = config.model.get("pooling") or "pooler"
    _require(pooling in POOLINGS, f"config.model.pooling must be one of {POOLINGS}, got "
             f"{pooling!r}")
    _require(pooling == "pooler" or not config.train.export,
             f"config.model.pooling={pooling!r}: a Hugging Face *ForSequenceClassification "
             "head reads the pooler, so this model has no Hugging Face export; set "
             "config.train.export=False (the run's own files load with fishjax.load)")
    for name in ("hidden_dropout", "attention_dropout"):
        p = config.model[name]
        _require(p is None or 0.0 <= p < 1.0, f"config.model.{name} must be in [0, 1), got {p}")

    d = config.data
    buckets = tuple(d.buckets)
    _require(len(buckets) > 0 and all(isinstance(b, int) and b > 0 for b in buckets),
             f"config.data.buckets must be positive ints, got {buckets}")
    _require(list(buckets) == sorted(set(buckets)),
             f"config.data.buckets must be strictly increasing, got {buckets}")
    _require(buckets[-1] == d.max_length,
             f"config.data.buckets must end at config.data.max_length={d.max_length}, "
             f"got {buckets}")
    for name in ("max_train_samples", "max_eval_samples"):
        n = d[name]
        _require(n is None or n > 0, f"config.data.{name} must be positive, got {n}")
    if d.dir is not None:
        _require(os.path.isdir(d.dir), f"config.data.dir={d.dir!r} is not a directory")
    if d.get("row_split") is not None:
        _require(os.path.isfile(d.row_split),
                 f"config.data.row_split={d.row_split!r} does not exist")

    if get_task(config.task).name == INSTRUCT_TASK:
        try:
            mixture = Mixture.from_config(d.get("instruct"))
            for task in (*mixture.tasks, *mixture.heldout_tasks):
                mixture.path(task)
        except DataError as e:
            raise ConfigError(str(e)) from None
        named = (config.get("instruct_eval") or {}).get("tasks") or ()
        unknown = sorted(set(named) - {*mixture.tasks, *mixture.heldout_tasks})
        _require(not unknown, f"config.instruct_eval.tasks: {unknown} are not tasks of "
                 "config.data.instruct")
    for entry in parse_mix(d.get("mix"), get_task(config.task)):
        _require(os.path.isdir(entry.dir), f"config.data.mix: {entry.task.name!r} folder "
                 f"{entry.dir!r} is not a directory")

    t = config.train
    for name in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps"):
        _require(int(t[name]) > 0, f"config.train.{name} must be positive, got {t[name]}")
    _require(t.num_steps is not None or t.num_epochs > 0,
             f"config.train.num_epochs must be positive, got {t.num_epochs}")
    _require(t.num_steps is None or t.num_steps > 0,
             f"config.train.num_steps must be positive, got {t.num_steps}")
    _require(t.learning_rate > 0, f"config.train.learning_rate must be > 0, got {t.learning_rate}")
    _require(0.0 <= t.warmup_ratio <= 1.0,
             f"config.train.warmup_ratio must be in [0, 1], got {t.warmup_ratio}")
    _require(t.weight_decay >= 0, f"config.train.weight_decay must be >= 0, got {t.weight_decay}")
    _require(t.max_grad_norm > 0, f"config.train.max_grad_norm must be > 0, got {t.max_grad_norm}")
    _require(t.get("dropout_prng", "threefry") in DROPOUT_PRNGS,
             f"config.train.dropout_prng must be one of {', '.join(DROPOUT_PRNGS)}, got "
             f"{t.get('dropout_prng')!r}")
    for name in ("export", "keep_checkpoints", "eval_before_training"):
        _require(isinstance(t.get(name, True), bool),
                 f"config.train.{name} must be True or False, got {t.get(name)!r}")
    for name in ("eval_every_steps", "stop_after_steps", "warmup_steps"):
        v = t[name]
        _require(v is None or v >= 0, f"config.train.{name} must be >= 0, got {v}")

    dist = config.get("distributed")
    _require(isinstance(dist, ml_collections.ConfigDict) and "enabled" in dist,
             f"config.distributed must be a section with `enabled` (and the coordinator "
             f"fields: configs/default.py), got {dist!r}; e.g. "
             "--config.distributed.enabled=True")
    for name in ("initialization_timeout", "heartbeat_timeout"):
        _require(dist[name] > 0, f"config.distributed.{name} must be > 0 seconds, got "
                 f"{dist[name]}")

    m = config.mesh
    _require(m.model >= 1, f"config.mesh.model must be >= 1, got {m.model}")
    _require(m.data == -1 or m.data >= 1, f"config.mesh.data must be -1 or >= 1, got {m.data}")
    method = get_method(config.method.name)
    resolve_model_defaults(config)  # e.g. the head regex: the model family's
    method.validate(method_options(config.method, method))


def check_batch_divisible(config: ml_collections.ConfigDict, data_axis: int) -> None:
    for name in ("batch_size", "eval_batch_size"):
        size = config.train[name]
        _require(size % data_axis == 0,
                 f"config.train.{name}={size} is not divisible by the mesh data axis "
                 f"({data_axis} devices)")


def prepare_workdir(workdir: str) -> str:
    """Creates `workdir` and checks that it is writable; returns its absolute path."""
    _require(bool(workdir), "a workdir is required (--workdir=DIR)")
    path = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"workdir {path!r} is not writable: {e}") from None
    return path
