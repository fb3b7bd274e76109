"""A workdir written by the code before the #23 refactor still resumes, and its files load.

`tests/fixtures/workdir_v0` is a tiny `fish` run (sparse storage, 4 steps) stopped at step
2 by the code of commit 0d9455a (`tests/fixtures/README.md` says how it was made). Resumed
by today's code it reuses its saved mask and checkpoint and finishes with the metrics and
the delta file that the old code's uninterrupted run gave.
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

from benchmarks.common.tiny_model import build_tiny_model_dir, make_tiny_config
from fishjax.core.safetensors_io import read_tensors
from fishjax.train.trainer import train_and_evaluate

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# The old code's uninterrupted run (tests/fixtures/README.md).
OLD_FINAL_EVAL = {"accuracy": 0.5625, "loss": 0.6910163760185242}


def _old_config():
    config = make_tiny_config("tiny/model", "cache")
    config.method.name = "fish"
    config.method.fisher.num_samples = 16
    config.method.sparse_storage = True
    config.train.num_steps = 4
    config.train.checkpoint_every_steps = 2
    return config


def test_a_pre_refactor_workdir_resumes_to_the_old_codes_result(tmp_path, monkeypatch,
                                                                 caplog):
    monkeypatch.chdir(tmp_path)  # the fixture names its model and cache relatively
    build_tiny_model_dir("tiny")
    shutil.copytree(os.path.join(FIXTURES, "workdir_v0"), "workdir_v0")
    caplog.set_level(logging.INFO, logger="fishjax")
    res = train_and_evaluate(_old_config(), "workdir_v0")
    assert "resumed from step 2" in caplog.text
    # its saved mask is reused, not selected again
    assert res["method_summary"]["mask_loaded_from"].endswith("mask.safetensors")
    assert "fisher:" not in caplog.text
    assert res["finished"] and res["step"] == 4
    assert res["final_eval"]["accuracy"] == OLD_FINAL_EVAL["accuracy"]
    assert res["final_eval"]["loss"] == pytest.approx(OLD_FINAL_EVAL["loss"], rel=1e-5)
    got = read_tensors(res["artifacts"]["delta"], ValueError)
    want = read_tensors(os.path.join(FIXTURES, "workdir_v0_finished_delta.safetensors"),
                        ValueError)
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        if np.issubdtype(tensor.dtype, np.floating):
            np.testing.assert_allclose(got[name], tensor, rtol=1e-5, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], tensor, err_msg=name)
