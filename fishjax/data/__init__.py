"""GLUE data: task registry, loading, tokenization, length buckets and batching."""

from fishjax.data.glue import RawSplit, load_split
from fishjax.data.pipeline import (
    EpochPlan,
    TokenizedSplit,
    epoch_plan,
    make_batch,
    num_batches,
    tokenize_split,
)
from fishjax.data.tasks import TASKS, DataError, TaskSpec, get_task

__all__ = [
    "TASKS",
    "DataError",
    "EpochPlan",
    "RawSplit",
    "TaskSpec",
    "TokenizedSplit",
    "epoch_plan",
    "get_task",
    "load_split",
    "make_batch",
    "num_batches",
    "tokenize_split",
]
