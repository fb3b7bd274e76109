"""GLUE metrics in plain numpy.

Degenerate inputs give defined values instead of NaN and runtime warnings:

* ``f1`` is 0.0 when there are no positives among the labels or the predictions
  (tp + fp + fn == 0);
* ``matthews_corrcoef``, ``pearson`` and ``spearman`` are 0.0 when either input is
  constant (zero variance), e.g. a model predicting one class for every example;
* ``pearson``/``spearman`` return NaN (without warnings) when a score is NaN or infinite,
  e.g. after a diverged run, so the caller can log it rather than crash;
* every metric raises ``ValueError`` for empty inputs or inputs of different lengths.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fishjax.data.tasks import TaskSpec


def _pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"predictions ({p.size}) and labels ({y.size}) differ in length")
    if p.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return p, y


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 with class 1 as the positive class; 0.0 if there are no positives at all."""
    p, y = _pair(predictions, labels)
    tp = int(np.sum((p == 1) & (y == 1)))
    fp = int(np.sum((p == 1) & (y != 1)))
    fn = int(np.sum((p != 1) & (y == 1)))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multi-class form, which equals the binary phi coefficient)."""
    p, y = _pair(predictions, labels)
    classes, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = len(classes)
    confusion = np.bincount(codes[: y.size] * k + codes[y.size:], minlength=k * k)
    confusion = confusion.reshape(k, k).astype(np.float64)  # rows: true, cols: predicted
    t, q = confusion.sum(axis=1), confusion.sum(axis=0)
    s, c = confusion.sum(), np.trace(confusion)
    denom = (s * s - q @ q) * (s * s - t @ t)
    if denom <= 0:
        return 0.0
    return float(np.clip((c * s - t @ q) / np.sqrt(denom), -1.0, 1.0))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation; 0.0 if either input is constant."""
    p, y = _pair(predictions, labels)
    p, y = p.astype(np.float64), y.astype(np.float64)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        return float("nan")
    pc, yc = p - p.mean(), y - y.mean()
    denom = np.sqrt((pc @ pc) * (yc @ yc))
    if denom == 0.0:
        return 0.0
    return float(np.clip((pc @ yc) / denom, -1.0, 1.0))


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of the ranks they span."""
    x = np.asarray(x).reshape(-1)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Runs of equal values in sorted order: where each starts and ends, and each item's run.
    new_run = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], x.size]  # exclusive
    run = np.cumsum(new_run) - 1
    ranks = np.empty(x.size, dtype=np.float64)
    # Positions start..end-1 hold 1-based ranks start+1..end, whose mean is (start+1+end)/2.
    ranks[order] = (starts[run] + 1 + ends[run]) / 2.0
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation (Pearson on average ranks); 0.0 if either is constant."""
    p, y = _pair(predictions, labels)
    p, y = p.astype(np.float64), y.astype(np.float64)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        return float("nan")
    return pearson(rankdata(p), rankdata(y))


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the bool labels `positive`: the chance that
    a random positive scores above a random negative (ties count one half; Mann-Whitney U).
    NaN unless both classes are present."""
    s, y = _pair(scores, positive)
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s.astype(np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray,
                    weights: np.ndarray | None = None) -> dict[str, float]:
    """The task's metrics plus ``task.main_metric`` (the mean of the task's metrics).

    ``predictions`` are class ids ``[N]`` (or logits ``[N, num_labels]``, reduced by
    argmax) for classification, scores ``[N]`` or ``[N, 1]`` for regression. Rows with
    ``weights == 0`` (the padding rows of partial batches) are dropped first.
    """
    return metric_values(task.metrics, task.main_metric, predictions, labels, weights,
                         argmax=not task.is_regression)


def metric_values(names: tuple[str, ...], main_metric: str, predictions: np.ndarray,
                  labels: np.ndarray, weights: np.ndarray | None = None, *,
                  argmax: bool) -> dict[str, float]:
    """The metrics `names` plus `main_metric` (their mean); `argmax`: 2-d predictions are
    class scores, reduced by argmax. Rows with ``weights == 0`` are dropped first."""
    predictions, labels = np.asarray(predictions), np.asarray(labels).reshape(-1)
    if argmax and predictions.ndim == 2 and predictions.shape[1] > 1:
        predictions = predictions.argmax(axis=-1)
    predictions = predictions.reshape(-1)
    if weights is not None:
        keep = np.asarray(weights).reshape(-1) != 0
        if keep.shape != labels.shape or predictions.shape != labels.shape:
            raise ValueError(f"predictions ({predictions.size}), labels ({labels.size}) and "
                             f"weights ({keep.size}) differ in length")
        predictions, labels = predictions[keep], labels[keep]
    results = {name: METRICS[name](predictions, labels) for name in names}
    results[main_metric] = float(np.mean([results[m] for m in names]))
    return results
