"""A run's data: the task's splits as text, then tokenized (cached) into length buckets.

With `data.mix` (`fishjax.data.mixture`) other tasks' training rows follow the task's own.
With `data.row_split` (`fishjax.data.row_split`) the run trains on chosen rows of the
training split (some labels flipped, if the file says so) and also evaluates on the rows
it holds out as `validation`, after the task's own eval splits."""

from __future__ import annotations

import dataclasses
import os
from functools import partial

import ml_collections

from fishjax.data import DataError, RawSplit, TaskSpec, TokenizedSplit, load_split, tokenize_split
from fishjax.data.generation import DEFAULT_PROMPT_FORMAT
from fishjax.data.instructions import Mixture
from fishjax.data.mixture import concat_splits, mix_blocks, parse_mix
from fishjax.data.row_split import VALIDATION, apply_row_split, load_row_split

INSTRUCT_TASK = "instruct"  # the task whose splits config.data.instruct describes
INSTRUCT_SPLITS_FILE = "instruct_splits.json"  # a run's record of them, in its workdir


def instruction_split_record(config: ml_collections.ConfigDict) -> dict:
    """The instruction mixture's split (each task's source rows per split), as recorded."""
    return Mixture.from_config(config.data.get("instruct")).raw_splits()[1]


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
    if task.name == INSTRUCT_TASK:  # a mixture of instruction tasks: its own splits
        raw = Mixture.from_config(d.get("instruct")).raw_splits(task.name)[0]
        if d.row_split and VALIDATION in raw:
            raise DataError("config.data.row_split holds rows out as `validation`, and the "
                            "instruction mixture has validation rows of its own: set "
                            "config.data.instruct.validation_per_task=0")
    else:
        raw = {task.train_split: load_split(task, task.train_split, d.dir,
                                            max_samples=d.max_train_samples, seed=config.seed)}
        for split in task.eval_splits:
            raw[split] = load_split(task, split, d.dir, max_samples=d.max_eval_samples,
                                    seed=config.seed)
    if d.get("mix"):  # other tasks' training rows after the main task's
        raw[task.train_split] = concat_splits(
            [raw[task.train_split], *mix_blocks(parse_mix(d.mix, task))], task.name,
            task.train_split)
    if d.row_split:
        train, validation = apply_row_split(raw[task.train_split], load_row_split(d.row_split),
                                            task)
        raw[task.train_split] = train
        if validation is not None:
            raw[VALIDATION] = validation
    return raw


def tokenize_task(config: ml_collections.ConfigDict, task: TaskSpec, raw: dict[str, RawSplit],
                  tokenizer) -> TaskData:
    tok = partial(tokenize_split, tokenizer=tokenizer, max_length=config.data.max_length,
                  buckets=tuple(config.data.buckets), cache_dir=cache_dir(config),
                  prompt_format=(config.data.get("prompt_format") or DEFAULT_PROMPT_FORMAT)
                  if task.generative else None,
                  long_targets=config.data.get("long_targets") or "error")
    # The task's eval splits that have rows (a mixture may hold no validation rows), then
    # a row split's held-out rows.
    evals = [s for s in dict.fromkeys((*task.eval_splits, VALIDATION)) if s in raw]
    return TaskData(
        task=task,
        train=tok(raw[task.train_split]),
        evals={s: tok(raw[s]) for s in evals},
    )
