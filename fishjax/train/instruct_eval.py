"""Instruction-following evaluation of a decoder: greedy answers scored by ROUGE-L and exact
match against every acceptable answer (`fishjax.data.text_metrics`), and the mean
log-likelihood of the reference (first) answer's tokens and end token given the prompt
(cheap: one forward pass, no generation); per task, then the macro average over tasks.

Prompts go through the same formatting as training (`data.prompt_format`). Generation is
batched in prompts of similar length, left-padded to a multiple of `PROMPT_ROUNDING`
tokens (few compiled shapes), with at most `max_new_tokens` new tokens and the tokenizer's
end token as the stop; a prompt longer than `max_length - max_new_tokens` loses tokens
from its start (counted in the result). A batch is filled with copies of its last prompt
so every call has the same batch size.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.data.generation import prompt_text
from fishjax.data.instructions import Example, Mixture, to_raw_split
from fishjax.data.pipeline import epoch_plan, make_batch, tokenize_split
from fishjax.data.text_metrics import exact_match, rouge_l
from fishjax.models.generate import generate, left_padded
from fishjax.objectives import CausalLanguageModeling

log = logging.getLogger(__name__)

PROMPT_ROUNDING = 64
METRICS = ("rougeL", "exact_match", "answer_loglik")
INSTRUCT_EVAL_FILE = "instruct_eval.json"  # a run's answers and scores, in its workdir


def answer_logliks(module: Any, params: Any, tokenizer: Any, examples: Sequence[Example], *,
                   max_length: int, prompt_format: str, batch_size: int) -> np.ndarray:
    """Each example's mean log-likelihood per reference-answer token [N]."""
    ds = tokenize_split(to_raw_split(examples, "eval", "eval"), tokenizer,
                        max_length=max_length, buckets=_buckets(max_length),
                        prompt_format=prompt_format)
    out = np.zeros(len(examples), np.float64)
    for indices, width in epoch_plan(ds, batch_size, seed=0, epoch=0, shuffle=False):
        b = make_batch(ds, indices, width, batch_size)
        values = _logliks(module, params, jnp.asarray(b["input_ids"]),
                          jnp.asarray(b["attention_mask"]), jnp.asarray(b["labels"]))
        out[indices] = np.asarray(values)[:len(indices)]
    return out


@functools.partial(jax.jit, static_argnums=0)
def _logliks(module: Any, params: Any, input_ids: jax.Array, attention_mask: jax.Array,
             labels: jax.Array) -> jax.Array:
    """One compiled program per module and shape (not per call)."""
    outputs = module.apply({"params": params}, input_ids, attention_mask)
    return -CausalLanguageModeling().per_example_loss(outputs, {"labels": labels})


def _buckets(max_length: int) -> tuple[int, ...]:
    return tuple(sorted({*range(PROMPT_ROUNDING, max_length, PROMPT_ROUNDING), max_length}))


def greedy_answers(module: Any, params: Any, tokenizer: Any, prompts: Sequence[str], *,
                   prompt_format: str, max_length: int, max_new_tokens: int,
                   batch_size: int) -> tuple[list[str], int]:
    """(the decoded greedy answer to each prompt, how many prompts were cut to fit)."""
    texts = [prompt_text(tokenizer, p, prompt_format) for p in prompts]
    tokens = tokenizer(texts, add_special_tokens=prompt_format == "plain")["input_ids"]
    room = max_length - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt "
                         f"within max_length={max_length}")
    cut = sum(len(t) > room for t in tokens)
    tokens = [t[-room:] for t in tokens]
    stop = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop
    order = np.argsort([len(t) for t in tokens], kind="stable")
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = list(order[start:start + batch_size])
        batch = [tokens[i] for i in rows] + [tokens[rows[-1]]] * (batch_size - len(rows))
        ids, mask = left_padded(batch, pad)
        width = -(-ids.shape[1] // PROMPT_ROUNDING) * PROMPT_ROUNDING
        extra = min(width, room) - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (extra, 0)), constant_values=pad)
        mask = np.pad(mask, ((0, 0), (extra, 0)))
        out = generate(module, params, ids, mask, max_new_tokens=max_new_tokens,
                       stop_id=stop, pad_id=pad)
        for i, row in zip(rows, out, strict=False):
            row = list(row)
            answers[i] = tokenizer.decode(row[:row.index(stop)] if stop in row else row,
                                          skip_special_tokens=True).strip()
    return answers, cut


