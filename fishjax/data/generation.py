"""Text-to-text (instruction) data for causal language models: (prompt, target) rows from
JSON lines, tokenized into next-token labels over the target only.

A generation task's raw split (`RawSplit`) holds the prompts in `text_a` and the target texts
in `text_b` (its `labels` are unused zeros). Tokenizing one row:
- the prompt is wrapped by the tokenizer's chat template (`prompt_format="chat"`: one user
  message, then the assistant header) or used as is (`"plain"`: the tokenizer's own special
  tokens, e.g. a BOS, are added); the target follows, then the end-of-sequence token, so the
  model learns to stop;
- `labels[t]` is the id at t + 1 where that token belongs to the target (and the final end
  token), `IGNORE_INDEX` (-100, as Hugging Face) everywhere else, so the loss and the
  metrics see only what the model should write;
- a row longer than `max_length` loses tokens from the start of its prompt (counted and
  logged, never silent); a target that cannot fit with at least one prompt token is a
  DataError naming the row (`long_targets="error"`), or, with `long_targets="cut"`, loses
  its end (and its end token) so that one prompt token fits: counted and logged.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fishjax.data.instructions import parse_jsonl as parse_examples
from fishjax.data.raw_split import RawSplit
from fishjax.data.tasks import DataError, TaskSpec

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label of a position the loss ignores (Hugging Face's value)
PROMPT_FORMATS = ("chat", "plain")
LONG_TARGETS = ("error", "cut")
DEFAULT_PROMPT_FORMAT = "chat"  # what `config.data.prompt_format=None` means


def parse_jsonl(spec: TaskSpec, split: str, data: bytes, source: str) -> RawSplit:
    """A generation split of JSONL rows: `{"prompt": str, "completion": str}` or a chat row
    (`fishjax.data.instructions.parse_jsonl`: the one reader); a row with several
    acceptable completions trains on the first. A bad row is a DataError naming its line."""
    examples = parse_examples(data, source, spec.name)
    digest = hashlib.sha256(data).hexdigest()[:16]
    return RawSplit(task=spec.name, split=split, text_a=[e.prompt for e in examples],
                    text_b=[e.targets[0] for e in examples],
                    labels=np.zeros(len(examples), np.int32), source=source,
                    fingerprint=f"sha256:{digest}")


def prompt_text(tokenizer: Any, prompt: str, prompt_format: str) -> str:
    """The text the model reads before the target (module docstring)."""
    if prompt_format == "plain":
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("prompt_format='chat' but the tokenizer has no chat template (use "
                        "data.prompt_format='plain')")
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                         tokenize=False, add_generation_prompt=True)


def encode_rows(raw: RawSplit, tokenizer: Any, max_length: int, prompt_format: str,
                long_targets: str = "error") -> tuple[list[list[int]], list[int]]:
    """(token ids of each row, where its target starts); prompts cut from the left where a
    row is too long, targets that leave no room for a prompt as `long_targets` says
    (module docstring)."""
    if prompt_format not in PROMPT_FORMATS:
        raise DataError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    if long_targets not in LONG_TARGETS:
        raise DataError(f"long_targets must be one of {LONG_TARGETS}, got {long_targets!r}")
    if raw.text_b is None or any(t is None for t in raw.text_b):
        raise DataError(f"{raw.source}: a generation split needs a target for every row")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no end-of-sequence token (eos_token_id is None)")
    prompts = tokenizer([prompt_text(tokenizer, p, prompt_format) for p in raw.text_a],
                        add_special_tokens=prompt_format == "plain")["input_ids"]
    targets = tokenizer(list(raw.text_b), add_special_tokens=False)["input_ids"]
    rows, starts, cut, cut_targets = [], [], 0, 0
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        t = [*t, eos]
        room = max_length - len(t)
        if room < 1 and long_targets == "cut":
            t, room, cut_targets = t[:max_length - 1], 1, cut_targets + 1
        elif room < 1:
            raise DataError(f"{raw.source}: row {i}: the target is {len(t)} tokens with its "
                            f"end token, no room for a prompt within max_length={max_length}")
        if len(p) > room:
            p, cut = p[len(p) - room:], cut + 1
        rows.append([*p, *t])
        starts.append(len(p))
    if cut:
        logger.warning("%s: %d of %d prompts cut from the left to fit max_length=%d",
                       raw.source, cut, len(rows), max_length)
    if cut_targets:
        logger.warning("%s: %d of %d targets cut at the end (their end token too) to fit "
                       "max_length=%d", raw.source, cut_targets, len(rows), max_length)
    return rows, starts


def token_labels(rows: list[list[int]], starts: list[int], max_length: int) -> np.ndarray:
    """Next-token labels [N, max_length] (int32): the next id at target positions, else
    `IGNORE_INDEX`."""
    labels = np.full((len(rows), max_length), IGNORE_INDEX, np.int32)
    for i, (ids, start) in enumerate(zip(rows, starts, strict=True)):
        labels[i, start - 1:len(ids) - 1] = ids[start:]
    return labels


def load_jsonl_file(spec: TaskSpec, split: str, path: Path) -> RawSplit:
    if not path.is_file():
        raise DataError(f"task {spec.name!r}: data file {path} not found; the data folder "
                        f"should hold {', '.join(f'{s}.jsonl' for s in spec.splits)}")
    return parse_jsonl(spec, split, path.read_bytes(), str(path))
