"""GLUE data: task registry, loading, tokenization, length buckets, batching and metrics."""

from fishjax.data.glue import RawSplit, load_split, text_split
from fishjax.data.metrics import compute_metrics
from fishjax.data.pipeline import (
    EpochPlan,
    TokenizedSplit,
    cycle_epochs,
    epoch_plan,
    index_batches,
    iterate_batches,
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
    "compute_metrics",
    "cycle_epochs",
    "epoch_plan",
    "get_task",
    "index_batches",
    "iterate_batches",
    "load_split",
    "make_batch",
    "num_batches",
    "text_split",
    "tokenize_split",
]
