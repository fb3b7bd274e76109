"""The `sift` method and `sparse_storage` through the trainer, on the tiny random BERT."""

from __future__ import annotations

import math
import os

import jax
import numpy as np
import pytest

from conftest import initial_params
from fishjax import objectives
from fishjax.artifacts.delta_file import (
    DeltaError,
    apply_delta_file,
    export_merged,
    load_delta,
    load_model_with_delta,
)
from fishjax.artifacts.mask_file import load_mask
from fishjax.core.tree import count_params, leaf_paths, match_tree, merge_trees, path_str
from fishjax.data import get_task, iterate_batches
from fishjax.methods.sift.method import Sift
from fishjax.models import load_model
from fishjax.params import sparse as sp
from fishjax.selection.budgets import tensor_budget
from fishjax.selection.sift import select_sparse
from fishjax.train.checkpoints import Checkpoints
from fishjax.train.trainer import Trainer, method_context, train_and_evaluate

ELIGIBLE = r"attention/(self/(query|key|value)|output/dense)/(kernel|bias)$"
HEAD = r"^(pooler|classifier)/"


def _by_path(tree):
    return dict(zip(leaf_paths(tree), map(np.asarray, jax.tree_util.tree_leaves(tree)),
                    strict=True))


@pytest.fixture(scope="module")
def sift_run(tiny_model_dir, tmp_path_factory):
    """One finished sift run (rate 5%, 12 steps, export on)."""
    from conftest import make_tiny_config

    tmp = tmp_path_factory.mktemp("sift")
    config = make_tiny_config(tiny_model_dir, str(tmp / "cache"))
    config.method.name = "sift"
    config.method.sift.rate = 0.05
    config.train.num_epochs = 1.0
    config.train.export = True
    workdir = str(tmp / "run")
    return config, workdir, train_and_evaluate(config, workdir)


def test_sift_trains_the_per_tensor_top_k_and_the_head(sift_run):
    config, workdir, res = sift_run
    initial = initial_params(config)
    mask, meta = load_mask(os.path.join(workdir, "mask.safetensors"), initial)
    assert meta["method"] == "sift" and meta["grad_source"] == "first_batch"
    eligible = _by_path(match_tree(initial, ELIGIBLE))
    sizes = {p: x.size for p, x in _by_path(initial).items()}
    k = 0
    for p, m in _by_path(mask).items():
        want = tensor_budget(sizes[p], 0.05) if eligible[p] else 0
        assert want == (math.floor(0.05 * sizes[p]) + 1 if eligible[p] else 0)
        assert int(m.sum()) == want, p
        k += want
    head = sum(n for p, n in sizes.items() if p.startswith(("pooler/", "classifier/")))
    summary = res["method_summary"]
    assert summary["sparse_entries"] == k and summary["head_entries"] == head
    assert summary["trainable_entries"] == k + head

    # The delta file holds the best trainable tree; merged onto the initial params it
    # moves only selected entries and the head.
    merged = _by_path(apply_delta_file(res["artifacts"]["delta"], initial))
    masks, init = _by_path(mask), _by_path(initial)
    moved = 0
    for p, w in merged.items():
        changed = w != init[p]
        if p.startswith(("pooler/", "classifier/")):
            assert changed.any(), p
        else:
            assert not (changed & ~masks[p]).any(), f"{p}: unselected entries moved"
            moved += int(changed.sum())
    assert moved > 0.9 * k

    # Rerunning the finished workdir reuses the saved selection.
    again = train_and_evaluate(config, workdir)
    assert again["method_summary"]["mask_loaded_from"].endswith("mask.safetensors")
    assert again["final_eval"] == res["final_eval"]


