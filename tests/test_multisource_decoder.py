"""Multi-source selection with a decoder and instruction tasks as sources: the answer
log-odds output, corrupted (target-shuffled) rows, the task pool, and a run end to end on
the tiny random decoder (configs/select_sources.py:ni_quick on generated BIG-bench tasks)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import need_smollm2_and_natural_instructions, write_bigbench_task
from fishjax.core.errors import ConfigError, DataError
from fishjax.data.instructions import Example, Mixture, to_raw_split
from fishjax.data.row_split import apply_row_split, make_row_split
from fishjax.data.tasks import get_task
from fishjax.objectives import CausalLanguageModeling, answer_log_odds

TASKS = ("target", "s1", "s2", "bad")


def test_answer_log_odds_gives_the_log_likelihood_back_through_softplus():
    loglik = jnp.asarray([-30.0, -5.0, -0.7, -0.01, -1e-5])
    f = answer_log_odds(loglik)
    np.testing.assert_allclose(-jax.nn.softplus(-f), loglik, rtol=1e-4)
    # A probability above 1/2 is positive log-odds; the cap keeps f finite at l = 0.
    assert float(answer_log_odds(jnp.log(0.75))) == pytest.approx(np.log(3.0), rel=1e-5)
    assert np.isfinite(float(answer_log_odds(jnp.asarray(0.0))))


def test_the_causal_lm_feature_output_is_the_log_odds_of_the_mean_log_likelihood():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
    labels = jnp.asarray([[-100, 3, 1, -100, -100], [-100, -100, 6, 2, 0]])
    objective = CausalLanguageModeling()
    f = objective.feature_output(logits, {"labels": labels})
    loss = objective.per_example_loss(logits, {"labels": labels})
    np.testing.assert_allclose(jax.nn.softplus(-f), loss, rtol=1e-5)


def _generation_rows(n: int):
    return to_raw_split([Example("x", f"prompt {i}", (f"answer {i}",), i) for i in range(n)],
                        "instruct", "train")


def test_flipped_rows_of_a_generation_task_trade_targets_round_by_one():
    raw = _generation_rows(8)
    split = make_row_split([0, 2, 3, 5, 6], flip=[2, 5, 6], validation=[7])
    train, validation = apply_row_split(raw, split, get_task("instruct"))
    assert train.text_a == [f"prompt {i}" for i in (0, 2, 3, 5, 6)]
    assert train.text_b == ["answer 0", "answer 5", "answer 3", "answer 6", "answer 2"]
    assert validation.text_b == ["answer 7"]
    with pytest.raises(DataError, match="2 or more"):
        apply_row_split(raw, make_row_split([0, 1], flip=[1]), get_task("instruct"))


def test_task_pool_holds_out_target_rows_and_corrupts_whole_tasks():
    from fishjax.select_sources import make_task_pool

    blocks = {"target": (0, 30), "s1": (30, 50), "bad": (50, 60)}
    pool = make_task_pool(blocks, "target", 10, 8, ["bad"], seed=0)
    assert pool.names == ["bad", "s1", "target"]
    assert len(pool.target) == 10 and all(r < 30 for r in pool.target)
    assert all(len(rows) == 8 for rows in pool.sources.values())
    assert not set(pool.target) & set(pool.sources["target"])
    assert all(30 <= r < 50 for r in pool.sources["s1"])
    assert pool.noisy == ["bad"] and pool.flipped() == set(pool.sources["bad"])
    assert make_task_pool(blocks, "target", 10, 8, ["bad"], seed=0) == pool
    assert make_task_pool(blocks, "target", 10, None, [], 0).sources["s1"] == list(range(30, 50))
    with pytest.raises(ConfigError, match="'bad' has 10 training rows"):
        make_task_pool(blocks, "target", 10, 12, [], seed=0)


def _quick_config(model_dir: str, data_dir: str, cache: str):
    from configs.select_sources import get_config

    config = get_config("ni_quick")
    config.model.name = model_dir
    config.data.cache_dir = cache
    config.data.max_length = 96
    config.data.buckets = (64, 96)
    config.data.instruct.dir = data_dir
    config.data.instruct.tasks = TASKS
    config.data.instruct.instruction = "definition"
    config.sources.target_task = "target"
    config.sources.corrupted = ("bad",)
    config.instruct_eval.tasks = ("target",)
    config.method.peft.rank = 2
    config.method.fisher.batch_size = 4
    config.train.learning_rate = 1e-3
    return config


@pytest.fixture(scope="module")
def decoder_selection(tiny_decoder_dir, tmp_path_factory):
    """A finished selection on the tiny decoder: 4 instruction tasks, one corrupted."""
    from fishjax.select_sources import select_sources

    tmp = tmp_path_factory.mktemp("decoder_selection")
    for name in TASKS:
        write_bigbench_task(tmp / "ni", name, n=24, prefix=f"Definition: Task {name}.")
    config = _quick_config(tiny_decoder_dir, str(tmp / "ni"), str(tmp / "cache"))
    workdir = str(tmp / "run")
    return config, workdir, select_sources(config, workdir)


def test_select_sources_runs_on_a_decoder_with_instruction_tasks(decoder_selection):
    from fishjax.select_sources import RULES, read_selection_file, target_metric

    config, workdir, out = decoder_selection
    pool = read_selection_file(os.path.join(workdir, "pool.json"))
    assert sorted(pool["sources"]) == sorted(TASKS) and pool["noisy"] == ["bad"]
    assert len(pool["target"]) == 8
    est = read_selection_file(os.path.join(workdir, "estimates.json"))
    assert np.all(np.isfinite(est["target_loss"])) and len(est["subsets"]) == 64
    ranking = read_selection_file(os.path.join(workdir, "ranking.json"))
    assert set(ranking) == set(RULES)
    assert all(0.0 <= e["noisy_auroc"] <= 1.0 for e in ranking.values())
    # The runs before the final one skip generation; the final one scores the target's
    # test rows only.
    assert not os.path.exists(os.path.join(workdir, "meta", "instruct_eval.json"))
    # sources.checkpoint="last" (the ni designs): the runs evaluate once, at their end, so
    # phi* is the last step's adapter, not one picked on the target rows
    from fishjax.select_sources import LAST_ONLY
    meta_config = json.load(open(os.path.join(workdir, "meta", "config.json")))
    assert config.sources.checkpoint == "last"
    assert meta_config["train"]["eval_every_steps"] == LAST_ONLY
    final = json.load(open(os.path.join(out["final"]["workdir"], "instruct_eval.json")))
    assert set(final) == {"test"} and set(final["test"]["tasks"]) == {"target"}
    assert len(final["test"]["predictions"]) == 4
    # The target rows are the runs' only eval split: their loss is the plain "loss".
    assert target_metric(out["final"]["final_eval"], "loss") == out["final"]["final_eval"]["loss"]


def test_features_of_corrupted_rows_use_their_shuffled_targets(decoder_selection):
    """A corrupted task's rows are featurised with the targets they are trained with: f
    of such a row equals the answer log-odds of the row's prompt with the next corrupted
    row's target, not its own."""
    from fishjax.data import index_batches
    from fishjax.select_sources import SourceSelection

    config, workdir, _ = decoder_selection
    sel = SourceSelection(config, workdir)
    pool = sel.pool()
    src, _, _, _ = sel.features()
    parts = sel.model_parts()
    flipped = np.asarray(sorted(pool.flipped()))
    output = jax.jit(parts.output)
    got = {}
    for batch in index_batches(parts.train, flipped, 4):
        ids = batch.pop("example_ids")
        values = np.asarray(output(parts.params, batch))
        got.update({int(i): float(v) for i, v in zip(ids, values, strict=True) if i >= 0})
    np.testing.assert_allclose(src.rows(flipped).f, [got[int(i)] for i in flipped],
                               atol=1e-4)
    # parts.train is tokenized with the rotated targets: a corrupted row's labels are
    # another row's answer.
    mixture = Mixture.from_config(config.data.instruct)
    raw = mixture.raw_splits()[0]["train"]
    train, _ = apply_row_split(raw, make_row_split(range(len(raw)), flipped),
                               get_task("instruct"))
    moved = [i for i in flipped if train.text_b[i] != raw.text_b[i]]
    assert len(moved) == len(flipped)


