"""Data- and model-parallel runs on 8 forced host devices match a 1-device run.

XLA's device count is fixed when jax first initialises, so each device count runs in a
child process (`--xla_force_host_platform_device_count`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec

from fishjax.train.sharding import ShardingError, make_mesh, spec_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys
cfg_json, model_dir, out_dir = sys.argv[1:4]
import jax
from configs import quickstart
from fishjax.train.trainer import train_and_evaluate
from fishjax.core.errors import ConfigError

runs = json.loads(cfg_json)
results = {"devices": jax.device_count()}
for name, overrides in runs.items():
    config = quickstart.get_config()
    config.model.name = model_dir
    config.data.cache_dir = os.path.join(out_dir, "cache")
    config.data.max_train_samples = 64
    config.data.max_eval_samples = 32
    config.train.batch_size = 8
    config.train.eval_batch_size = 16
    config.train.num_steps = 12
    config.train.learning_rate = 1e-3
    config.train.log_every_steps = 1
    config.train.export = False
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = tuple(tuple(r) for r in value) if key == "mesh.param_rules" else value
    workdir = os.path.join(out_dir, name)
    try:
        res = train_and_evaluate(config, workdir)
    except ConfigError as e:
        results[name] = {"error": str(e)}
        continue
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    stored = json.load(open(os.path.join(workdir, "config.json")))
    results[name] = {"loss": [r["train/loss"] for r in rows if "train/loss" in r],
                     "eval": res["final_eval"], "rules": stored["mesh"]["param_rules"]}
print("RESULT" + json.dumps(results))
"""

MODEL_RULES = [
    [r"attention/self/(query|key|value)/kernel$", [None, "model"]],
    [r"intermediate/dense/kernel$", [None, "model"]],
    [r"layer_\d+/output/dense/kernel$", ["model", None]],
]


def _run_child(devices: int, runs: dict, model_dir: str, out_dir: str) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(runs), model_dir, out_dir],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
def test_eight_devices_match_one_device(tiny_model_dir, tmp_path):
    one = _run_child(1, {"single": {}, "single_threefry": {"train.dropout_prng": "threefry"}},
                     tiny_model_dir, str(tmp_path / "one"))
    eight = _run_child(8, {
        "data8": {},
        "data4_model2": {"mesh.data": 4, "mesh.model": 2, "mesh.param_rules": MODEL_RULES},
        "data4_model2_family": {"mesh.data": 4, "mesh.model": 2},  # the family's rules
        "data8_threefry": {"train.dropout_prng": "threefry"},
        "indivisible": {"train.batch_size": 12},
    }, tiny_model_dir, str(tmp_path / "eight"))
    assert one["devices"] == 1 and eight["devices"] == 8
    np.testing.assert_allclose(eight["data8_threefry"]["loss"], one["single_threefry"]["loss"],
                               rtol=2e-4, atol=2e-5)

    ref = np.array(one["single"]["loss"])
    assert len(ref) == 12 and np.ptp(ref) > 0  # 12 distinct steps were taken
    for name in ("data8", "data4_model2"):
        np.testing.assert_allclose(eight[name]["loss"], ref, rtol=2e-4, atol=2e-5, err_msg=name)
        for k, v in one["single"]["eval"].items():
            assert abs(eight[name]["eval"][k] - v) < 1e-3, (name, k)
    assert "not divisible by the mesh data axis" in eight["indivisible"]["error"]
    # mesh.param_rules=None: the model family's rules (the same as MODEL_RULES), recorded.
    assert eight["data4_model2_family"]["rules"] == MODEL_RULES
    assert eight["data4_model2_family"]["loss"] == eight["data4_model2"]["loss"]
    assert one["single"]["rules"] == [] and eight["data8"]["rules"] == []


DECODER_CHILD = r"""
import json, os, sys
import numpy as np
model_dir, out_dir = sys.argv[1:3]
import jax
from benchmarks.common.tiny_model import make_tiny_decoder_config
from fishjax.core.tree import flatten_paths
from fishjax.train.checkpoints import Checkpoints
from fishjax.train.trainer import train_and_evaluate

runs = {"one": {}} if jax.device_count() == 1 else {
    "data8": {}, "data4_model2": {"data": 4, "model": 2}}
results = {"devices": jax.device_count()}
for name, mesh in runs.items():
    config = make_tiny_decoder_config(model_dir, os.path.join(out_dir, "cache"))
    config.train.num_steps = 6
    config.train.log_every_steps = 1
    config.train.export = False
    for k, v in mesh.items():
        config.mesh[k] = v
    workdir = os.path.join(out_dir, name)
    train_and_evaluate(config, workdir)
    ckpt = Checkpoints(workdir)
    final = ckpt.restore_latest(None)["trainable"]
    ckpt.close()
    np.savez(os.path.join(out_dir, name + ".npz"),
             **{"/".join(p): np.asarray(v) for p, v in flatten_paths(final).items()})
    stored = json.load(open(os.path.join(workdir, "config.json")))
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    results[name] = {"loss": [r["train/loss"] for r in rows if "train/loss" in r],
                     "rules": stored["mesh"]["param_rules"]}
print("RESULT" + json.dumps(results))
"""


def _run_decoder_child(devices: int, model_dir: str, out_dir: str) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get(
                   "PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", DECODER_CHILD, model_dir, out_dir], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
def test_a_decoder_on_eight_devices_matches_one_device(tiny_decoder_dir, tmp_path):
    """Full fine-tuning of the tiny decoder, 6 steps: data-parallel on 8 devices and
    (data 4, model 2) with the decoder family's rules give one device's parameters."""
    one = _run_decoder_child(1, tiny_decoder_dir, str(tmp_path))
    eight = _run_decoder_child(8, tiny_decoder_dir, str(tmp_path))
    assert one["devices"] == 1 and eight["devices"] == 8
    assert eight["data4_model2"]["rules"] and one["one"]["rules"] == []
    want = np.load(tmp_path / "one.npz")
    for name in ("data8", "data4_model2"):
        np.testing.assert_allclose(eight[name]["loss"], one["one"]["loss"], rtol=1e-5,
                                   err_msg=name)
        got = np.load(tmp_path / f"{name}.npz")
        assert sorted(got.files) == sorted(want.files)
        for leaf in want.files:
            np.testing.assert_allclose(got[leaf], want[leaf], atol=1e-5, rtol=0,
                                       err_msg=f"{name}: {leaf}")


def test_mesh_and_rule_errors():
    import jax

    n = jax.device_count()
    assert make_mesh().shape == {"data": n, "model": 1}
    with pytest.raises(ShardingError, match="devices"):
        make_mesh(data=n + 1)
    with pytest.raises(ShardingError, match="2 dims"):
        spec_for("encoder/layer_0/attention/self/query/bias", 1, [(r"query", (None, "model"))])
    assert spec_for("a/b/kernel", 2, [(r"c/kernel$", (None, "model"))]) == PartitionSpec()
    assert spec_for("x/c/kernel", 2, [(r"c/kernel$", (None, "model"))]) == PartitionSpec(
        None, "model")