def test_delta_file_applies_to_a_fresh_base_and_exports(sift_run, tmp_path):
    config, workdir, res = sift_run
    path = res["artifacts"]["delta"]
    loaded = load_delta(path)
    meta = loaded.metadata
    assert meta["base_model"] == config.model.name and meta["rate"] == 0.05
    assert meta["seed"] == config.seed and meta["selection"]["grad_source"] == "first_batch"
    assert meta["num_labels"] == 2 and meta["weight_decay"] == "off"
    assert set(meta["dense"]) == {p for p in leaf_paths(initial_params(config))
                                  if p.startswith(("pooler/", "classifier/"))}

    trainer = Trainer(config, str(tmp_path / "probe"))
    best = Checkpoints(workdir).restore_best(trainer.state.trainable)
    want = _by_path(trainer.setup.dense_params(best))
    model = load_model_with_delta(path)  # base from the metadata, another head key
    for p, x in _by_path(model.params).items():
        np.testing.assert_array_equal(x, want[p], err_msg=p)

    # The merged export reloads (as a plain model) with the same logits.
    batch = next(iterate_batches(trainer.data.evals["dev"], 16, seed=0, epoch=0, shuffle=False))
    out = export_merged(path, str(tmp_path / "merged"))
    exported = load_model(out, 2, key=jax.random.PRNGKey(3))
    assert exported.load_report.newly_initialized == ()
    np.testing.assert_allclose(np.asarray(trainer.apply_fn(exported.params, batch)),
                               np.asarray(trainer.apply_fn(trainer.setup.dense_params(best),
                                                           batch)), atol=1e-6)
    # A different base model is rejected with a clear error.
    other = jax.tree_util.tree_map(np.asarray, exported.params)
    other["embeddings"]["word_embeddings"]["embedding"] = \
        other["embeddings"]["word_embeddings"]["embedding"] * 1.01
    with pytest.raises(DeltaError, match="different base"):
        apply_delta_file(path, other)


def test_sift_step_state_recompile_and_no_lag(tiny_config, tmp_path):
    tiny_config.method.name = "sift"
    tiny_config.method.sift.rate = 0.05
    tiny_config.train.warmup_steps = 0  # the first step already has the peak rate
    trainer = Trainer(tiny_config, str(tmp_path / "run"))
    setup = trainer.setup
    k = sp.count(setup.frozen["indices"])
    head = count_params(setup.trainable["head"])

    # Optimizer state: Adam's two moments for the k values and the head, plus counters.
    opt_leaves = jax.tree_util.tree_leaves(trainer.state.opt_state)
    assert count_params(trainer.state.opt_state) <= 2 * (k + head) + 8
    assert sum(np.size(x) for x in opt_leaves if np.ndim(x) == 0) <= 8
    # Nothing dense of the frozen params lives in the state between steps.
    lengths = {p: x.size for p, x in _by_path(setup.frozen["indices"]).items()}
    for tree in (trainer.state.trainable, trainer.state.opt_state):
        for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
            name = path_str(path)
            if np.ndim(x) == 0:
                continue
            if "delta/" in name:
                assert np.ndim(x) == 1 and x.size == lengths[name.split("delta/", 1)[1]], name
            else:
                assert "head/" in name, name

    batches = [trainer.place(b) for b in iterate_batches(
        trainer.data.train, tiny_config.train.batch_size, seed=0, epoch=0, shuffle=True)]
    batch = batches[0]
    # SIFT's selection batch is the trainer's first training batch (then trained on).
    first = next(trainer._method_batches(tiny_config.train.batch_size, seed=tiny_config.seed))
    np.testing.assert_array_equal(first["input_ids"], np.asarray(batch["input_ids"]))
    eval_batch = next(iterate_batches(trainer.data.evals["dev"], 16, seed=0, epoch=0,
                                      shuffle=False))
    before = np.asarray(trainer.apply_fn(setup.dense_params(trainer.state.trainable),
                                         eval_batch))
    trainer.step(batch)

    # No lag: the first step's update is in the values (Adam's first step is ~lr per entry)
    # and the next forward pass reads them.
    delta = np.concatenate([np.asarray(x) for x in
                            jax.tree_util.tree_leaves(trainer.state.trainable["delta"])])
    lr = tiny_config.train.learning_rate
    assert np.mean(np.abs(delta) > 0.5 * lr) > 0.9 and np.all(np.abs(delta) <= 1.01 * lr)
    unmerged = np.asarray(trainer.apply_fn(setup.dense_params(trainer.state.trainable),
                                           eval_batch))
    assert np.max(np.abs(unmerged - before)) > 1e-4
    # The merged params (host scatter, head replaced) give the same logits.
    merged = merge_trees(
        sp.merge(setup.frozen["base"], sp.delta_of(jax.device_get(trainer.state.trainable),
                                                   setup.frozen)),
        jax.device_get(trainer.state.trainable["head"]))
    np.testing.assert_allclose(np.asarray(trainer.apply_fn(merged, eval_batch)), unmerged,
                               atol=1e-6)

    # The second step (same bucket) reuses the first compilation.
    same_shape = [b for b in batches[1:] if b["input_ids"].shape == batch["input_ids"].shape]
    trainer.step(same_shape[0])
    assert trainer.train_step._cache_size() == 1


