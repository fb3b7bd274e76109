"""Tests for fishjax.data.metrics: hand-computed values, degenerate inputs, reference libraries."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from fishjax.data import TASKS
from fishjax.data.metrics import (
    accuracy,
    compute_metrics,
    f1,
    matthews_corrcoef,
    pearson,
    rankdata,
    spearman,
)

P = np.array([1, 1, 0, 0, 1])
Y = np.array([1, 0, 0, 1, 1])  # tp=2 fp=1 fn=1 tn=1


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_hand_computed_classification():
    assert accuracy(P, Y) == pytest.approx(3 / 5)
    assert f1(P, Y) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2)
    assert matthews_corrcoef(P, Y) == pytest.approx(1 / 6)
    assert matthews_corrcoef(Y, Y) == pytest.approx(1.0)
    assert matthews_corrcoef(1 - Y, Y) == pytest.approx(-1.0)


def test_hand_computed_correlations():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0])
    # centred: [-1, 0, 1] and [-7/3, -1/3, 8/3]; sum xy = 5, sum xx = 2, sum yy = 114/9
    assert pearson(x, y) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert spearman(x, y) == pytest.approx(1.0)
    assert spearman(x, -y) == pytest.approx(-1.0)
    assert rankdata(np.array([3, 1, 2, 2, 3, 3])).tolist() == [5.0, 1.0, 2.5, 2.5, 5.0, 5.0]
    # ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]: pearson of those.
    a, b = np.array([1.0, 2.5, 2.5, 4.0]), np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(np.array([1, 2, 2, 3]), b) == pytest.approx(pearson(a, b))


def test_degenerate_inputs():
    const = np.zeros(5, dtype=int)
    assert matthews_corrcoef(const, Y) == 0.0
    assert matthews_corrcoef(Y, const) == 0.0
    assert matthews_corrcoef(const, const) == 0.0
    assert f1(const, const) == 0.0  # no positives anywhere
    assert f1(const, Y) == 0.0
    assert accuracy(const, const) == 1.0
    assert pearson(np.ones(4), np.arange(4.0)) == 0.0
    assert spearman(np.arange(4.0), np.full(4, 2.5)) == 0.0
    assert pearson(np.array([1.0]), np.array([2.0])) == 0.0
    assert math.isnan(pearson(np.array([1.0, np.nan, 3.0]), np.arange(3.0)))
    assert math.isnan(spearman(np.array([1.0, np.inf, 3.0]), np.arange(3.0)))
    for fn in (accuracy, f1, matthews_corrcoef, pearson, spearman):
        with pytest.raises(ValueError, match="zero examples"):
            fn(np.array([]), np.array([]))
        with pytest.raises(ValueError, match="differ in length"):
            fn(np.arange(3), np.arange(4))


def test_multiclass_mcc_matches_one_hot_correlation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))
    # Gorodkin's R_K: covariance of the one-hot matrices over the product of their spreads.
    yo, po = np.eye(3)[y], np.eye(3)[p]
    yc, pc = yo - yo.mean(0), po - po.mean(0)
    expected = np.sum(yc * pc) / math.sqrt(np.sum(yc * yc) * np.sum(pc * pc))
    assert matthews_corrcoef(p, y) == pytest.approx(expected)


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    y = x + rng.normal(size=300)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    # Rounded values have many ties.
    xr, yr = np.round(x), np.round(y * 2) / 2
    assert spearman(xr, yr) == pytest.approx(stats.spearmanr(xr, yr)[0])
    np.testing.assert_allclose(rankdata(yr), stats.rankdata(yr))


def test_against_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    p = np.where(rng.random(500) < 0.7, y, 1 - y)
    assert f1(p, y) == pytest.approx(skm.f1_score(y, p))
    assert matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p))
    assert accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p))


def test_compute_metrics_two_metric_task_with_weights():
    preds = np.array([1, 1, 0, 0, 1, 0, 0])
    labels = np.array([1, 0, 0, 1, 1, 1, 1])
    weights = np.array([1, 1, 1, 1, 1, 0, 0], dtype=np.float32)  # last two are padding rows
    out = compute_metrics(TASKS["mrpc"], preds, labels, weights)
    assert set(out) == {"f1", "accuracy", "f1_acc_mean"}
    assert out["f1"] == pytest.approx(2 / 3) and out["accuracy"] == pytest.approx(3 / 5)
    assert out["f1_acc_mean"] == pytest.approx((2 / 3 + 3 / 5) / 2)
    assert all(type(v) is float for v in out.values())


def test_compute_metrics_single_metric_and_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    out = compute_metrics(TASKS["sst2"], logits, np.array([1, 0, 0]))
    assert out == {"accuracy": pytest.approx(2 / 3)}
    out = compute_metrics(TASKS["cola"], np.array([1, 1, 0, 0, 1]), Y)
    assert out == {"matthews": pytest.approx(1 / 6)}


def test_compute_metrics_regression():
    scores = np.array([[0.5], [2.0], [3.9], [9.0]], dtype=np.float32)
    labels = np.array([0.0, 2.0, 4.0, 1.0], dtype=np.float32)
    out = compute_metrics(TASKS["stsb"], scores, labels, np.array([1, 1, 1, 0]))
    assert out["pearson"] > 0.99 and out["spearman"] == pytest.approx(1.0)
    assert out["pearson_spearman_mean"] == pytest.approx((out["pearson"] + 1.0) / 2)


def test_compute_metrics_rejects_mismatched_weights():
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics(TASKS["rte"], np.zeros(3), np.zeros(3), np.ones(4))