def test_task_sources_are_checked_before_anything_runs(tiny_decoder_dir, tmp_path):
    from fishjax.select_sources import SourceSelection

    for name in TASKS:
        write_bigbench_task(tmp_path / "ni", name, n=24)
    config = _quick_config(tiny_decoder_dir, str(tmp_path / "ni"), str(tmp_path / "cache"))
    config.sources.corrupted = ("target",)
    with pytest.raises(ConfigError, match="other than the target task"):
        SourceSelection(config, str(tmp_path / "a"))
    config.sources.corrupted = ("bad",)
    config.sources.target_task = "nope"
    with pytest.raises(ConfigError, match="target_task='nope' must be one of"):
        SourceSelection(config, str(tmp_path / "b"))
    config.sources.target_task = "target"
    config.sources.checkpoint = "best_on_test"
    with pytest.raises(ConfigError, match="checkpoint must be one of"):
        SourceSelection(config, str(tmp_path / "b2"))
    config.sources.checkpoint = "last"
    config.data.instruct.validation_per_task = 2
    with pytest.raises(ConfigError, match="validation_per_task=0"):
        SourceSelection(config, str(tmp_path / "c"))
    config.data.instruct.validation_per_task = 0
    config.instruct_eval.tasks = ("elsewhere",)
    with pytest.raises(ConfigError, match="instruct_eval.tasks"):
        SourceSelection(config, str(tmp_path / "d"))
    assert not os.path.exists(str(tmp_path / "d" / "settings.json"))