def evaluate_examples(module: Any, params: Any, tokenizer: Any, examples: Sequence[Example],
                      *, prompt_format: str, max_length: int, max_new_tokens: int,
                      batch_size: int) -> dict[str, Any]:
    """Per-task and macro-averaged ROUGE-L, exact match and answer log-likelihood of
    `examples`, with each example's answer (`predictions`)."""
    t0 = time.perf_counter()
    answers, cut = greedy_answers(module, params, tokenizer, [e.prompt for e in examples],
                                  prompt_format=prompt_format, max_length=max_length,
                                  max_new_tokens=max_new_tokens, batch_size=batch_size)
    logliks = answer_logliks(module, params, tokenizer, examples, max_length=max_length,
                             prompt_format=prompt_format, batch_size=batch_size)
    per_example = [{"task": e.task, "row": e.row, "answer": a,
                    "rougeL": rouge_l(a, e.targets), "exact_match": exact_match(a, e.targets),
                    "answer_loglik": float(ll)}
                   for e, a, ll in zip(examples, answers, logliks, strict=True)]
    tasks: dict[str, dict[str, float]] = {}
    for task in dict.fromkeys(e.task for e in examples):
        rows = [r for r in per_example if r["task"] == task]
        tasks[task] = {m: float(np.mean([r[m] for r in rows])) for m in METRICS}
        tasks[task]["examples"] = len(rows)
    macro = {m: float(np.mean([t[m] for t in tasks.values()])) for m in METRICS}
    log.info("evaluated %d examples of %d tasks in %.0f s: %s", len(examples), len(tasks),
             time.perf_counter() - t0, macro)
    return {"macro": macro, "tasks": tasks, "prompts_cut": cut,
            "seconds": time.perf_counter() - t0, "predictions": per_example}


EVAL_SPLITS = ("validation", "test", "heldout")


def mixture_examples(mixture: Mixture, split: str,
                     splits: dict[str, dict[str, list[Example]]] | None = None,
                     tasks: Sequence[str] | None = None) -> list[Example]:
    """A mixture's evaluation rows: "validation" / "test" of its trained tasks, or
    "heldout": the test rows of the tasks it never trains on (`splits`: the mixture's
    `splits()`, if already read; `tasks`: only these of them, None: all)."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown evaluation split {split!r} ({', '.join(EVAL_SPLITS)})")
    splits = mixture.splits() if splits is None else splits
    names = mixture.heldout_tasks if split == "heldout" else mixture.tasks
    if tasks is not None:
        names = [t for t in names if t in tasks]
    return [e for t in names for e in splits[t]["test" if split == "heldout" else split]]


def evaluate_mixture(module: Any, params: Any, tokenizer: Any, mixture: Mixture, *,
                     splits: Sequence[str], tasks: Sequence[str] | None = None,
                     **kw: Any) -> dict[str, Any]:
    """`evaluate_examples` on each of `splits` of the mixture (empty ones skipped; `tasks`:
    only these tasks' rows, None: every task's)."""
    unknown = sorted(set(tasks or ()) - {*mixture.tasks, *mixture.heldout_tasks})
    if unknown:
        raise ValueError(f"instruct_eval.tasks: {unknown} are not tasks of the mixture")
    params = jax.device_put(params)  # once: host arrays would be copied in at every call
    rows = mixture.splits()  # the task files read once for every split
    out = {}
    for split in splits:
        examples = mixture_examples(mixture, split, rows, tasks)
        if examples:
            out[split] = evaluate_examples(module, params, tokenizer, examples, **kw)
    return out
