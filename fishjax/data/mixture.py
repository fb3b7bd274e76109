"""Training rows of other tasks appended to a task's training split (`config.data.mix`).

Each entry is a string `"task:rows:dir"`: up to `rows` rows (`all` for every row; drawn
with a fixed seed) of `task`'s training split, read from the GLUE folder `dir`, appended in
that order after the main task's training rows. The other tasks' labels are taken as label
ids of the main task's head, so every task must have as many labels as the main one
(two-class tasks mix with two-class tasks; regression never mixes). The pooled split keeps
row ids stable: the main task's rows first, then each entry's block, so a row split
(`fishjax.data.row_split`) or a multi-source pool can name rows of any block.
Single-sentence and pair tasks mix: a single-sentence row's second segment is None and it
is tokenized alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from fishjax.data.glue import RawSplit, load_split
from fishjax.data.tasks import DataError, TaskSpec, get_task


@dataclasses.dataclass(frozen=True)
class MixEntry:
    """One `config.data.mix` entry: `rows` rows (None: all) of `task` read from `dir`."""

    task: TaskSpec
    rows: int | None
    dir: str

    @classmethod
    def parse(cls, text: str) -> MixEntry:
        parts = str(text).split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise DataError(f"config.data.mix entry {text!r} must be 'task:rows:dir' (rows a "
                            "positive number or 'all'), e.g. 'mrpc:500:../glue/MRPC'")
        name, rows, folder = parts
        if rows == "all":
            count = None
        elif rows.isdigit() and int(rows) > 0:
            count = int(rows)
        else:
            raise DataError(f"config.data.mix entry {text!r}: rows must be a positive number "
                            f"or 'all', got {rows!r}")
        return cls(task=get_task(name), rows=count, dir=folder)


def parse_mix(entries: Sequence[str] | None, main: TaskSpec) -> list[MixEntry]:
    """The checked entries of `config.data.mix` for a run of task `main`."""
    out = [MixEntry.parse(e) for e in entries or ()]
    for e in out:
        if main.is_regression or e.task.is_regression:
            raise DataError(f"config.data.mix: {e.task.name!r} cannot mix with {main.name!r} "
                            "(regression tasks are not mixed)")
        if e.task.num_labels != main.num_labels:
            raise DataError(f"config.data.mix: {e.task.name!r} has {e.task.num_labels} labels "
                            f"and {main.name!r} {main.num_labels}: mixed tasks share one head")
    return out


def concat_splits(parts: Sequence[RawSplit], task: str, split: str) -> RawSplit:
    """The rows of `parts` one after another, as one split of `task`."""
    if not parts:
        raise DataError("nothing to concatenate")
    pair = any(p.text_b is not None for p in parts)
    text_b = None
    if pair:
        text_b = [t for p in parts for t in (p.text_b or [None] * len(p))]
    fingerprint = hashlib.sha256("\n".join(f"{p.task}:{p.split}:{len(p)}:{p.fingerprint}"
                                           for p in parts).encode()).hexdigest()
    return RawSplit(task=task, split=split, text_a=[t for p in parts for t in p.text_a],
                    text_b=text_b, labels=np.concatenate([p.labels for p in parts]),
                    source=" + ".join(p.source for p in parts), fingerprint=fingerprint)


# The rows an entry draws do not depend on the run's seed: runs of several seeds (or a
# multi-source pool and its fine-tunes) pool the same rows under the same ids.
MIX_SEED = 0


def mix_blocks(entries: Sequence[MixEntry]) -> list[RawSplit]:
    """Each entry's rows: its training split, `rows` of it drawn with `MIX_SEED`."""
    return [load_split(e.task, e.task.train_split, e.dir, max_samples=e.rows, seed=MIX_SEED)
            for e in entries]
