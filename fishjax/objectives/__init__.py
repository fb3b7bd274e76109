"""Objectives: the protocol (`Objective`) through which every method, the trainer and the
Fisher passes see a task's targets, and its implementations (sequence classification,
regression, causal language modelling). See `fishjax.objectives.base` for the protocol."""

from fishjax.objectives.base import (
    Batch,
    FisherTerm,
    Objective,
    make_apply_fn,
    make_feature_fn,
    make_loss_fn,
    stack_rows,
    weighted_mean,
)
from fishjax.objectives.causal_lm import CausalLanguageModeling, answer_log_odds
from fishjax.objectives.classification import SequenceClassification, log_odds
from fishjax.objectives.registry import for_task, from_metadata
from fishjax.objectives.regression import Regression

__all__ = [
    "Batch",
    "CausalLanguageModeling",
    "FisherTerm",
    "Objective",
    "Regression",
    "answer_log_odds",
    "SequenceClassification",
    "for_task",
    "from_metadata",
    "log_odds",
    "make_apply_fn",
    "make_feature_fn",
    "make_loss_fn",
    "stack_rows",
    "weighted_mean",
]
