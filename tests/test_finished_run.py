"""`fishjax.load(workdir)`: a finished run's model predicts on raw text exactly as the run
scored it (its recorded dev loss is recomputed from `outputs` on the dev texts), for a
masked method (sparse delta), a PEFT method, X-PEFT (hardened profile on a random pool, and
the profile server built from that pool), a dense method's best checkpoint and its export
(in a workdir whose checkpoints a finished run deleted: a rerun reports, never retrains);
and a workdir without a finished run is one clear error."""

from __future__ import annotations

import os

import numpy as np
import pytest

import fishjax
from benchmarks.common.tiny_model import make_tiny_config
from fishjax.finished_run import LoadError
from fishjax.methods.xpeft.serve import ProfileServer
from fishjax.train.task_data import load_raw_splits
from fishjax.train.trainer import train_and_evaluate

CASES = {
    # name: (method, config overrides, the file the params come from)
    "fish_sparse": ("fish", {"method.sparse_storage": True}, "delta.safetensors"),
    "lora": ("lora", {}, "peft.safetensors"),
    "xpeft": ("xpeft", {"method.xpeft.variant": "soft", "method.xpeft.harden_at_end": True,
                        "method.xpeft.pool_size": 4}, "profile_hard.safetensors"),
    "full_best": ("full", {}, "best/"),
    # a classifier reading the mean of the hidden states (config.model.pooling)
    "lora_mean_pooling": ("lora", {"model.pooling": "mean"}, "peft.safetensors"),
    "xpeft_mean_pooling": ("xpeft", {"model.pooling": "mean", "method.xpeft.pool_size": 4},
                           "profile.safetensors"),
    # the quickstart's small workdir: the export and the logs, no checkpoints
    "full_export": ("full", {"train.export": True, "train.keep_checkpoints": False}, "export"),
}


def _set(config, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value


def _mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(labels)), labels]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_predicts_as_the_run_scored(case, tiny_model_dir, tmp_path):
    method, overrides, source = CASES[case]
    config = make_tiny_config(tiny_model_dir, str(tmp_path / "cache"))
    config.method.name = method
    config.train.num_steps = 6
    config.train.eval_every_steps = 3
    for k, v in overrides.items():
        _set(config, k, v)
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(config, workdir)
    if not config.train.keep_checkpoints:
        assert not os.path.exists(os.path.join(workdir, "checkpoints"))
        assert not os.path.exists(os.path.join(workdir, "best"))
        assert not os.path.exists(os.path.join(workdir, "train_time.json"))
        assert results["train_s_total"] is not None  # the per-checkpoint record's total stays
        assert train_and_evaluate(config, workdir) == results  # reported, not retrained
        assert not os.path.exists(os.path.join(workdir, "checkpoints"))
        assert not os.path.exists(os.path.join(workdir, "train_time.json"))

    run = fishjax.load(workdir)
    assert run.method == method and run.base == config.model.name
    assert source.rstrip("/") in run.source.replace(workdir, "")
    assert len(run.base_fingerprint) == 64
    dev = load_raw_splits(run.config, run.task)["dev"]
    logits = run.outputs(dev.text_a)
    # The recorded dev loss of exactly these params, recomputed from raw text.
    assert _mean_loss(logits, dev.labels) == pytest.approx(run.metrics["loss"], abs=2e-5)
    predictions = run.predict(dev.text_a, batch_size=5)  # other batching, same predictions
    np.testing.assert_array_equal(predictions, logits.argmax(axis=1))
    assert float(np.mean(predictions == dev.labels)) == pytest.approx(run.metrics["accuracy"])
    assert run.describe().startswith(f"{method} on ")

    if method == "xpeft":  # the server works on a random pool (no bank file was written)
        server = ProfileServer.from_random_pool(config.model.name, run.source)
        server.add_profile("run", run.source)
        texts = dev.text_a[:4]
        np.testing.assert_array_equal(server.predict(texts, ["run"] * 4, max_length=32),
                                      run.predict(texts))


def test_load_refuses_what_is_no_finished_run(tiny_model_dir, tmp_path):
    with pytest.raises(LoadError, match="holds no run"):  # an empty folder
        fishjax.load(str(tmp_path))
    config = make_tiny_config(tiny_model_dir, str(tmp_path / "cache"))
    config.method.name = "head_only"  # trains the head only: best/ holds no whole model
    config.train.num_steps = 2
    train_and_evaluate(config, str(tmp_path / "head"))
    with pytest.raises(LoadError, match="no artefact file or export/ to load") as e:
        fishjax.load(str(tmp_path / "head"))
    assert "\n" not in str(e.value)
    config.method.name = "full"
    config.train.num_steps = 4
    config.train.stop_after_steps = 2
    workdir = str(tmp_path / "run")
    train_and_evaluate(config, workdir)
    with pytest.raises(LoadError, match="unfinished run: rerun its command"):
        fishjax.load(workdir)
    config.train.stop_after_steps = None
    train_and_evaluate(config, workdir)  # resumed to the end: now it loads
    run = fishjax.load(workdir)
    with pytest.raises(fishjax.FishjaxError, match="texts must be a list of strings"):
        run.predict("one text, not a list")
    with pytest.raises(LoadError, match="give no pairs"):
        run.predict(["a"], pairs=["b"])
