"""An instruction-tuning run on the tiny random decoder: configs/instruct.py with a small
BIG-bench-style mixture, the split record and the generation evaluation in the workdir,
and the evaluation's parts checked against direct computations."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from configs import instruct
from conftest import need_smollm2_and_natural_instructions, write_bigbench_task
from fishjax.data.generation import prompt_text
from fishjax.data.instructions import Mixture
from fishjax.models import load_model, load_tokenizer
from fishjax.models.generate import generate_text
from fishjax.train.instruct_eval import answer_logliks, evaluate_examples, greedy_answers
from fishjax.train.trainer import train_and_evaluate


def tiny_instruct_config(model_dir: str, data_dir: str, cache_dir: str):
    config = instruct.get_config("ni10")
    config.model.name = model_dir
    config.data.cache_dir = cache_dir
    config.data.max_length = 96
    config.data.buckets = (64, 96)
    config.data.instruct.dir = data_dir
    config.data.instruct.tasks = ("t1", "t2")
    config.data.instruct.heldout_tasks = ("t3",)
    config.data.instruct.train_per_task = 8
    config.data.instruct.validation_per_task = 3
    config.data.instruct.test_per_task = 4
    config.data.instruct.instruction = "definition"
    config.instruct_eval.max_new_tokens = 6
    config.instruct_eval.batch_size = 4
    config.train.batch_size = 4
    config.train.eval_batch_size = 4
    config.train.learning_rate = 1e-3
    config.method.name = "full"
    return config


@pytest.fixture
def tiny_tasks(tmp_path):
    for name in ("t1", "t2", "t3"):
        write_bigbench_task(tmp_path / "ni", name, n=16, prefix="Definition: Copy. Prompt: go.")
    return str(tmp_path / "ni")


def test_run_records_its_splits_and_scores_every_split(tiny_decoder_dir, tiny_tasks, tmp_path):
    config = tiny_instruct_config(tiny_decoder_dir, tiny_tasks, str(tmp_path / "cache"))
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(config, workdir)
    record = json.load(open(os.path.join(workdir, "instruct_splits.json")))
    assert record == json.loads(json.dumps(
        Mixture.from_config(config.data.instruct).raw_splits()[1]))
    assert [len(record["rows"]["t1"][s]) for s in ("train", "validation", "test")] == [8, 3, 4]
    scores = json.load(open(os.path.join(workdir, "instruct_eval.json")))
    assert set(scores) == {"validation", "test", "heldout"}
    assert set(scores["heldout"]["tasks"]) == {"t3"} and len(scores["test"]["predictions"]) == 8
    for split, r in scores.items():
        assert results["instruct_eval"][split] == r["macro"]
        assert set(r["macro"]) == {"rougeL", "exact_match", "answer_loglik"}
        assert all(0 <= p["rougeL"] <= 100 and p["answer_loglik"] < 0
                   for p in r["predictions"])


def test_evaluation_parts_match_direct_computations(tiny_decoder_dir, tiny_tasks):
    model = load_model(tiny_decoder_dir, None, key=jax.random.PRNGKey(0))
    tok = load_tokenizer(tiny_decoder_dir)
    m = Mixture.from_config({"dir": tiny_tasks, "tasks": ["t1"], "train_per_task": 0,
                             "validation_per_task": 0, "test_per_task": 5,
                             "instruction": "none"})
    examples = m.splits()["t1"]["test"]
    prompts = [e.prompt for e in examples]
    # Greedy answers in length-sorted, padded batches equal one call per prompt.
    answers, cut = greedy_answers(model.module, model.params, tok, prompts,
                                  prompt_format="chat", max_length=96, max_new_tokens=5,
                                  batch_size=3)
    alone = [generate_text(model.module, model.params, tok, [p], max_new_tokens=5)[0].strip()
             for p in prompts]
    assert answers == alone and cut == 0
    # Log-likelihoods do not depend on the batch they are computed in.
    one = answer_logliks(model.module, model.params, tok, examples, max_length=96,
                         prompt_format="chat", batch_size=1)
    four = answer_logliks(model.module, model.params, tok, examples, max_length=96,
                          prompt_format="chat", batch_size=4)
    np.testing.assert_allclose(one, four, rtol=1e-5)
    # ...and equal the mean log-probability of the answer's tokens and end token.
    text = prompt_text(tok, examples[0].prompt, "chat")
    p_ids = tok(text, add_special_tokens=False)["input_ids"]
    t_ids = [*tok(examples[0].targets[0], add_special_tokens=False)["input_ids"],
             tok.eos_token_id]
    ids = np.array([p_ids + t_ids])
    logits = model.module.apply({"params": model.params}, ids, np.ones_like(ids))
    logp = jax.nn.log_softmax(np.asarray(logits[0], np.float64), axis=-1)
    direct = np.mean([logp[len(p_ids) - 1 + i, t] for i, t in enumerate(t_ids)])
    assert one[0] == pytest.approx(direct, rel=1e-5)
    # A prompt longer than the room left for the answer is cut, and counted.
    _, cut = greedy_answers(model.module, model.params, tok, ["x" * 200], prompt_format="plain",
                            max_length=96, max_new_tokens=5, batch_size=1)
    assert cut == 1
    result = evaluate_examples(model.module, model.params, tok, examples, prompt_format="chat",
                               max_length=96, max_new_tokens=5, batch_size=4)
    assert result["tasks"]["t1"]["examples"] == 5
    assert result["macro"]["answer_loglik"] == pytest.approx(float(np.mean(one)), rel=1e-5)


@pytest.mark.slow
@pytest.mark.integration
def test_quick_config_tunes_smollm2_on_natural_instructions(tmp_path):
    """configs/instruct.py:quick on the real model and data: the run finishes, scores every
    split, and training raises the answers' log-likelihood on the held-back rows."""
    need_smollm2_and_natural_instructions()
    config = instruct.get_config("quick")
    config.data.cache_dir = str(tmp_path / "cache")
    config.method.fisher.num_samples = 16
    config.train.learning_rate = 3e-4
    config.train.eval_before_training = True
    results = train_and_evaluate(config, str(tmp_path / "run"))
    scores = json.load(open(tmp_path / "run" / "instruct_eval.json"))
    assert set(scores) == {"validation", "test", "heldout"}
    assert len(scores["test"]["predictions"]) == 16
    assert results["final_eval"]["loss"] < results["initial_eval"]["loss"]
