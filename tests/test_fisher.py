"""Fisher scores: vmapped/scanned chunks equal a plain loop of single-example gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fishjax import objectives
from fishjax.core.errors import FisherError
from fishjax.models import EncoderConfig, SequenceClassifier, init_params
from fishjax.selection.fisher import (
    captured_fisher,
    captured_sum_step,
    fisher_example_fn,
    fisher_pass,
    fisher_scores,
    sum_and_mass,
)
from fishjax.selection.per_example import auto_chunk_size, compiled_pass

B, L = 8, 12


def _tiny(num_labels: int):
    cfg = EncoderConfig.tiny("bert", vocab_size=50)
    module = SequenceClassifier(cfg, num_labels)
    params = init_params(cfg, num_labels, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, L + 1, size=B)
    mask = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
    batch = {
        "input_ids": (rng.integers(5, 50, size=(B, L)) * mask).astype(np.int32),
        "attention_mask": mask,
        "token_type_ids": np.zeros((B, L), np.int32),
        "labels": (rng.normal(size=B).astype(np.float32) if num_labels == 1
                   else rng.integers(0, num_labels, size=B).astype(np.int32)),
        "weights": np.ones(B, np.float32),
    }
    return module, params, batch


def _objective(num_labels: int) -> objectives.Objective:
    return objectives.Regression() if num_labels == 1 else \
        objectives.SequenceClassification(num_labels=num_labels)


_BRUTE_FORCE: dict = {}


def _brute_force_of_tiny(mode: str, num_labels: int):
    """`_brute_force` of `_tiny(num_labels)` with its last two rows padding, computed once
    per (mode, num_labels): the eager loop is the slow part of the engine/chunk cases."""
    if (mode, num_labels) not in _BRUTE_FORCE:
        module, params, batch = _tiny(num_labels)
        batch["weights"][-2:] = 0.0
        _BRUTE_FORCE[mode, num_labels] = _brute_force(module, params, batch, mode, num_labels)
    return _BRUTE_FORCE[mode, num_labels]


def _brute_force(module, params, batch, mode, num_labels):
    """Loop over examples; the log-likelihood written out by hand, no vmap or scan. Each
    single-example gradient is jitted (one compile per formula, not an eager pass per
    example)."""
    apply = objectives.make_apply_fn(module, objectives.SequenceClassification())
    out = lambda p, ex: apply(p, ex)[0]
    # d(-log p(y|x)) for a class y; d f(x) for regression (Gaussian with variance 1/2:
    # Fisher = 2 (df)^2); d (f(x) - y)^2 for the regression's empirical Fisher.
    grad_nll = jax.jit(jax.grad(lambda p, ex, c: -jax.nn.log_softmax(out(p, ex))[c]))
    grad_out = jax.jit(jax.grad(lambda p, ex: out(p, ex)[0]))
    grad_sq = jax.jit(jax.grad(lambda p, ex, y: (out(p, ex)[0] - y) ** 2))
    total = jax.tree_util.tree_map(lambda p: np.zeros(p.shape, np.float64), params)

    def add(tree, weight=1.0):
        nonlocal total
        total = jax.tree_util.tree_map(lambda t, g: t + weight * np.asarray(g, np.float64) ** 2,
                                       total, tree)

    def one_example(ex):
        if num_labels == 1:
            y = float(ex["labels"][0])
            if mode == "empirical":
                add(grad_sq(params, ex, y))
            else:
                add(grad_out(params, ex), weight=2.0)
        elif mode == "empirical":
            add(grad_nll(params, ex, int(ex["labels"][0])))
        else:
            probs = np.asarray(jax.nn.softmax(out(params, ex)))
            for c in range(num_labels):
                add(grad_nll(params, ex, c), weight=float(probs[c]))

    for i in range(B):
        if batch["weights"][i] != 0:
            one_example({k: v[i:i + 1] for k, v in batch.items()})
    return total


SLOW = pytest.mark.slow  # the default suite keeps each (mode, engine) and label count


@pytest.mark.parametrize("mode,num_labels,chunk,engine", [
    pytest.param("empirical", 3, 1, "per_example", marks=SLOW),
    ("empirical", 3, 4, "per_example"),
    pytest.param("expected", 3, 1, "per_example", marks=SLOW),
    ("expected", 2, 8, "per_example"),
    pytest.param("empirical", 1, 2, "per_example", marks=SLOW),
    ("expected", 1, 1, "per_example"),
    # One batched backward and per-example outer products: the same scores.
    pytest.param("empirical", 3, 1, "capture", marks=SLOW), ("expected", 3, 4, "capture"),
    ("empirical", 1, 1, "capture"), pytest.param("expected", 1, 2, "capture", marks=SLOW),
])
def test_chunked_scores_equal_loop(mode, num_labels, chunk, engine):
    module, params, batch = _tiny(num_labels)
    batch["weights"][-2:] = 0.0  # padding rows must contribute nothing
    loss_fn = objectives.make_loss_fn(module, _objective(num_labels))
    res = fisher_scores(loss_fn, params, [batch], mode=mode, objective=_objective(num_labels),
                        chunk_size=chunk, progress=False, engine=engine)
    want = _brute_force_of_tiny(mode, num_labels)
    assert res.num_examples == B - 2
    scale = max(float(x.max()) for x in jax.tree_util.tree_leaves(want))
    for got, ref in zip(jax.tree_util.tree_leaves(res.scores), jax.tree_util.tree_leaves(want),
                        strict=True):
        # rtol 1e-5; the atol only absorbs float32 rounding in entries >= 1e7 x below the
        # largest score (e.g. the key bias, whose gradient is zero up to rounding), where
        # vmap and the loop, multiplying in different orders, round differently.
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-7 * scale)


def test_eligible_leaves_only_and_num_samples():
    module, params, batch = _tiny(2)
    loss_fn = objectives.make_loss_fn(module, objectives.SequenceClassification())
    full = fisher_scores(loss_fn, params, [batch], num_samples=5, progress=False)
    assert full.num_examples == 5
    batch5 = {**batch, "weights": np.array([1] * 5 + [0] * 3, np.float32)}
    ref = fisher_scores(loss_fn, params, [batch5], progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(full.scores), jax.tree_util.tree_leaves(ref.scores),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    only = fisher_scores(loss_fn, params, [batch], eligible=r"^encoder/", progress=False)
    for path, leaf in jax.tree_util.tree_flatten_with_path(only.scores)[0]:
        top = path[0].key
        assert (np.asarray(leaf).sum() > 0) == (top == "encoder"), top
    # Same data, same scores (nothing random in the Fisher pass).
    again = fisher_scores(loss_fn, params, [batch], eligible=r"^encoder/", progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(only.scores), jax.tree_util.tree_leaves(again.scores),
        strict=True))


def test_bad_arguments():
    module, params, batch = _tiny(2)
    loss_fn = objectives.make_loss_fn(module, objectives.SequenceClassification())
    with pytest.raises(FisherError, match="mode"):
        fisher_scores(loss_fn, params, [batch], mode="fisherish", progress=False)
    with pytest.raises(FisherError, match="eligible"):
        fisher_scores(loss_fn, params, [batch], eligible=r"^nothing/", progress=False)
    with pytest.raises(FisherError, match="multiple of chunk_size"):
        fisher_scores(loss_fn, params, [batch], chunk_size=3, progress=False)
    with pytest.raises(FisherError, match="no examples"):
        fisher_scores(loss_fn, params, [], progress=False)


def test_scores_are_float32_and_jit_compiles_once_per_shape():
    module, params, batch = _tiny(2)
    loss_fn = objectives.make_loss_fn(module, objectives.SequenceClassification())
    res = fisher_scores(loss_fn, params, [batch, batch, batch], progress=False)
    assert res.num_examples == 3 * B
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(res.scores))
    # The pass's own compiled function (cached by example fn, chunk size, reducer).
    step = compiled_pass(fisher_example_fn(loss_fn, "empirical", None), auto_chunk_size(B),
                         sum_and_mass)
    assert step._cache_size() == 1  # three batches of one shape: one compilation
    fisher_scores(loss_fn, params, [batch, batch], progress=False)
    assert step._cache_size() == 1  # a second pass reuses it
    longer = {k: (np.concatenate([v, v], axis=1) if np.ndim(v) == 2 else v)
              for k, v in batch.items()}
    fisher_scores(loss_fn, params, [longer], progress=False)
    assert step._cache_size() == 2  # another sequence length: exactly one more


def test_capture_engine_per_example_masses_equal_per_example_engine():
    """IRD's per-example masses (a reduction over each example's own contribution tree)
    come out the same from both engines, padding rows included."""
    module, params, batch = _tiny(2)
    batch["weights"][-3:] = 0.0
    loss_fn = objectives.make_loss_fn(module, objectives.SequenceClassification())
    rng = np.random.default_rng(1)
    mass_mask = jax.tree_util.tree_map(lambda p: rng.random(p.shape) < 0.3, params)
    runs = [fisher_pass(loss_fn, params, [batch], mass_mask=mass_mask, engine=e, progress=False)
            for e in ("per_example", "capture")]
    np.testing.assert_array_equal(runs[0].example_ids, runs[1].example_ids)
    np.testing.assert_allclose(runs[1].example_mass, runs[0].example_mass, rtol=1e-5)
    scale = max(float(x.max()) for x in jax.tree_util.tree_leaves(runs[0].scores))
    for got, ref in zip(*(jax.tree_util.tree_leaves(r.scores) for r in runs), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5,
                                   atol=1e-7 * scale)
    assert len(runs[1].example_mass) == B - 3 and np.all(runs[1].example_mass > 0)


def _extra_param_loss(module, params_key="extra"):
    """A loss whose params carry a leaf no Dense/LayerNorm/Embed call owns."""
    base = objectives.make_loss_fn(module, objectives.SequenceClassification())

    def loss_fn(params, batch):
        rest = {k: v for k, v in params.items() if k != params_key}
        return base(rest, batch) * params[params_key]["scale"]

    return loss_fn


def test_capture_engine_rejects_params_it_cannot_see():
    module, params, batch = _tiny(2)
    uncovered = {**params, "extra": {"scale": jnp.ones(())}}
    with pytest.raises(FisherError, match="not params of an nn.Dense"):
        fisher_scores(_extra_param_loss(module), uncovered, [batch], engine="capture",
                      progress=False)
    # Kernels transformed before apply: the layer sees 2W, the gradient of W is twice
    # the captured one. The first-batch check against jax.grad refuses it.
    base = objectives.make_loss_fn(module, objectives.SequenceClassification())
    doubled = lambda p, b: base(jax.tree_util.tree_map(lambda x: 2 * x, p), b)
    with pytest.raises(FisherError, match="differs from jax.grad"):
        fisher_scores(doubled, params, [batch], engine="capture", progress=False)
    with pytest.raises(FisherError, match="engine"):
        fisher_scores(base, params, [batch], engine="outer", progress=False)


def test_capture_engine_compiles_once_per_shape():
    module, params, batch = _tiny(2)
    loss_fn = objectives.make_loss_fn(module, objectives.SequenceClassification())
    c = auto_chunk_size(B)
    prepare, example_fn = captured_fisher(loss_fn, "empirical", None)
    # Plain sums (FISH): the whole-batch step; sums with masses (IRD): the per-example scan.
    sums = compiled_pass(example_fn, c, sum_and_mass, prepare,
                         captured_sum_step(loss_fn, "empirical", None))
    masses = compiled_pass(example_fn, c, sum_and_mass, prepare)
    mass_mask = jax.tree_util.tree_map(lambda p: np.ones(p.shape, bool), params)
    for _ in range(2):
        fisher_scores(loss_fn, params, [batch, batch], engine="capture", progress=False)
        fisher_pass(loss_fn, params, [batch], mass_mask=mass_mask, engine="capture",
                    progress=False)
        assert sums._cache_size() == 1 and masses._cache_size() == 1
