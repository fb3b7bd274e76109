"""Every config file loads and validates; the CLI parses overrides and trains."""

from __future__ import annotations

import glob
import importlib
import json
import os
import re
import subprocess
import sys

import pytest

from fishjax.data import get_task
from fishjax.train.validation import validate_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
CONFIG_NAMES = [os.path.basename(p)[:-3] for p in CONFIG_FILES if not p.endswith("__init__.py")]
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
# Every config: a file, or `glue:<task>` (configs/glue.py with the task as its argument).
CONFIGS = CONFIG_NAMES + [f"glue:{t}" for t in GLUE_TASKS]


def _load(name: str):
    module, _, arg = name.partition(":")
    get_config = importlib.import_module(f"configs.{module}").get_config
    return get_config(arg) if arg else get_config()


def test_there_is_a_config_for_every_glue_task():
    from configs import glue

    assert set(glue.TASKS) == set(GLUE_TASKS)
    assert {"default", "quickstart", "glue", "glue_rte"} <= set(CONFIG_NAMES)
    with pytest.raises(ValueError, match="unknown task"):
        glue.get_config("nope")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_validates(name):
    config = _load(name)
    validate_config(config)
    get_task(config.task)
    if name.startswith("glue:"):
        assert get_task(config.task).name == name[len("glue:"):]
    if name.startswith("glue_"):
        assert get_task(config.task).name == name[len("glue_"):]


def test_default_config_documents_every_field():
    """configs/default.py has a comment on (or above) every field it sets."""
    lines = open(os.path.join(REPO, "configs", "default.py")).read().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("config.") and "=" in s and "ConfigDict()" not in s:
            if "#" not in s and not lines[i - 1].strip().startswith("#"):
                # a field in a block of related fields shares the block's comment
                j = i - 1
                while j >= 0 and lines[j].strip().startswith("config.") and "#" not in lines[j]:
                    j -= 1
                if not lines[j].strip().startswith("#"):
                    undocumented.append(s)
    assert not undocumented, undocumented


def test_cli_trains_with_overrides(tiny_model_dir, tmp_path):
    workdir = tmp_path / "cli"
    cmd = [sys.executable, "train.py", "--config=configs/quickstart.py", f"--workdir={workdir}",
           f"--config.model.name={tiny_model_dir}", f"--config.data.cache_dir={tmp_path}/cache",
           "--config.data.max_train_samples=32", "--config.data.max_eval_samples=16",
           "--config.train.batch_size=8", "--config.train.num_steps=3",
           "--config.train.export=False", "--config.seed=3"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ETA" in proc.stderr  # progress is reported, as plain timed lines
    assert re.search(r"^\d\d:\d\d:\d\d step 3/3 \| epoch 0 \| loss", proc.stderr, re.M)
    assert "%|" not in proc.stderr  # no progress bar in a pipe
    # the closing summary on stdout, with where the results are
    assert proc.stdout.startswith(f"run summary ({workdir}):")
    assert f"results: {workdir}/results.json" in proc.stdout
    # quickstart.py deletes its checkpoints once finished (train.keep_checkpoints=False)
    assert not (workdir / "checkpoints").exists()
    saved = json.load(open(workdir / "config.json"))
    assert saved["seed"] == 3 and saved["train"]["num_steps"] == 3
    assert json.load(open(workdir / "results.json"))["step"] == 3


def test_cli_rejects_unknown_field(tmp_path):
    cmd = [sys.executable, "train.py", "--config=configs/quickstart.py",
           f"--workdir={tmp_path}", "--config.train.no_such_field=1"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no_such_field" in proc.stderr


def test_fish_reference_is_the_reference_recipe_and_rounds_the_budget_down():
    from configs import fish_reference
    from fishjax.core.errors import MaskError
    from fishjax.selection.budgets import budget_k

    c = fish_reference.get_config("mrpc")
    assert c.task == "mrpc" and c.method.name == "fish"
    assert (c.train.learning_rate, c.train.batch_size, c.train.num_epochs) == (5e-5, 16, 7.0)
    assert (c.train.warmup_ratio, c.train.weight_decay) == (0.0, 0.0)
    assert (c.method.budget_rounding, c.method.head_policy) == ("floor", "in_budget")
    assert budget_k(1190, 0.005, rounding="floor") == 5  # int(5.95), the reference's
    assert budget_k(1190, 0.005) == 6
    with pytest.raises(MaskError, match="rounding"):
        budget_k(1190, 0.005, rounding="ceil")


def test_train_py_lists_what_the_cli_can_list():
    """train.py declares --list's choices itself (its --help imports no fishjax): they must
    be the ones `fishjax.train.cli.listing` serves."""
    from fishjax.train.cli import LISTINGS

    source = open(os.path.join(REPO, "train.py"), encoding="utf-8").read()
    declared = re.search(r'DEFINE_enum\("list", None, \[([^\]]*)\]', source)
    assert declared, "train.py no longer declares --list as an enum"
    assert tuple(re.findall(r'"(\w+)"', declared.group(1))) == tuple(LISTINGS)
