"""IRD (fishjax.selection.ird, method `ird`) and the generic Fisher pass it runs on.

Acceptance: a_s = a_p = 1 with one round gives FISH's mask on the same samples bitwise;
each s_i equals a brute-force per-example sum restricted to P_t; ranges are nested; the
mask has exactly k entries; same seed and pool, same result.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
import pytest

from fishjax import objectives
from fishjax.core.errors import FisherError, IRDError
from fishjax.core.tree import count_true, match_tree
from fishjax.data import TokenizedSplit, index_batches
from fishjax.models import EncoderConfig, SequenceClassifier, init_params
from fishjax.selection.fisher import fisher_pass, fisher_scores
from fishjax.selection.ird import (
    IRDOptions,
    draw_pool,
    keep_top_samples,
    resolve_schedule,
    run_ird,
)
from fishjax.selection.topk import top_k_mask

N, BS = 40, 8
ELIGIBLE = r"^(embeddings|encoder|pooler)/"  # everything but the head


@pytest.fixture(scope="module")
def tiny():
    """(loss_fn, params, data): the tiny BERT and 40 random examples in buckets (8, 16)."""
    cfg = EncoderConfig.tiny("bert", vocab_size=50)
    module = SequenceClassifier(cfg, 2)
    params = init_params(cfg, 2, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 17, size=N).astype(np.int32)
    mask = np.arange(16)[None] < lengths[:, None]
    data = TokenizedSplit(
        input_ids=(rng.integers(5, 50, size=(N, 16)) * mask).astype(np.int32),
        token_type_ids=np.zeros((N, 16), np.int32), lengths=lengths,
        labels=rng.integers(0, 2, size=N).astype(np.int32), buckets=(8, 16), pad_id=0)
    return objectives.make_loss_fn(module, objectives.SequenceClassification()), params, data


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _trees_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


@pytest.fixture(scope="module")
def sq(tiny):
    """id -> float64 leaves of that example's squared gradient, for all N examples: a plain
    loop of batches of one (no vmap, no scan), compiled once per bucket."""
    loss_fn, params, data = tiny
    grad = jax.jit(jax.grad(loss_fn))
    out = {}
    for batch in index_batches(data, np.arange(N), BS):
        for r, i in enumerate(batch["example_ids"]):
            if i < 0:
                continue
            one = {k: v[r:r + 1] for k, v in batch.items() if k != "example_ids"}
            out[int(i)] = [np.asarray(g, np.float64) ** 2 for g in _leaves(grad(params, one))]
    return out


def _masked(sq_leaves, mask) -> float:
    return float(sum(np.sum(g[m]) for g, m in zip(sq_leaves, _leaves(mask), strict=True)))


# -- the generic pass -------------------------------------------------------------------


def test_index_batches_cover_exactly_the_ids(tiny):
    _, _, data = tiny
    ids = np.array([3, 1, 17, 30, 2, 9, 11, 25, 38, 5, 6])
    seen = []
    for batch in index_batches(data, ids, 4):
        assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] in data.buckets
        real = batch["weights"] > 0
        assert np.all((batch["example_ids"] >= 0) == real)
        assert np.all(data.lengths[batch["example_ids"][real]] <= batch["input_ids"].shape[1])
        seen.extend(batch["example_ids"][real].tolist())
    assert sorted(seen) == sorted(ids.tolist())


def test_fisher_pass_masses_and_weighted_sums_match_brute_force(tiny, sq):
    loss_fn, params, data = tiny
    ids = np.arange(0, N, 3)  # 14 examples: partial batches, padding rows
    rng = np.random.default_rng(1)
    elig = match_tree(params, ELIGIBLE)
    bool_mask = jax.tree_util.tree_map(
        lambda p, e: (rng.random(np.shape(p)) < 0.3) & e, params, elig)
    float_mask = jax.tree_util.tree_map(lambda m: m * rng.random(m.shape), bool_mask)
    subset = set(ids[::2].tolist())  # the per-parameter sum over every other example

    def batches():
        for b in index_batches(data, ids, BS):
            yield {**b, "sum_weights": np.isin(b["example_ids"], list(subset)).astype(np.float32)}

    res = fisher_pass(loss_fn, params, batches(), eligible=elig, mass_mask=bool_mask,
                      progress=False)
    np.testing.assert_array_equal(res.example_ids, ids)
    assert res.num_examples == len(ids) == res.backward_passes
    np.testing.assert_allclose(res.example_mass, [_masked(sq[int(i)], bool_mask) for i in ids],
                               rtol=1e-5)
    weighted = fisher_pass(loss_fn, params, batches(), eligible=elig, mass_mask=float_mask,
                           param_sums=False, progress=False)
    assert weighted.scores is None
    want = [sum(float(np.sum(g * np.asarray(m, np.float64)))
                for g, m in zip(sq[int(i)], _leaves(float_mask), strict=True)) for i in ids]
    np.testing.assert_allclose(weighted.example_mass, want, rtol=1e-5)

    ref = fisher_scores(loss_fn, params, index_batches(data, sorted(subset), BS),
                        eligible=elig, progress=False)
    scale = max(float(x.max()) for x in _leaves(ref.scores))
    for a, b in zip(_leaves(res.scores), _leaves(ref.scores), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * scale)


def test_fisher_pass_rejects_bad_requests(tiny):
    loss_fn, params, data = tiny
    elig = match_tree(params, r"^encoder/")
    head_selected = jax.tree_util.tree_map(lambda p: np.ones(np.shape(p), bool), params)
    with pytest.raises(FisherError, match="not eligible"):
        fisher_pass(loss_fn, params, index_batches(data, [0, 1], BS), eligible=elig,
                    mass_mask=head_selected, progress=False)
    with pytest.raises(FisherError, match="nothing to compute"):
        fisher_pass(loss_fn, params, index_batches(data, [0, 1], BS), param_sums=False,
                    progress=False)
    dup = [{**b, "example_ids": np.zeros(BS, np.int64)} for b in index_batches(data, [0, 1], BS)]
    with pytest.raises(FisherError, match="duplicate"):
        fisher_pass(loss_fn, params, dup, progress=False)


# -- IRD ------------------------------------------------------------------------------


def test_one_full_round_equals_fish_bitwise(tiny):
    loss_fn, params, data = tiny
    pool = draw_pool(N, 24, seed=3)
    k = 500
    elig = match_tree(params, ELIGIBLE)
    fish = fisher_scores(loss_fn, params, index_batches(data, pool, BS), eligible=elig,
                         progress=False)
    fish_mask = top_k_mask(fish.scores, k, elig)
    for rounds in (1, 8):  # with a_s = a_p = 1 round 0 is a fixed point: one round either way
        opts = IRDOptions(pool_size=24, sample_shrink=1.0, param_shrink=1.0, max_rounds=rounds)
        res = run_ird(loss_fn, params, data, eligible=elig, k=k, options=opts, seed=3,
                      batch_size=BS, progress=False)
        assert _trees_equal(res.mask, fish_mask)
        np.testing.assert_array_equal(res.samples, pool)
        assert res.backward_passes == fish.backward_passes == 24
        assert len(res.trace["rounds"]) == 1 and res.trace["stop_reason"] == "fixed_point"
        assert res.trace["rounds"][0]["mask_overlap_fish_pool"] == 1.0


@pytest.mark.parametrize("ranking,k,pool_size", [
    ("range", 2000, 24), ("all", 2000, 24),
    ("range", 10000, N),  # P reaches k while S still shrinks: the masses are reused
])
def test_rounds_match_brute_force_and_shrink(tiny, sq, ranking, k, pool_size):
    loss_fn, params, data = tiny
    n_min = 4
    opts = IRDOptions(pool_size=pool_size, min_samples=n_min, max_rounds=6,
                      sample_ranking=ranking)
    elig = match_tree(params, ELIGIBLE)
    res = run_ird(loss_fn, params, data, eligible=elig, k=k, options=opts, seed=5,
                  batch_size=BS, progress=False, keep_history=True)
    p0 = res.history[0].range_mask
    assert count_true(p0) == res.trace["eligible_entries"]

    ranking_passes = scoring_passes = 0
    known_mass: tuple | None = None  # (mask, ids) of the last ranking pass
    for t, (rec, row) in enumerate(zip(res.history, res.trace["rounds"], strict=True)):
        n, m = len(rec.samples), count_true(rec.range_mask)
        kept = res.candidates[t].samples
        n_next = max(min(n_min, n), math.ceil(n / 2))
        assert len(kept) == row["samples_kept"] == n_next
        if rec.sample_mass is not None:
            # s_i = sum over P_t (range) or P_0 (all) of example i's squared gradient.
            want_mask = rec.range_mask if ranking == "range" else p0
            assert _trees_equal(rec.ranking_mask, want_mask)
            want = [_masked(sq[int(i)], want_mask) for i in rec.samples]
            np.testing.assert_allclose(rec.sample_mass, want, rtol=1e-5)
            np.testing.assert_array_equal(kept, keep_top_samples(rec.samples, rec.sample_mass,
                                                                 n_next))
        # F over S_{t+1}, brute force (eligible leaves; the others are 0).
        for e, got, *per_ex in zip(jax.tree_util.tree_leaves(elig), _leaves(rec.scores),
                                   *(sq[int(i)] for i in kept), strict=True):
            want = np.sum(per_ex, axis=0) if e else np.zeros_like(got)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * float(np.max(got)))
        # Nested ranges of the geometric sizes; the candidate has exactly k, inside P_{t+1}.
        nxt = res.history[t + 1].range_mask if t + 1 < len(res.history) else None
        if nxt is not None:
            assert all(np.all(a | ~b) for a, b in zip(_leaves(rec.range_mask), _leaves(nxt),
                                                      strict=True))
            assert count_true(nxt) == max(k, math.ceil(m / 2)) == row["params_kept"]
            assert np.all(np.isin(res.history[t + 1].samples, rec.samples))
        cand = res.candidates[t].mask(params)
        assert count_true(cand) == k
        # Passes: ranking unless nothing is dropped or the masses are known; scoring
        # unless F over exactly S_{t+1} is known.
        if n_next < n:
            reused = known_mass is not None and _trees_equal(known_mass[0], rec.ranking_mask) \
                and np.all(np.isin(rec.samples, known_mass[1]))
            assert (row["ranking_pass_examples"] == 0) == reused
            if not reused:
                ranking_passes += n
                known_mass = (rec.ranking_mask, rec.samples)
        if t == 0 or n_next < n:
            scoring_passes += n_next
    assert count_true(res.mask) == k
    assert res.backward_passes == ranking_passes + scoring_passes == sum(
        r["ranking_pass_examples"] + r["scoring_pass_examples"] for r in res.trace["rounds"])
    if ranking == "all":
        assert sum(r["ranking_pass_examples"] > 0 for r in res.trace["rounds"]) == 1
    assert res.trace["rounds"][-1]["params_kept"] == k
    assert res.trace["stop_reason"] in ("converged", "max_rounds")
    assert all(0 <= r["sample_mass_kept"] <= 1 for r in res.trace["rounds"]
               if r["sample_mass_kept"] is not None)
    if pool_size == N:
        assert any(r["sample_ranking"] != "none" and r["ranking_pass_examples"] == 0
                   for r in res.trace["rounds"])
    assert sum(res.trace["rounds"][0]["kept"]["labels"].values()) == pool_size // 2


def test_same_seed_and_pool_same_result(tiny):
    loss_fn, params, data = tiny
    opts = IRDOptions(pool_size=20, min_samples=4, max_rounds=3)
    run = lambda seed: run_ird(loss_fn, params, data, eligible=ELIGIBLE, k=300, options=opts,
                               seed=seed, batch_size=BS, progress=False)
    a, b = run(7), run(7)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert _trees_equal(a.mask, b.mask)
    strip = lambda tr: json.dumps({**tr, "seconds": 0, "rounds": [
        {**r, "seconds": 0} for r in tr["rounds"]]}, sort_keys=True)
    assert strip(a.trace) == strip(b.trace)
    json.dumps(a.trace)  # JSON-ready
    assert not np.array_equal(draw_pool(N, 20, 7), draw_pool(N, 20, 8))


def test_schedule_sizes(tiny):
    loss_fn, params, data = tiny
    opts = IRDOptions(pool_size=24, schedule=((16, 0.5), (10, 0.25), (10, 1000)))
    res = run_ird(loss_fn, params, data, eligible=ELIGIBLE, k=800, options=opts, seed=0,
                  batch_size=BS, progress=False)
    rows = res.trace["rounds"]
    p0 = res.trace["eligible_entries"]
    assert [r["samples_kept"] for r in rows] == [16, 10, 10]
    assert [r["params_kept"] for r in rows] == [math.ceil(p0 / 2), math.ceil(p0 / 4), 1000]
    assert res.trace["stop_reason"] == "schedule_end" and count_true(res.mask) == 800
    with pytest.raises(IRDError, match="grow"):
        resolve_schedule(((8, 0.5), (16, 0.25)), 24, p0)


def test_bad_options(tiny):
    loss_fn, params, data = tiny
    for field, value in [("sample_shrink", 0.0), ("param_shrink", 1.5), ("min_samples", 0),
                         ("sample_ranking", "loss"), ("final", "best"), ("schedule", ((1,),))]:
        with pytest.raises(IRDError) as e:
            IRDOptions(**{field: value})
        assert e.value.field == field
    with pytest.raises(IRDError, match="unknown"):
        IRDOptions.from_config({"pool": 3})
    with pytest.raises(IRDError, match="candidate_score"):
        run_ird(loss_fn, params, data, eligible=ELIGIBLE, k=10,
                options=IRDOptions(final="best_dev"), progress=False)
    with pytest.raises(IRDError) as e:
        IRDOptions(best_dev_steps=0)
    assert e.value.field == "best_dev_steps"
    with pytest.raises(IRDError, match="k must be"):
        run_ird(loss_fn, params, data, eligible=ELIGIBLE, k=0, progress=False)


def test_config_validation_names_the_field():
    from configs import default
    from fishjax.core.errors import ConfigError
    from fishjax.train.validation import validate_config

    config = default.get_config()
    config.method.name = "ird"
    validate_config(config)
    config.method.ird.sample_shrink = 0.0
    with pytest.raises(ConfigError, match=r"config\.method\.ird\.sample_shrink"):
        validate_config(config)
    config.method.ird.sample_shrink = 0.5
    config.method.ird.final = "best_dev"
    validate_config(config)
    config.method.ird.best_dev_steps = 0
    with pytest.raises(ConfigError, match=r"config\.method\.ird\.best_dev_steps"):
        validate_config(config)


def test_best_dev_picks_the_best_scored_candidate(tiny):
    """`final="best_dev"` keeps the candidate its score ranks first, scores each distinct
    candidate once, records every score, and otherwise changes nothing."""
    loss_fn, params, data = tiny
    opts = dict(pool_size=N, min_samples=8, max_rounds=5)
    last = run_ird(loss_fn, params, data, eligible=ELIGIBLE, k=300,
                   options=IRDOptions(**opts), progress=False)
    assert len(last.candidates) >= 3
    target = last.candidates[1]
    calls = []

    def score(mask):  # overlap with round 1's candidate: round 1 (and its repeats) win
        calls.append(mask)
        return float(sum(np.sum(np.asarray(m) & np.asarray(t)) for m, t in zip(
            _leaves(mask), _leaves(target.mask(params)), strict=True)))

    best = run_ird(loss_fn, params, data, eligible=ELIGIBLE, k=300,
                   options=IRDOptions(**opts, final="best_dev"), progress=False,
                   candidate_score=score)
    assert best.trace["final"]["round"] == 1 and "optimistic" in best.trace["final"]["note"]
    assert _trees_equal(best.mask, target.mask(params))
    np.testing.assert_array_equal(best.samples, target.samples)
    assert count_true(best.mask) == 300
    distinct = 1 + sum(not _trees_equal(a.mask_indices, b.mask_indices)
                       for a, b in zip(last.candidates, last.candidates[1:], strict=False))
    assert len(calls) == distinct
    rounds = best.trace["rounds"]
    assert rounds[1]["candidate_score"] == 300.0
    assert all(r["candidate_score"] <= 300.0 for r in rounds)
    # the search itself is unchanged
    assert [r["kept_ids"] for r in rounds] == [r["kept_ids"] for r in last.trace["rounds"]]


# -- the method in the trainer ------------------------------------------------------------


def test_ird_method_through_the_trainer(tiny_config, tmp_path):
    from fishjax.artifacts.mask_file import load_mask
    from fishjax.core.tree import count_params, leaf_paths
    from fishjax.models import load_model
    from fishjax.train.trainer import train_and_evaluate

    config = tiny_config
    config.method.name = "ird"
    config.method.keep_ratio = 0.05
    config.method.ird.min_samples = 16
    config.train.num_steps = 2
    workdir = str(tmp_path / "ird")
    res = train_and_evaluate(config, workdir)
    params = load_model(config.model.name, 2, key=jax.random.PRNGKey(0)).params
    mask, meta = load_mask(os.path.join(workdir, "mask.safetensors"), params)
    assert count_true(mask) == round(0.05 * count_params(params))  # head in the budget
    for path, m in zip(leaf_paths(mask), _leaves(mask), strict=True):
        if path.startswith("classifier/"):
            assert m.all()
    summary = res["method_summary"]
    assert meta["method"] == "ird" and summary["fisher_examples"] == 96  # pool: all 96
    with open(os.path.join(workdir, "ird_trace.json")) as f:
        trace = json.load(f)
    assert trace["pool"]["n"] == 96 and trace["rounds"][0]["samples_kept"] == 48
    assert summary["ird_samples_kept"] == len(trace["final"]["samples"]) == 16
    assert summary["fisher_backward_passes"] == trace["backward_passes"]

    again = train_and_evaluate(config, workdir)  # resume: the saved mask, no new search
    assert again["method_summary"]["mask_loaded_from"].endswith("mask.safetensors")


def test_ird_best_dev_through_the_trainer(tiny_config, tmp_path):
    """Each distinct candidate is trained briefly and scored on dev; the trace has them."""
    from fishjax.train.trainer import train_and_evaluate

    config = tiny_config
    config.method.name = "ird"
    config.method.keep_ratio = 0.05
    config.method.ird.min_samples = 16
    config.method.ird.final = "best_dev"
    config.method.ird.best_dev_steps = 4  # > one pass of 96 examples at batch 32: cycles
    config.train.num_steps = 1
    workdir = str(tmp_path / "ird_best")
    res = train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "ird_trace.json")) as f:
        trace = json.load(f)
    scores = [r["candidate_score"] for r in trace["rounds"]]
    assert all(0.0 <= s <= 1.0 for s in scores)  # dev accuracy of each trial
    picked = trace["final"]["round"]
    assert scores[picked] == max(scores) and picked == scores.index(max(scores))
    assert res["method_summary"]["ird_final"].startswith("best_dev")
    assert res["method_summary"]["ird_final_round"] == picked