def _ctx(config, tiny_model_dir, batches):
    model = load_model(tiny_model_dir, 2, key=jax.random.PRNGKey(0))
    return method_context(
        config, params=model.params,
        loss_fn=objectives.make_loss_fn(model.module, objectives.SequenceClassification()),
        train_batches=lambda batch_size, *, seed=None, epoch=0: iter(batches),
        task=get_task(config.task), model_config=model.config, rng=jax.random.PRNGKey(1))


def _batches(n, vocab=100, b=8, s=16):
    rng = np.random.default_rng(0)
    return [{"input_ids": rng.integers(5, vocab, (b, s)).astype(np.int32),
             "attention_mask": np.ones((b, s), np.int32),
             "token_type_ids": np.zeros((b, s), np.int32),
             "labels": rng.integers(0, 2, b).astype(np.int32),
             "weights": np.ones(b, np.float32)} for _ in range(n)]


def test_selection_is_deterministic_and_key_bias_ties_are_stable(tiny_config, tiny_model_dir):
    tiny_config.method.name = "sift"
    tiny_config.method.sift.rate = 0.1
    ctx = _ctx(tiny_config, tiny_model_dir, _batches(3))
    eligible = match_tree(ctx.params, ELIGIBLE)
    scores, info = Sift().scores(ctx, eligible)
    again, _ = Sift().scores(ctx, eligible)
    assert info["selection_batches"] == 1
    a = select_sparse(scores, eligible, 0.1)
    b = select_sparse(again, eligible, 0.1)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    # The key bias gets no gradient beyond rounding (softmax ignores a per-query shift).
    s = _by_path(scores)
    for layer in ("layer_0", "layer_1"):
        key_bias = s[f"encoder/{layer}/attention/self/key/bias"]
        query_bias = s[f"encoder/{layer}/attention/self/query/bias"]
        assert key_bias.max() < 1e-4 * query_bias.max()
    # Exact ties (all-zero scores) go to the first entries in row-major order.
    zeros = jax.tree_util.tree_map(np.zeros_like, scores)
    for p, m in _by_path(select_sparse(zeros, eligible, 0.1)).items():
        k = int(m.sum())
        np.testing.assert_array_equal(np.flatnonzero(m), np.arange(k), err_msg=p)

    # Global budget: the same total, in one ranking.
    g = select_sparse(scores, eligible, 0.1, "global")
    assert sum(int(m.sum()) for m in jax.tree_util.tree_leaves(g)) == \
        sum(int(m.sum()) for m in jax.tree_util.tree_leaves(a))
    # first_n_batches accumulates the gradient of n batches.
    ctx.method.sift.grad_source = "first_n_batches"
    ctx.method.sift.num_batches = 2
    _, info = Sift().scores(ctx, eligible)
    assert info["selection_batches"] == 2


def test_fish_with_sparse_storage_trains_only_the_mask(tiny_config, tmp_path):
    tiny_config.method.name = "fish"
    tiny_config.method.keep_ratio = 0.05
    tiny_config.method.sparse_storage = True
    tiny_config.train.num_epochs = 1.0
    workdir = str(tmp_path / "fish")
    res = train_and_evaluate(tiny_config, workdir)
    initial = initial_params(tiny_config)
    mask, _ = load_mask(os.path.join(workdir, "mask.safetensors"), initial)
    summary = res["method_summary"]
    assert summary["sparse_storage"] and summary["trainable_entries"] == round(
        0.05 * count_params(initial))
    ckpt = Checkpoints(workdir)
    state = ckpt.restore_latest(None)
    ckpt.close()
    assert set(state["trainable"]) == {"delta", "head"}
    assert count_params(state["trainable"]) == summary["trainable_entries"]
    merged = _by_path(apply_delta_file(res["artifacts"]["delta"], initial))
    masks, init = _by_path(mask), _by_path(initial)
    moved = 0
    for p, w in merged.items():
        changed = w != init[p]
        assert not (changed & ~masks[p]).any(), f"{p}: unselected entries moved"
        moved += int(changed.sum())
    assert moved > 0.5 * summary["trainable_entries"]
