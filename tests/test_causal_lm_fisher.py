"""The Fisher passes on a tiny random decoder (causal-LM objective): per-example sums equal a
loop over single examples, for the empirical Fisher (gold target tokens) and the expected
one (target tokens drawn from the model), in both engines; the draws depend only on the
seed, the draw's index and the row's tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fishjax.core.tree import flatten_paths, merge_trees, split_tree
from fishjax.data import load_split, make_batch, tokenize_split
from fishjax.models import load_model, load_tokenizer
from fishjax.objectives import CausalLanguageModeling, make_apply_fn, make_loss_fn
from fishjax.objectives.causal_lm import IGNORE, SAMPLE_FIELD, sampled_labels
from fishjax.selection.fisher import fisher_scores

# Everything but the (tied) embedding table, which the output layer also reads (`attend`):
# the capture engine covers each leaf's own layer call only.
ELIGIBLE = r"^model/(layers_\d+|norm)/"


@pytest.fixture(scope="module")
def decoder(tiny_decoder_dir):
    model = load_model(tiny_decoder_dir, None, key=jax.random.PRNGKey(0))
    data = tokenize_split(load_split("chat_quickstart", "train", max_samples=6),
                          load_tokenizer(tiny_decoder_dir), max_length=96, buckets=(96,),
                          prompt_format="chat")
    batches = [make_batch(data, np.arange(0, 4), 96, 4),
               make_batch(data, np.arange(4, 6), 96, 4)]  # a partial batch: 2 padding rows
    return model, batches


@pytest.fixture(scope="module")
def loops(decoder) -> dict[str, dict]:
    """sum over the real rows of (gradient of the row's own loss)^2, one row at a time:
    with the gold targets, and with each of two draws."""
    model, batches = decoder
    loss_fn = make_loss_fn(model.module, CausalLanguageModeling(fisher_samples=2))
    on, off = split_tree(model.params, ELIGIBLE)
    grad = jax.jit(jax.grad(lambda o, b: loss_fn(merge_trees(o, off), b)))

    def loop(fields):
        total = None
        for batch in batches:
            for i in np.flatnonzero(batch["weights"]):
                one = {**{k: v[i:i + 1] for k, v in batch.items()}, **fields}
                g = jax.tree_util.tree_map(np.square, jax.device_get(grad(on, one)))
                total = g if total is None else jax.tree_util.tree_map(np.add, total, g)
        return flatten_paths(total)

    return {"gold": loop({}), **{f"draw{v}": loop({SAMPLE_FIELD: jnp.int32(v)})
                                 for v in range(2)}}


def _assert_close(got, want, tol: float) -> float:
    """The largest error over the leaves, relative to each leaf's largest entry."""
    got = {p: v for p, v in flatten_paths(got).items() if p in want}
    assert sorted(got) == sorted(want)
    worst = 0.0
    for path, w in want.items():
        scale = float(np.max(np.abs(w)))
        assert scale > 0, path
        err = float(np.max(np.abs(np.asarray(got[path]) - w))) / scale
        assert err <= tol, (path, err)
        worst = max(worst, err)
    return worst


@pytest.mark.parametrize("engine", ["per_example", "capture"])
@pytest.mark.parametrize("mode", ["empirical", "expected"])
def test_the_decoder_fisher_equals_a_loop_over_examples(decoder, loops, mode, engine):
    model, batches = decoder
    objective = CausalLanguageModeling(fisher_samples=2)
    loss_fn = make_loss_fn(model.module, objective)
    res = fisher_scores(loss_fn, model.params, batches, eligible=ELIGIBLE, mode=mode,
                        objective=objective, chunk_size=2, progress=False, engine=engine)
    assert res.num_examples == 6
    want = loops["gold"]
    if mode == "expected":  # the mean over the draws of each draw's squared gradient
        want = {p: (loops["draw0"][p] + loops["draw1"][p]) / 2 for p in want}
        assert any(not np.allclose(want[p], loops["gold"][p]) for p in want)  # drawn
    # float32 sums over six examples: 1e-6 of each leaf's largest entry for the per-example
    # engine; capture forms the gradients with other (batched) matmuls, which round
    # differently: 1e-5.
    _assert_close(res.scores, want, 1e-6 if engine == "per_example" else 1e-5)


def test_draws_depend_on_the_row_not_its_batch_position(decoder):
    model, batches = decoder
    batch = {k: jnp.asarray(v) for k, v in batches[0].items()}
    logits = make_apply_fn(model.module, CausalLanguageModeling())(model.params, batch)
    labels = np.asarray(sampled_labels(logits, {**batch, SAMPLE_FIELD: jnp.int32(0)}, 0))
    gold = np.asarray(batch["labels"])
    assert ((labels == IGNORE) == (gold == IGNORE)).all()  # drawn at target positions only
    assert (labels[gold != IGNORE] != gold[gold != IGNORE]).any()

    flipped = {k: v[::-1] for k, v in batch.items()}
    again = np.asarray(sampled_labels(logits[::-1], {**flipped, SAMPLE_FIELD: jnp.int32(0)},
                                      0))
    np.testing.assert_array_equal(again[::-1], labels)  # same row, same draw
    other = np.asarray(sampled_labels(logits, {**batch, SAMPLE_FIELD: jnp.int32(1)}, 0))
    assert (other != labels).any()  # another draw
    seeded = np.asarray(sampled_labels(logits, {**batch, SAMPLE_FIELD: jnp.int32(0)}, 1))
    assert (seeded != labels).any()  # another seed


def test_token_sum_fisher_weighs_each_example_by_its_target_count_squared(decoder):
    """`token_reduction="sum"`: each example's loss is its answer's negative log-likelihood
    (the mean times its target-token count T), so its Fisher term is T^2 times the mean's;
    summed over examples, the token-sum Fisher is sum_i T_i^2 F_i."""
    model, batches = decoder
    mean = CausalLanguageModeling()
    total = CausalLanguageModeling(token_reduction="sum")
    apply = make_apply_fn(model.module, mean)
    batch = batches[0]
    outputs = apply(model.params, batch)
    counts = np.sum(np.asarray(batch["labels"]) != IGNORE, axis=-1)
    np.testing.assert_allclose(total.per_example_loss(outputs, batch),
                               counts * np.asarray(mean.per_example_loss(outputs, batch)),
                               rtol=1e-5)
    one_row = [{k: v[:1] for k, v in batch.items()}]
    passes = {name: flatten_paths(fisher_scores(make_loss_fn(model.module, obj), model.params,
                                                one_row, eligible=ELIGIBLE,
                                                progress=False).scores)
              for name, obj in (("mean", mean), ("sum", total))}
    for path, x in passes["mean"].items():
        np.testing.assert_allclose(passes["sum"][path], counts[0] ** 2 * x, rtol=2e-4,
                                   atol=1e-12)
    with pytest.raises(ValueError, match="token_reduction"):
        CausalLanguageModeling(token_reduction="max")


def test_a_fish_run_with_token_sum_fisher_records_it_and_refuses_classifiers(
        tiny_decoder_dir, tiny_model_dir, tmp_path):
    """fisher.token_reduction="sum" reaches the Fisher pass of a decoder run (its mask
    differs from the mean's and its file records the setting, so a resumed run with the
    other setting does not take it) and is refused on a classification task."""
    from benchmarks.common.tiny_model import make_tiny_config, make_tiny_decoder_config
    from fishjax.artifacts.mask_file import load_mask
    from fishjax.core.errors import ConfigError
    from fishjax.train.trainer import Trainer
    from fishjax.train.validation import validate_config

    masks = {}
    for reduction in ("mean", "sum"):
        config = make_tiny_decoder_config(tiny_decoder_dir, str(tmp_path / "cache"))
        config.method.name = "fish"
        config.method.keep_ratio = 0.01
        config.method.fisher.num_samples = 8
        config.method.fisher.token_reduction = reduction
        trainer = Trainer(config, str(tmp_path / reduction))
        masks[reduction], meta = load_mask(str(tmp_path / reduction / "mask.safetensors"),
                                           trainer.model.params)
        assert meta.get("fisher_token_reduction") == (None if reduction == "mean" else "sum")
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(masks["mean"]), jax.tree_util.tree_leaves(masks["sum"]),
        strict=True))
    config = make_tiny_config(tiny_model_dir, str(tmp_path / "cache"))
    config.method.fisher.token_reduction = "sum"
    with pytest.raises(ConfigError, match="causal language-model tasks only"):
        validate_config(config)
