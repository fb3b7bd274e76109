"""A task's split as loaded from disk: texts and labels, before tokenization."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fishjax.data.tasks import DataError


@dataclass
class RawSplit:
    """One split as loaded: texts, label ids (int32) or scores (float32, regression). A
    generation task's split holds prompts in `text_a`, target texts in `text_b` and zeros
    as labels (`fishjax.data.generation`)."""

    task: str
    split: str
    text_a: list[str]
    text_b: list[str | None] | None  # None: a single-sentence task; a None entry: a
    # single-sentence row of a mixed split (`fishjax.data.mixture`)
    labels: np.ndarray
    source: str
    fingerprint: str

    def __len__(self) -> int:
        return len(self.text_a)

    def rows(self, indices: np.ndarray, split: str | None = None) -> RawSplit:
        """The rows `indices` of this split, in that order (named `split`, default its own)."""
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise DataError(f"{self.source}: row index out of range 0..{len(self) - 1}")
        return RawSplit(task=self.task, split=split or self.split,
                        text_a=[self.text_a[i] for i in indices],
                        text_b=None if self.text_b is None else [self.text_b[i] for i in indices],
                        labels=self.labels[indices], source=self.source,
                        fingerprint=self.fingerprint)