def test_benchmark_steps_on_the_decoder_selection(decoder_selection):
    """benchmarks/multisource/multisource_eval.py's steps with instruction tasks: true
    fine-tunes scored by the target rows' loss, downstream arms by the target's test
    ROUGE-L (the target-only arm is the target task's own rows), the table's columns."""
    from benchmarks.multisource import multisource_eval as me
    from fishjax.select_sources import SourceSelection

    config, workdir, _ = decoder_selection
    sel = SourceSelection(config, workdir)
    check = me.first_order_check(sel, scales=(0.05,))
    assert np.isfinite(check[0]["first_order_error"])
    true = me.true_subsets(sel, 2)
    assert true["n"] == 2 and "accuracy_spearman" not in true
    assert all(r["true_loss"] > 0 and np.isfinite(r["estimated_loss"]) for r in true["runs"])
    ranking = sel.estimate()["ranking"]
    down = me.downstream(sel, ranking, seeds=(0,))
    assert down["clean_target_task"][0]["sources"] == ["target"]
    assert len(down["all"][0]["sources"]) == len(TASKS)
    for runs in down.values():
        assert 0.0 <= runs[0]["target_rouge"] <= 100.0 and runs[0]["target_loss"] > 0
    table = me.report_table({"design": "ni_quick", "downstream": down, "true_subsets": true,
                             "ranking": ranking, "first_order": check})
    assert "target test ROUGE-L" in table and "| target task only (1) |" in table
    assert "Spearman (loss)" in table and "AUROC of ensemble" in table


@pytest.mark.slow
@pytest.mark.integration
def test_ni_quick_selects_sources_with_smollm2(tmp_path):
    """configs/select_sources.py:ni_quick on SmolLM2-135M and Natural Instructions: every
    step runs, the meta-initialisation lowers the target rows' loss, the estimates are
    finite and the final fine-tune is scored on the target's test rows."""
    from configs.select_sources import NI_CORRUPTED, NI_TARGET, get_config
    from fishjax.select_sources import read_selection_file, select_sources

    need_smollm2_and_natural_instructions()
    config = get_config("ni_quick")
    config.data.cache_dir = str(tmp_path / "cache")
    config.train.eval_before_training = True
    workdir = str(tmp_path / "run")
    out = select_sources(config, workdir)
    meta = json.load(open(os.path.join(workdir, "meta", "results.json")))
    assert meta["final_eval"]["loss"] < meta["initial_eval"]["loss"]
    pool = read_selection_file(os.path.join(workdir, "pool.json"))
    assert pool["noisy"] == [NI_CORRUPTED[0]] and NI_TARGET in pool["sources"]
    est = read_selection_file(os.path.join(workdir, "estimates.json"))
    assert np.all(np.isfinite(est["target_loss"]))
    final = out["final"]["instruct_eval"]["test"]
    assert 0.0 <= final["rougeL"] <= 100.0 and final["answer_loglik"] < 0
