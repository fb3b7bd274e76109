"""Nothing lost, nothing silently wrong: the guards of issue #15, on the tiny model.

Divergence, non-finite config numbers, strict JSON, integrity hashes (checkpoints, best
params, masks, deltas), workdir fingerprints, resume bookkeeping, umask, empty workdirs,
the CLI's exit status and listings, batches without `weights`, the top-level API.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest

from fishjax.core.errors import (
    CheckpointError,
    ConfigError,
    DeltaError,
    MaskError,
    TrainingDiverged,
    WorkdirError,
)
from fishjax.core.io import atomic_write_json, remove_orphans, strict_json
from fishjax.methods import get_method, method_options
from fishjax.train.checkpoints import Checkpoints
from fishjax.train.trainer import finished_results, train_and_evaluate
from fishjax.train.workdir import RESULT_NEUTRAL, differing_fields

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _strict_load(path):
    """json.load that refuses NaN/Infinity tokens (not JSON)."""
    def refuse(token):
        raise ValueError(f"{path}: non-JSON token {token}")
    with open(path, encoding="utf-8") as f:
        return json.load(f, parse_constant=refuse)


def _ckpt_steps(workdir, sub="checkpoints"):
    folder = os.path.join(workdir, sub)
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(
        folder) else []


def _data_files(step_dir):
    """The array data files orbax wrote for a step (the largest first)."""
    found = []
    for root, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            if "/d/" in path or name.startswith("ocdbt") or "ocdbt.process" in root:
                found.append(path)
    return sorted(found, key=os.path.getsize, reverse=True)


def _corrupt(path, seed=0, n=4096):
    data = bytearray(open(path, "rb").read())
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, max(len(data) - n, 1)))
    data[start:start + n] = rng.integers(0, 256, min(n, len(data) - start), np.uint8).tobytes()
    open(path, "wb").write(bytes(data))


# -- divergence ------------------------------------------------------------------------------


def test_diverging_run_stops_keeps_nothing_after_and_writes_strict_json(tiny_config, tmp_path):
    tiny_config.train.learning_rate = 1e4
    tiny_config.train.checkpoint_every_steps = 2
    tiny_config.train.export = True
    workdir = str(tmp_path / "div")
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+: loss=") as err:
        train_and_evaluate(tiny_config, workdir)
    step = err.value.step
    results = _strict_load(os.path.join(workdir, "results.json"))
    assert results["diverged"]["step"] == step and not results["finished"]
    assert not os.path.exists(os.path.join(workdir, "export"))
    assert all(s < step for s in _ckpt_steps(workdir))
    assert all(s < step for s in _ckpt_steps(workdir, "best"))
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        json.loads(line, parse_constant=lambda t: pytest.fail(f"non-JSON {t}"))
    # Resuming the same config diverges again at the same step (deterministic): no export.
    with pytest.raises(TrainingDiverged) as again:
        train_and_evaluate(tiny_config, workdir)
    assert again.value.step == step
    assert not os.path.exists(os.path.join(workdir, "export"))


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_config_numbers_are_refused(tiny_config, tmp_path, value):
    tiny_config.train.learning_rate = value
    with pytest.raises(ConfigError, match=r"config\.train\.learning_rate=.* not a finite"):
        train_and_evaluate(tiny_config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")  # nothing written, not even the folder


def test_strict_json_names_what_was_not_finite():
    text = strict_json({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2.5)})
    doc = json.loads(text, parse_constant=lambda t: pytest.fail(t))
    assert doc["a"] is None and doc["b"] == [1.0, None] and doc["c"] == 2.5
    assert doc["_non_finite"] == {"a": "nan", "b/1": "inf"}


def test_best_never_holds_non_finite_params(tmp_path):
    ckpt = Checkpoints(str(tmp_path))
    good = {"w": np.ones(3, np.float32)}
    assert ckpt.maybe_save_best(1, good, 0.5, {"accuracy": 0.5})
    bad = {"w": np.array([1.0, np.nan, 0.0], np.float32)}
    assert not ckpt.maybe_save_best(2, bad, 0.9, {"accuracy": 0.9})  # NaN params, "better"
    assert not ckpt.maybe_save_best(3, good, 0.9, {"accuracy": 0.9, "loss": math.nan})
    assert ckpt.best()["step"] == 1
    ckpt.close()


# -- integrity ---------------------------------------------------------------------------------


@pytest.fixture
def stopped_run(tiny_config, tmp_path):
    """A run stopped at step 8 with checkpoints at 4 and 8; (config, workdir)."""
    tiny_config.train.checkpoint_every_steps = 4
    tiny_config.train.stop_after_steps = 8
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config, workdir)
    assert _ckpt_steps(workdir) == [4, 8]
    return tiny_config, workdir


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(stopped_run, tmp_path,
                                                                 caplog):
    config, workdir = stopped_run
    config.train.stop_after_steps = None
    reference = train_and_evaluate(config, str(tmp_path / "reference"))
    files = _data_files(os.path.join(workdir, "checkpoints", "8"))
    assert files, "no array files found in the checkpoint"
    _corrupt(files[0])
    with caplog.at_level("WARNING", logger="fishjax"):
        resumed = train_and_evaluate(config, workdir)
    assert "checkpoints/8" in caplog.text and "older checkpoint" in caplog.text
    assert resumed["final_eval"] == reference["final_eval"]  # replayed from step 4


def test_no_usable_checkpoint_is_a_clear_error(stopped_run):
    config, workdir = stopped_run
    for step in (4, 8):
        for path in _data_files(os.path.join(workdir, "checkpoints", str(step))):
            with open(path, "r+b") as f:
                f.truncate(max(os.path.getsize(path) // 2, 1))
    config.train.stop_after_steps = None
    with pytest.raises(CheckpointError, match=r"checkpoints/8 .*Delete .*checkpoints"):
        train_and_evaluate(config, workdir)


def test_damaged_best_is_a_clear_error_at_export(tiny_config, tmp_path):
    tiny_config.train.export = True
    tiny_config.train.stop_after_steps = 12  # eval (and best) at step 12, the first epoch
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config, workdir)
    (best_step,) = _ckpt_steps(workdir, "best")
    for path in _data_files(os.path.join(workdir, "best", str(best_step))):
        _corrupt(path, seed=1)
    tiny_config.train.stop_after_steps = None
    with pytest.raises(CheckpointError, match=rf"best/{best_step}.*Delete .*best"):
        train_and_evaluate(tiny_config, workdir)


def test_changed_mask_index_and_delta_value_are_refused(tiny_config, tmp_path):
    import safetensors.numpy

    from fishjax.artifacts.delta_file import load_delta
    from fishjax.artifacts.mask_file import read_mask

    tiny_config.method.name = "fish"
    tiny_config.method.keep_ratio = 0.05
    tiny_config.method.sparse_storage = True  # the delta file
    tiny_config.train.num_steps = 2
    workdir = str(tmp_path / "fish")
    res = train_and_evaluate(tiny_config, workdir)
    mask_path = os.path.join(workdir, "mask.safetensors")
    delta_path = res["artifacts"]["delta"]
    read_mask(mask_path), load_delta(delta_path)  # intact: fine

    def rewrite(path, change):
        with open(path, "rb") as f:
            data = f.read()
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n])["__metadata__"]
        tensors = safetensors.numpy.load(data)
        change(tensors)
        open(path, "wb").write(safetensors.numpy.save(tensors, metadata=meta))

    def bump_index(tensors):
        name = next(k for k, v in tensors.items() if v.dtype.kind in "iu" and v.size)
        tensors[name] = tensors[name].copy()
        tensors[name].flat[0] += 1

    def huge_value(tensors):
        name = next(k for k, v in tensors.items() if v.dtype.kind == "f" and v.size)
        tensors[name] = tensors[name].copy()
        tensors[name].flat[0] = 1e30

    rewrite(mask_path, bump_index)
    with pytest.raises(MaskError, match="damaged"):
        read_mask(mask_path)
    rewrite(delta_path, huge_value)
    with pytest.raises(DeltaError, match="damaged"):
        load_delta(delta_path)


# -- workdirs ----------------------------------------------------------------------------------


def test_resume_with_another_config_is_refused_and_overwrite_moves_the_old_run(stopped_run):
    config, workdir = stopped_run
    before = open(os.path.join(workdir, "config.json")).read()
    config.train.learning_rate = 3e-3
    config.seed = 1
    with pytest.raises(WorkdirError, match=r"seed: 0 -> 1; train\.learning_rate") as err:
        train_and_evaluate(config, workdir)
    assert "--overwrite" in str(err.value) and "new workdir" in str(err.value)
    assert open(os.path.join(workdir, "config.json")).read() == before  # never rewritten
    config.method.name = "bitfit"
    with pytest.raises(WorkdirError, match=r"method\.name: 'full' -> 'bitfit'"):
        train_and_evaluate(config, workdir)
    with pytest.raises(WorkdirError):
        finished_results(config, workdir)

    config.train.stop_after_steps = 4
    res = train_and_evaluate(config, workdir, overwrite=True)
    aside = [n for n in os.listdir(os.path.dirname(workdir)) if n.startswith("run.old-")]
    assert len(aside) == 1 and res["step"] == 4 and res["method"] == "bitfit"
    old = os.path.join(os.path.dirname(workdir), aside[0])
    assert open(os.path.join(old, "config.json")).read() == before
    assert _ckpt_steps(old) == [4, 8]


def test_result_neutral_fields_may_change_on_resume(stopped_run):
    config, workdir = stopped_run
    config.train.stop_after_steps = None
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = 100
    res = train_and_evaluate(config, workdir)
    assert res["finished"]
    got = differing_fields(json.load(open(os.path.join(workdir, "config.json"))),
                           json.loads(config.to_json_best_effort()))
    assert got == []
    assert "train.stop_after_steps" in RESULT_NEUTRAL


def test_resume_compares_only_the_active_methods_options(tiny_config, tmp_path, caplog):
    """A workdir whose config.json predates options of other methods (a field added to
    method.xpeft since, one retired from method.peft) resumes; the active method's own
    block and the shared fields are still compared."""
    tiny_config.method.name = "fish"
    tiny_config.method.fisher.num_samples = 32
    tiny_config.train.stop_after_steps = 4
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config, workdir)
    path = os.path.join(workdir, "config.json")
    stored = json.load(open(path))
    del stored["method"]["xpeft"]["random_up_scale"]
    stored["method"]["peft"]["retired_option"] = 1
    atomic_write_json(path, stored)
    tiny_config.train.stop_after_steps = None
    caplog.set_level(logging.INFO, logger="fishjax")
    res = train_and_evaluate(tiny_config, workdir)
    assert res["finished"] and "resumed from step 4" in caplog.text
    tiny_config.method.fisher.num_samples = 64
    with pytest.raises(WorkdirError, match=r"method\.fisher\.num_samples: 32 -> 64"):
        train_and_evaluate(tiny_config, workdir)
    tiny_config.method.fisher.num_samples = 32
    tiny_config.method.keep_ratio = 0.5
    with pytest.raises(WorkdirError, match=r"method\.keep_ratio"):
        train_and_evaluate(tiny_config, workdir)


def test_family_defaults_are_filled_in_and_recorded(tiny_config, tmp_path):
    """method.head_regex and method.sift.head_regex default to the model family's (None in
    configs/default.py); the run fills them in and its config.json records them."""
    assert tiny_config.method.head_regex is None and tiny_config.method.sift.head_regex is None
    tiny_config.train.num_steps = 1
    workdir = str(tmp_path / "run")
    train_and_evaluate(tiny_config, workdir)
    stored = json.load(open(os.path.join(workdir, "config.json")))["method"]
    assert stored["head_regex"] == r"^classifier/"
    assert stored["sift"]["head_regex"] == r"^(pooler|classifier)/"


def test_a_method_sees_only_the_shared_fields_and_its_own_blocks(tiny_config):
    view = method_options(tiny_config.method, get_method("sift"))
    assert view.sift.rate == tiny_config.method.sift.rate
    assert view.keep_ratio == tiny_config.method.keep_ratio and "fisher" in view
    assert "xpeft" not in view and "peft" not in view and "xpeft" in tiny_config.method
    with pytest.raises(AttributeError):
        view.xpeft.pool_size  # noqa: B018


def test_finished_results_skips_an_unreadable_results_file(tiny_config, tmp_path):
    tiny_config.train.num_steps = 2
    workdir = str(tmp_path / "run")
    res = train_and_evaluate(tiny_config, workdir)
    assert finished_results(tiny_config, workdir)["final_eval"] == res["final_eval"]
    path = os.path.join(workdir, "results.json")
    open(path, "w").write(open(path).read()[:40])  # truncated
    assert finished_results(tiny_config, workdir) is None
    again = train_and_evaluate(tiny_config, workdir)  # a finished run: evaluated, rewritten
    assert again["final_eval"] == res["final_eval"] and _strict_load(path)["finished"]


# -- resume bookkeeping ------------------------------------------------------------------------


def test_resume_keeps_initial_eval_and_writes_each_metrics_row_once(stopped_run):
    config, workdir = stopped_run
    config.train.stop_after_steps = None
    metrics = os.path.join(workdir, "metrics.jsonl")
    with open(metrics, "a") as f:  # what a run killed after step 8 had logged past it
        f.write(json.dumps({"step": 10, "train/loss": 0.1}) + "\n")
        f.write('{"step": 11, "train/lo')  # torn by the kill
    orphan = os.path.join(workdir, ".export.tmp-abc123")
    os.makedirs(orphan)
    open(os.path.join(workdir, ".tmp-xyz-results.json"), "w").write("{")
    res = train_and_evaluate(config, workdir)
    assert not os.path.exists(orphan)
    assert not [n for n in os.listdir(workdir) if n.startswith(".tmp-")]
    rows = [json.loads(line) for line in open(metrics)]
    keys = [(r["step"], tuple(sorted(k for k in r if k != "step"))) for r in rows]
    assert len(keys) == len(set(keys)), "a metrics row was written twice"
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert res["finished"] and res["initial_eval"] is None  # the fixture evaluates no step 0


def test_initial_eval_survives_a_resume(tiny_config, tmp_path):
    tiny_config.train.eval_before_training = True
    tiny_config.train.stop_after_steps = 4
    workdir = str(tmp_path / "run")
    first = train_and_evaluate(tiny_config, workdir)
    tiny_config.train.stop_after_steps = None
    resumed = train_and_evaluate(tiny_config, workdir)
    assert resumed["initial_eval"] == first["initial_eval"] is not None
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert sum(1 for r in rows if r["step"] == 0) == 1


def test_files_honour_the_umask(tmp_path):
    from fishjax.core.io import atomic_directory

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        out = atomic_directory(tmp_path / "folder", lambda d: open(
            os.path.join(d, "f.txt"), "w").write("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755


def test_remove_orphans_touches_only_its_own_temp_names(tmp_path):
    for name in (".tmp-1-a.json", "keep.json", ".export.tmp-9"):
        (tmp_path / name).mkdir() if "export" in name else (tmp_path / name).write_text("x")
    removed = remove_orphans(tmp_path)
    assert sorted(os.path.basename(p) for p in removed) == [".export.tmp-9", ".tmp-1-a.json"]
    assert os.listdir(tmp_path) == ["keep.json"]


def test_a_new_run_that_fails_leaves_no_workdir(tiny_config, tmp_path):
    tiny_config.data.max_length = 100_000  # beyond the model's positions: fails in setup
    workdir = tmp_path / "new"
    with pytest.raises(ConfigError, match="max_length"):
        train_and_evaluate(tiny_config, str(workdir))
    assert not workdir.exists()


# -- the CLI -----------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.parametrize("args,names", [
    pytest.param(["--config=configs/quickstart.py", "--config.train.learning_rate=-1"],
                 "learning_rate", marks=pytest.mark.slow),
    (["--config=configs/quickstart.py", "--config.train.leraning_rate=1"], "learning_rate"),
    (["--config=configs/nope.py"], "configs/nope.py"),
    (["--config=configs/glue.py:nope"], "unknown task 'nope'"),
], ids=["bad_value", "typo", "missing_config", "wrong_task"])
def test_cli_input_errors_are_one_line_and_exit_2(tmp_path, args, names):
    run = _cli(*args, f"--workdir={tmp_path / 'w'}")
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and names in lines[0], lines
    assert not os.path.exists(tmp_path / "w")  # nothing written


def test_cli_lists_and_help_show_methods_configs_and_fields():
    from fishjax.methods import available_methods
    from fishjax.train.cli import listing

    methods = listing("methods", "configs").splitlines()
    assert [line.split()[0] for line in methods] == available_methods()
    assert all(len(line.split()) > 2 for line in methods)  # each with a description
    configs = listing("configs", os.path.join(REPO, "configs"))
    assert "glue.py:<task>" in configs and "quickstart.py" in configs
    assert "mnli" in listing("tasks", "configs")
    with pytest.raises(ValueError, match="choose one of"):
        listing("models", "configs")
    helped = _cli("--help")  # short, and instant: it imports no fishjax
    assert helped.returncode == 0 and helped.stderr == ""
    assert "--overwrite" in helped.stdout and "--list" in helped.stdout
    assert "--helpfull" in helped.stdout and len(helped.stdout.splitlines()) < 40
    assert "train.learning_rate" not in helped.stdout
    full = _cli("--helpfull")
    assert full.returncode == 0 and "train.learning_rate" in full.stdout


def test_config_field_docs_cover_every_default_field():
    from configs import default
    from fishjax.train.cli import config_fields

    fields = {f.name: f for f in config_fields(os.path.join(REPO, "configs", "default.py"))}
    config = default.get_config()

    def leaves(node, prefix=""):
        for k, v in node.items():
            if hasattr(v, "items"):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    missing = [name for name in leaves(config) if name not in fields]
    assert not missing, f"fields without a parsed entry: {missing}"
    assert "learning rate" in fields["train.learning_rate"].doc.lower()


# -- pure functions on one's own batches ---------------------------------------------------


def test_batches_without_weights_count_every_row():
    import optax

    import fishjax

    params = {"w": np.arange(6, dtype=np.float32).reshape(3, 2) / 10}

    def loss_fn(p, batch):
        logits = batch["x"] @ p["w"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.arange(8) % 2
    plain = fishjax.fisher_scores(loss_fn, params, [{"x": x, "labels": y}], progress=False)
    weighted = fishjax.fisher_scores(loss_fn, params, [{"x": x, "labels": y,
                                                        "weights": np.ones(8)}], progress=False)
    np.testing.assert_allclose(plain.scores["w"], weighted.scores["w"], rtol=1e-6)
    assert plain.num_examples == 8
    with pytest.raises(ValueError, match="one row count"):
        fishjax.fisher_scores(loss_fn, params, [{"x": x, "labels": y[:5]}], progress=False)


def test_the_package_exports_the_main_functions():
    import fishjax

    for name in fishjax.__all__:
        assert getattr(fishjax, name) is not None
    assert {"fisher_scores", "top_k_mask", "masked_updates", "run_ird", "init_peft",
            "SparseDelta", "train_and_evaluate"} <= set(fishjax.__all__)
    assert jax.tree_util.tree_leaves(fishjax.top_k_mask({"a": np.arange(5.0)}, 2))


def test_fields_added_since_match_an_older_config_only_at_their_old_behaviour():
    """A config.json written before `model.pooling` (and the other ADDED_WITH_DEFAULT
    fields) existed matches a config holding the value that reproduces the old code, and
    differs from any other value of it."""
    from fishjax.train.workdir import ADDED_WITH_DEFAULT

    old = {"model": {"name": "m"}, "method": {"fisher": {"mode": "empirical"}}}
    same = {"model": {"name": "m", "pooling": "pooler"},
            "method": {"fisher": {"mode": "empirical", "token_reduction": "mean"}}}
    assert differing_fields(old, same) == []
    other = {"model": {"name": "m", "pooling": "mean"},
             "method": {"fisher": {"mode": "empirical", "token_reduction": "sum"}}}
    assert [f[0] for f in differing_fields(old, other)] == [
        "method.fisher.token_reduction", "model.pooling"]
    assert set(ADDED_WITH_DEFAULT) >= {"model.pooling", "method.fisher.token_reduction"}
