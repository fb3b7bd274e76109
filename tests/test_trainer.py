"""The training loop on a tiny random BERT: outputs, learning, resume, compilation, errors."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from fishjax.core.errors import ConfigError
from fishjax.data import iterate_batches
from fishjax.train.checkpoints import Checkpoints
from fishjax.train.trainer import Trainer, train_and_evaluate


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _latest_state(workdir, like):
    ckpt = Checkpoints(workdir)
    try:
        return ckpt.restore_latest(like)
    finally:
        ckpt.close()


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, tmp_path_factory):
    """One full tiny run with eval before training and export; (config, workdir, results)."""
    from conftest import make_tiny_config

    tmp = tmp_path_factory.mktemp("trained")
    config = make_tiny_config(tiny_model_dir, str(tmp / "cache"))
    config.train.export = True
    config.train.eval_before_training = True
    workdir = str(tmp / "run")
    return config, workdir, train_and_evaluate(config, workdir)


def test_train_and_evaluate_writes_outputs_and_learns(trained_run):
    config, workdir, res = trained_run
    assert res["finished"] and res["step"] == res["total_steps"] == 24  # 96/8 x 2 epochs
    for name in ("config.json", "run_info.json", "results.json", "metrics.jsonl"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert any(f.startswith("events.out.tfevents")
               for f in os.listdir(os.path.join(workdir, "tensorboard")))
    info = json.load(open(os.path.join(workdir, "run_info.json")))
    assert info["seed"] == config.seed and "jax" in info["versions"]
    assert info["method_summary"]["trainable_entries"] == info["total_params"]

    rows = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train = [r["train/loss"] for r in rows if "train/loss" in r]
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 12, 24]  # before training, then once per epoch
    assert train[-1] < train[0]  # the tiny model fits the sample a little
    assert res["initial_eval"]["loss"] > res["final_eval"]["loss"]
    assert res["best"]["step"] in (12, 24)
    assert sorted(os.listdir(res["export_dir"]))[:2] == ["config.json", "model.safetensors"]


def test_export_holds_the_best_params_and_reloads(trained_run):
    """The exported folder = the best checkpoint; fishjax and PyTorch read the same logits."""
    from fishjax.models import load_model

    config, workdir, res = trained_run
    trainer = Trainer(config, workdir + "-probe")
    best = Checkpoints(workdir).restore_best(trainer.state.trainable)
    batch = next(iterate_batches(trainer.data.evals["dev"], 16, seed=0, epoch=0, shuffle=False))
    want = np.asarray(trainer.apply_fn(trainer.setup.dense_params(best), batch))

    exported = load_model(res["export_dir"], 2, key=jax.random.PRNGKey(1))
    assert exported.load_report.newly_initialized == ()
    got = np.asarray(trainer.apply_fn(exported.params, batch))
    np.testing.assert_allclose(got, want, atol=1e-5)

    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(res["export_dir"]).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                    attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long),
                    token_type_ids=torch.tensor(batch["token_type_ids"], dtype=torch.long))
    np.testing.assert_allclose(out.logits.numpy(), want, atol=1e-4)


@pytest.mark.parametrize("prng", [pytest.param("threefry", marks=pytest.mark.slow), "rbg"])
def test_same_seed_same_metrics(tiny_config, tmp_path, prng):
    tiny_config.train.num_steps = 6  # dropout on every step; half an epoch is enough
    tiny_config.train.dropout_prng = prng
    a = train_and_evaluate(tiny_config, str(tmp_path / "a"))
    b = train_and_evaluate(tiny_config, str(tmp_path / "b"))
    assert a["final_eval"] == b["final_eval"]
    tiny_config.seed = 1
    c = train_and_evaluate(tiny_config, str(tmp_path / "c"))
    assert c["final_eval"]["loss"] != a["final_eval"]["loss"]
    if prng != "threefry":  # the option is in effect: other dropout masks, another run
        tiny_config.seed, tiny_config.train.dropout_prng = 0, "threefry"
        d = train_and_evaluate(tiny_config, str(tmp_path / "d"))
        assert d["final_eval"]["loss"] != a["final_eval"]["loss"]


@pytest.mark.parametrize("prng", ["threefry",
                                  pytest.param("unsafe_rbg", marks=pytest.mark.slow)])
def test_resume_matches_uninterrupted_run(tiny_config, tmp_path, prng):
    tiny_config.train.dropout_prng = prng
    full_dir, resumed_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
    tiny_config.train.checkpoint_every_steps = 5
    full = train_and_evaluate(tiny_config, full_dir)

    tiny_config.train.stop_after_steps = 7  # mid-epoch, between checkpoints' natural steps
    part = train_and_evaluate(tiny_config, resumed_dir)
    assert not part["finished"] and part["step"] == 7
    tiny_config.train.stop_after_steps = None
    resumed = train_and_evaluate(tiny_config, resumed_dir)
    assert resumed["finished"] and resumed["step"] == full["step"]

    assert resumed["final_eval"] == full["final_eval"]
    # The resumed run's cost covers both runs; its own share is the second run's only.
    assert full["train_s_total"] == pytest.approx(full["train_s"])
    assert part["train_s_total"] == pytest.approx(part["train_s"])
    assert resumed["train_s_total"] > resumed["train_s"] + 0.5 * part["train_s"]
    a = _latest_state(full_dir, None)
    b = _latest_state(resumed_dir, None)
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b) > 10
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_no_recompilation_after_first_step(tiny_config, tmp_path):
    tiny_config.data.buckets = (32,)  # one shape: exactly one compilation of each step
    trainer = Trainer(tiny_config, str(tmp_path))
    for epoch in range(2):
        for batch in iterate_batches(trainer.data.train, 8, seed=0, epoch=epoch, shuffle=True):
            trainer.step(batch)
            assert trainer.train_step._cache_size() == 1
    trainer.evaluate()
    trainer.evaluate()
    assert trainer.eval_step._cache_size() == 1
    assert trainer.train_step._cache_size() == 1


def test_buckets_bound_compilations(tiny_config, tmp_path):
    tiny_config.data.max_length = 32
    tiny_config.data.buckets = (8, 16, 32)
    trainer = Trainer(tiny_config, str(tmp_path))
    seen = set()
    for batch in iterate_batches(trainer.data.train, 8, seed=0, epoch=0, shuffle=True):
        seen.add(batch["input_ids"].shape)
        trainer.step(batch)
    assert seen <= {(8, 8), (8, 16), (8, 32)}
    assert trainer.train_step._cache_size() == len(seen)


@pytest.mark.parametrize("field,value,match", [
    ("task", "glue_nope", "task"),
    ("model.dtype", "float16", "dtype"),
    ("data.buckets", (64, 32), "buckets"),
    ("data.buckets", (16, 24), "max_length"),
    ("train.learning_rate", 0.0, "learning_rate"),
    ("method.name", "nope", "method"),
    ("train.dropout_prng", "philox", "dropout_prng"),
    ("data.dir", "/nonexistent/glue/RTE", "data.dir"),
])
def test_bad_config_fails_before_training(tiny_config, tmp_path, field, value, match):
    *parents, leaf = field.split(".")
    node = tiny_config
    for p in parents:
        node = node[p]
    node[leaf] = value
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=match):
        train_and_evaluate(tiny_config, str(workdir))
    assert not workdir.exists()  # nothing written before the config was found bad


def test_unknown_model_name_is_a_clear_error(tiny_config, tmp_path):
    from fishjax.models import ModelError

    tiny_config.model.name = str(tmp_path / "no-such-model")
    with pytest.raises(ModelError, match="no-such-model"):
        train_and_evaluate(tiny_config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_data_files_fail_before_training(tiny_config, tmp_path):
    from fishjax.data import DataError

    data = tmp_path / "RTE"
    data.mkdir()
    (data / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n"
                                    "0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    (data / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    tiny_config.task = "rte"
    tiny_config.data.dir = str(data)
    with pytest.raises(DataError, match="maybe"):
        train_and_evaluate(tiny_config, str(tmp_path / "run"))
    os.remove(data / "dev.tsv")
    (data / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match="dev.tsv"):
        train_and_evaluate(tiny_config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unwritable_workdir(tiny_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="not writable"):
        train_and_evaluate(tiny_config, str(blocker / "run"))


def test_methods_see_the_trainers_epochs(tiny_config, tmp_path):
    """`MethodContext.train_batches(bs, seed=, epoch=)` and the short-run stream are the
    trainer's own epochs (no epochs faked by shifting the seed)."""
    import itertools

    from fishjax.methods.common import training_stream
    from fishjax.train.trainer import method_context

    trainer = Trainer(tiny_config, str(tmp_path))
    ctx = method_context(tiny_config, params=trainer.model.params, loss_fn=trainer.loss_fn,
                         train_batches=trainer._method_batches, task=trainer.task,
                         model_config=trainer.model.config, rng=jax.random.PRNGKey(0))
    epochs = [list(trainer.epoch_batches(e)) for e in (0, 1)]
    assert len(epochs[0]) == trainer.steps_per_epoch
    for e, want in enumerate(epochs):
        got = list(ctx.train_batches(tiny_config.train.batch_size, seed=tiny_config.seed,
                                     epoch=e))
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    n = len(epochs[0]) + 3
    stream = list(itertools.islice(training_stream(ctx), n))
    for a, b in zip(stream, epochs[0] + epochs[1][:3], strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert not np.array_equal(epochs[0][0]["input_ids"], epochs[1][0]["input_ids"])
