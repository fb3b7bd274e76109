"""Row splits: which rows of a task's training split a run trains on, which of their labels
are flipped, and which rows are held out as an extra eval split named `validation`.

A row split file is JSON: `{"train": [rows], "flip": [rows], "validation": [rows]}`, row
indices into the training split as loaded (after `data.max_train_samples`, if set);
`flip` must lie in `train`, `validation` must not meet `train`. Flipping a label: 1 - y for
two classes, (y + 1) mod C for C classes (regression: not allowed). A generation task's
flipped rows have their targets moved round by one, in row order (each takes the next
flipped row's target, the last the first's): targets shuffled across examples, no row
keeping its own (unless two targets are the same text), and the same every time. A source
in multi-source selection is a named set of rows; its runs are row splits of one pooled
training set.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from fishjax.core.errors import DataError
from fishjax.core.io import atomic_write_json, read_json
from fishjax.data.glue import RawSplit
from fishjax.data.tasks import TaskSpec

VALIDATION = "validation"


@dataclasses.dataclass(frozen=True)
class RowSplit:
    train: np.ndarray  # int64, sorted, unique
    flip: np.ndarray  # int64, sorted, unique, within train
    validation: np.ndarray | None = None  # int64, sorted, unique, disjoint from train

    def to_dict(self) -> dict:
        return {"train": self.train.tolist(), "flip": self.flip.tolist(),
                "validation": None if self.validation is None else self.validation.tolist()}


def _rows(values, name: str, source: str) -> np.ndarray:
    rows = np.asarray(values, dtype=np.int64)
    if rows.ndim != 1 or (rows.size and rows.min() < 0):
        raise DataError(f"{source}: `{name}` must be a list of row indices >= 0")
    if np.unique(rows).size != rows.size:
        raise DataError(f"{source}: `{name}` repeats a row")
    return np.sort(rows)


def make_row_split(train, flip=(), validation=None, source: str = "row split") -> RowSplit:
    """A checked `RowSplit` from index lists."""
    split = RowSplit(train=_rows(train, "train", source), flip=_rows(flip, "flip", source),
                     validation=None if validation is None else
                     _rows(validation, "validation", source))
    if split.train.size == 0:
        raise DataError(f"{source}: `train` is empty")
    if not np.isin(split.flip, split.train).all():
        raise DataError(f"{source}: `flip` names rows that are not in `train`")
    if split.validation is not None and np.intersect1d(split.train, split.validation).size:
        raise DataError(f"{source}: `validation` rows are also `train` rows")
    return split


def load_row_split(path: str) -> RowSplit:
    if not os.path.isfile(path):
        raise DataError(f"row split file {path!r} does not exist")
    try:  # a file save_row_split wrote is sealed and checked; one written by hand is not
        d = read_json(path, DataError, "row split")
    except OSError as e:
        raise DataError(f"row split file {path!r} cannot be read: {e}") from None
    if not isinstance(d, dict) or "train" not in d:
        raise DataError(f"row split file {path!r} must be an object with a `train` list")
    return make_row_split(d["train"], d.get("flip") or (), d.get("validation"), path)


def save_row_split(path: str, split: RowSplit) -> str:
    atomic_write_json(path, split.to_dict(), sealed=True)
    return os.path.abspath(path)


def flip_labels(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """Each label moved to another class: 1 - y (two classes), (y + 1) mod C."""
    if num_labels < 2:
        raise DataError("labels of a regression task cannot be flipped")
    return (np.asarray(labels) + 1) % num_labels


def rotate_targets(targets: list, at: np.ndarray) -> list:
    """`targets` with those at positions `at` (2 or more) moved round by one."""
    if len(at) < 2:
        raise DataError("a generation task's flipped rows trade targets: flip 2 or more rows")
    out = list(targets)
    for i, j in zip(at, np.roll(at, -1), strict=True):
        out[i] = targets[j]
    return out


def apply_row_split(raw_train: RawSplit, split: RowSplit, task: TaskSpec
                    ) -> tuple[RawSplit, RawSplit | None]:
    """(train rows with their flips, validation rows or None) of `task`'s training split."""
    for name, rows in (("train", split.train), ("validation", split.validation)):
        if rows is not None and rows.size and rows.max() >= len(raw_train):
            raise DataError(f"row split `{name}` names row {int(rows.max())}, but the training "
                            f"split {raw_train.source} has {len(raw_train)} rows")
    train = raw_train.rows(split.train)
    if split.flip.size and task.generative:
        train = dataclasses.replace(train, text_b=rotate_targets(
            train.text_b, np.searchsorted(split.train, split.flip)))
    elif split.flip.size:
        at = np.searchsorted(split.train, split.flip)
        labels = train.labels.copy()
        labels[at] = flip_labels(labels[at], task.num_labels)
        train = dataclasses.replace(train, labels=labels)
    validation = None if split.validation is None else raw_train.rows(split.validation,
                                                                     VALIDATION)
    return train, validation
