"""A run's data: the task's splits as text, then tokenized (cached) into length buckets."""

from __future__ import annotations

import dataclasses
import os
from functools import partial

import ml_collections

from fishjax.data import RawSplit, TaskSpec, TokenizedSplit, load_split, tokenize_split


@dataclasses.dataclass
class TaskData:
    """Tokenized train split and eval splits of one task."""

    task: TaskSpec
    train: TokenizedSplit
    evals: dict[str, TokenizedSplit]


def cache_dir(config: ml_collections.ConfigDict) -> str:
    """Where tokenized splits are cached: data.cache_dir, $FISHJAX_CACHE, ~/.cache/fishjax."""
    if config.data.cache_dir:
        return config.data.cache_dir
    return os.environ.get("FISHJAX_CACHE", os.path.expanduser("~/.cache/fishjax"))


def load_raw_splits(config: ml_collections.ConfigDict, task: TaskSpec) -> dict[str, RawSplit]:
    """Train and eval splits as text; raises DataError on any bad file before training."""
    d = config.data
    raw = {task.train_split: load_split(task, task.train_split, d.dir,
                                        max_samples=d.max_train_samples, seed=config.seed)}
    for split in task.eval_splits:
        raw[split] = load_split(task, split, d.dir, max_samples=d.max_eval_samples,
                                seed=config.seed)
    return raw


def tokenize_task(config: ml_collections.ConfigDict, task: TaskSpec, raw: dict[str, RawSplit],
                  tokenizer) -> TaskData:
    tok = partial(tokenize_split, tokenizer=tokenizer, max_length=config.data.max_length,
                  buckets=tuple(config.data.buckets), cache_dir=cache_dir(config))
    return TaskData(
        task=task,
        train=tok(raw[task.train_split]),
        evals={s: tok(raw[s]) for s in task.eval_splits},
    )
