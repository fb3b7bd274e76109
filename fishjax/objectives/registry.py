"""Objectives from a task (`for_task`) and from an artefact file's metadata (`from_metadata`)."""

from __future__ import annotations

from typing import Any

from fishjax.core.errors import ConfigError
from fishjax.data.tasks import TaskSpec
from fishjax.objectives.base import Objective
from fishjax.objectives.causal_lm import CausalLanguageModeling
from fishjax.objectives.classification import SequenceClassification
from fishjax.objectives.regression import Regression


def for_task(task: TaskSpec) -> Objective:
    """The objective of a task: its labels, metrics and main metric (a generation task:
    next-token prediction of its targets)."""
    if task.generative:
        return CausalLanguageModeling()
    if task.is_regression:
        return Regression(metric_names=task.metrics, main_metric=task.main_metric)
    return SequenceClassification(num_labels=task.num_labels, label_names=task.label_names,
                                  metric_names=task.metrics, main_metric=task.main_metric)


def from_metadata(meta: dict[str, Any], where: str = "the file") -> Objective:
    """The objective an artefact file was made for, from what `Objective.metadata` wrote
    (classification and regression files record `num_labels` and `id2label`; causal LM
    files their `objective`)."""
    if meta.get("objective") == "causal_lm":
        vocab = meta.get("vocab_size")
        return CausalLanguageModeling(vocab_size=None if vocab is None else int(vocab))
    n = meta.get("num_labels")
    if n is None:
        raise ConfigError(f"{where} records no objective (num_labels); was it written by "
                          "fishjax?")
    n = int(n)
    if n == 1:
        return Regression()
    id2label = meta.get("id2label")
    names = None if not id2label else tuple(str(id2label[k]) for k in
                                            sorted(id2label, key=int))
    return SequenceClassification(num_labels=n, label_names=names)
