"""A workdir belongs to one run: resuming needs the config that made it.

The first run writes the resolved config to `<workdir>/config.json`, and that file is never
rewritten. A later run in the same workdir resumes only if its config equals that one up
to the fields that cannot change the results (`RESULT_NEUTRAL`: logging, evaluation and
checkpoint cadence, where to stop, whether to export, the data cache folder) and the
sections of `config.method` that the run's method does not read (other methods' options,
`fishjax.methods.base.Method.config_blocks`): an option added to one method never refuses
another method's older workdir, nor does a field added since the workdir was made while it
is left off (None or empty). Otherwise it
stops with the differing fields and the two ways out: a new workdir, or `overwrite`, which
moves the old run aside to `<workdir>.old-<time>` (nothing is deleted).

Also here: the bookkeeping of a resumed run (its metrics rows past the restored step are
dropped, so none is written twice) and the removal of an empty workdir a failed run made.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import ml_collections

from fishjax.core.errors import WorkdirError
from fishjax.core.io import atomic_write_text, read_json
from fishjax.methods import get_method, inactive_blocks
from fishjax.train.model_defaults import resolve_model_defaults

log = logging.getLogger("fishjax")

CONFIG_FILE = "config.json"
# Fields that cannot change a run's results (its trajectory, metrics and artefacts): a
# resumed run may differ in them.
RESULT_NEUTRAL = (
    "train.log_every_steps",
    "train.eval_every_steps",
    "train.eval_before_training",
    "train.checkpoint_every_steps",
    "train.stop_after_steps",
    "train.export",
    "train.keep_checkpoints",
    "data.cache_dir",
    "distributed",  # the whole section: how processes meet, not what they compute
    "sources",  # multi-source selection's section: its runs carry it, training never reads it
)


# Fields added after workdirs were made, with the value that reproduces the older code:
# an older config.json without the field matches a config holding this value.
ADDED_WITH_DEFAULT = {
    "model.pooling": "pooler",
    "method.fisher.token_reduction": "mean",
    "method.xpeft.mixing": "mean",
}


def config_json(config: ml_collections.ConfigDict) -> str:
    return config.to_json_best_effort(indent=2, sort_keys=True) + "\n"


def flatten_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict (a config's `to_dict()`) as {dotted field: value}."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differing_fields(old: dict, new: dict, ignore: Sequence[str] = ()
                     ) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) of every field that differs and is not neutral (nor
    in a section of `ignore`)."""
    a, b = flatten_config(old), flatten_config(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not is_result_neutral(k, ignore)
            and not (k not in a and (b[k] in (None, [])  # a field added since, left off
                                     or (k in ADDED_WITH_DEFAULT
                                         and b[k] == ADDED_WITH_DEFAULT[k])))]


def is_result_neutral(field: str, also: Sequence[str] = ()) -> bool:
    """Whether `field` (dotted) is, or lies in a section, listed in RESULT_NEUTRAL (or in
    `also`)."""
    return any(field == n or field.startswith(n + ".") for n in (*RESULT_NEUTRAL, *also))


def unread_sections(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The `config.method` sections the active method does not read (other methods'
    options): they cannot change this run, so a resume does not compare them."""
    method = get_method(config.method.name)
    return tuple(f"method.{b}" for b in inactive_blocks(config.method, method))


def check_workdir(config: ml_collections.ConfigDict, workdir: str,
                  overwrite: bool = False) -> str | None:
    """Raises WorkdirError unless `workdir` is new or holds a run of this config (up to
    neutral fields); with `overwrite`, a different run is moved aside instead, and the
    folder it went to is returned (else None)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    resolve_model_defaults(config)  # config.json holds them resolved
    try:
        old = read_json(path)
    except (OSError, ValueError) as e:
        raise WorkdirError(f"{path} is unreadable ({e}): the workdir cannot say which config "
                           "made it; use a new workdir (or --overwrite to move it aside)") from None
    diff = differing_fields(old, json.loads(config_json(config)), unread_sections(config))
    if not diff:
        return None
    if overwrite:
        aside = f"{os.path.abspath(workdir)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while os.path.exists(aside):
            aside = f"{aside.split('~')[0]}~{n}"
            n += 1
        os.rename(workdir, aside)
        log.warning("the workdir held a run of another config (%s): moved to %s",
                    ", ".join(f[0] for f in diff[:6]), aside)
        return aside
    shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:8])
    more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
    raise WorkdirError(
        f"{workdir} holds a run made with another config ({shown}{more}). To resume it, "
        "run its own config (config.json there); to start this run, use a new workdir, or "
        "pass --overwrite (train.py; overwrite=True in train_and_evaluate) to move the old "
        "run to <workdir>.old-<time>: nothing is deleted")


def write_config_once(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Writes `config.json` of a new run; an existing one is kept (it made the results
    there). Returns whether it wrote one."""
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        return False
    atomic_write_text(path, config_json(config))
    return True


def truncate_metrics(path: str, step: int) -> int:
    """Drops the rows of `metrics.jsonl` past `step` (written after the restored checkpoint
    by a killed run, so a resumed run does not write them twice) and a torn last line;
    returns how many rows were dropped."""
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    keep = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if int(row.get("step", 0)) <= step:
            keep.append(line)
    dropped = len(lines) - len(keep)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in keep))
    return dropped


def remove_if_empty(workdir: str) -> bool:
    """Removes `workdir` if it holds nothing (a run that failed before writing anything
    made it); returns whether it did."""
    try:
        os.rmdir(workdir)  # fails unless empty
        return True
    except OSError:
        return False
