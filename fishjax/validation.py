"""Checks of a run config and workdir, done before any data or model is loaded.

Every problem raises `ConfigError` naming the field and the bad value, so a run never
starts training on a config that cannot finish.
"""

from __future__ import annotations

import os
import re
import tempfile

import ml_collections

DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
    """A config value (or workdir) that cannot be used."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the first invalid field found."""
    from fishjax.data import DataError, get_task
    from fishjax.fisher import MODES
    from fishjax.masks import HEAD_POLICIES
    from fishjax.methods import available_methods

    for section in ("model", "data", "train", "mesh", "method"):
        _require(section in config, f"config has no `{section}` section")
    try:
        get_task(config.task)
    except DataError as e:
        raise ConfigError(f"config.task: {e}") from None
    _require(bool(config.model.name), "config.model.name is empty")
    _require(config.model.dtype in DTYPES,
             f"config.model.dtype must be one of {DTYPES}, got {config.model.dtype!r}")
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
    for name in ("eval_every_steps", "stop_after_steps", "warmup_steps"):
        v = t[name]
        _require(v is None or v >= 0, f"config.train.{name} must be >= 0, got {v}")

    m = config.mesh
    _require(m.model >= 1, f"config.mesh.model must be >= 1, got {m.model}")
    _require(m.data == -1 or m.data >= 1, f"config.mesh.data must be -1 or >= 1, got {m.data}")
    meth = config.method
    _require(0.0 < meth.keep_ratio <= 1.0,
             f"config.method.keep_ratio must be in (0, 1], got {meth.keep_ratio}")
    _require(meth.head_policy in HEAD_POLICIES,
             f"config.method.head_policy must be one of {HEAD_POLICIES}, got {meth.head_policy!r}")
    for name in ("head_regex", "eligible_regex", "bitfit_regex"):
        try:
            re.compile(meth[name])
        except re.error as e:
            raise ConfigError(f"config.method.{name}={meth[name]!r} is not a regex: {e}") from None
    f = meth.fisher
    _require(f.mode in MODES, f"config.method.fisher.mode must be one of {MODES}, got {f.mode!r}")
    _require(f.num_samples > 0 and f.batch_size > 0,
             "config.method.fisher.num_samples and batch_size must be positive")
    _require(str(f.chunk_size) == "auto" or (str(f.chunk_size).isdigit() and int(f.chunk_size) > 0
                                             and f.batch_size % int(f.chunk_size) == 0),
             f"config.method.fisher.chunk_size must be 'auto' or a positive divisor of "
             f"fisher.batch_size={f.batch_size}, got {f.chunk_size!r}")
    if meth.mask_file is not None:
        _require(os.path.isfile(meth.mask_file),
                 f"config.method.mask_file={meth.mask_file!r} does not exist")
    if meth.name == "ird":
        _validate_ird(meth)
    _require(config.method.name in available_methods(),
             f"config.method.name={config.method.name!r} is not a method; available: "
             f"{', '.join(available_methods())}")
    _validate_sparse(meth)
    if "peft" in meth:
        _validate_peft(meth.peft)


def _validate_peft(p: ml_collections.ConfigDict) -> None:
    """config.method.peft (the PEFT methods of fishjax.methods.fish_tuning)."""
    from fishjax.methods.fish_tuning import BUDGETS, SELECTIONS, TIE_BREAKS
    from fishjax.peft_tree import ADAPTER_SITES

    def positive_int(name: str, value) -> None:
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 f"config.method.peft.{name} must be a positive int, got {value!r}")

    for name in ("rank", "adapter_reduction_factor", "search_factor", "warmup_steps"):
        positive_int(name, p[name])
    if p.adapter_size is not None:
        positive_int("adapter_size", p.adapter_size)
    _require(p.alpha > 0, f"config.method.peft.alpha must be > 0, got {p.alpha}")
    for name, allowed in (("adapter_variant", tuple(ADAPTER_SITES)), ("selection", SELECTIONS),
                          ("budget", BUDGETS), ("tie_break", TIE_BREAKS)):
        _require(p[name] in allowed,
                 f"config.method.peft.{name} must be one of {allowed}, got {p[name]!r}")
    _require(isinstance(p.fisher_after_warmup, bool),
             f"config.method.peft.fisher_after_warmup must be True or False, got "
             f"{p.fisher_after_warmup!r}")
    try:
        re.compile(p.lora_targets)
    except (re.error, TypeError) as e:
        raise ConfigError(f"config.method.peft.lora_targets={p.lora_targets!r} is not a "
                          f"regex: {e}") from None


def _validate_sparse(meth: ml_collections.ConfigDict) -> None:
    """config.method.sparse_storage / sparse / sift (fishjax.sparse, the `sift` method)."""
    from fishjax.methods.sift import BUDGETS, GRAD_SOURCES
    from fishjax.sparse import WEIGHT_DECAY_MODES

    _require(isinstance(meth.get("sparse_storage", False), bool),
             f"config.method.sparse_storage must be True or False, got "
             f"{meth.get('sparse_storage')!r}")
    if "sparse" in meth:
        wd = meth.sparse.weight_decay
        _require(wd in WEIGHT_DECAY_MODES, f"config.method.sparse.weight_decay must be one of "
                 f"{WEIGHT_DECAY_MODES}, got {wd!r}")
    if "sift" not in meth:
        _require(meth.name != "sift", "config.method.sift is missing (see configs/default.py)")
        return
    s = meth.sift
    _require(0.0 < s.rate <= 1.0, f"config.method.sift.rate must be in (0, 1], got {s.rate}")
    _require(s.budget in BUDGETS,
             f"config.method.sift.budget must be one of {BUDGETS}, got {s.budget!r}")
    _require(s.grad_source in GRAD_SOURCES, f"config.method.sift.grad_source must be one of "
             f"{GRAD_SOURCES}, got {s.grad_source!r}")
    _require(int(s.num_batches) >= 1,
             f"config.method.sift.num_batches must be >= 1, got {s.num_batches}")
    for name in ("eligible_regex", "head_regex"):
        try:
            re.compile(s[name])
        except (re.error, TypeError) as e:
            raise ConfigError(f"config.method.sift.{name}={s[name]!r} is not a regex: {e}") \
                from None


def _validate_ird(meth: ml_collections.ConfigDict) -> None:
    from fishjax.ird import IRDError, IRDOptions

    _require("ird" in meth, "config.method.ird is missing (options of method `ird`)")
    try:
        IRDOptions.from_config(meth.ird)
    except IRDError as e:
        raise ConfigError(f"config.method.ird.{e.field}: {e}") from None


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
