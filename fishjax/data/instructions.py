"""Instruction data: examples of (prompt, acceptable answers) read from BIG-bench `task.json`
files (Natural Instructions v1 ships in that format), prompt/completion JSON lines and
chat JSON lines; seeded per-task splits; capped multi-task mixtures.

- A BIG-bench task gives its instruction in `task_prefix` and `examples` of `input` and
  `target` (a string or a list of acceptable strings). The prompt is the instruction, a
  blank line, then the input. `instruction` chooses how much of a Natural Instructions
  prefix is kept: "full" (all of it), "definition" (only its "Definition:" part, the
  instruction encoding Super-NaturalInstructions trains with by default; the "Things to
  Avoid", "Emphasis/Caution" and "Prompt" parts dropped) or "none" (the input alone).
- Prompt/completion JSONL: `{"prompt", "completion"}` per line (`completion` may also be a
  list of acceptable answers).
- Chat JSONL, one conversation per line: `{"messages": [{"role", "content"}, ...]}`,
  ShareGPT's `{"conversations": [{"from", "value"}, ...]}` or Alpaca's `{"instruction",
  "input", "output"}`. A conversation is one optional system turn, one user turn and the
  assistant's answer (the system text goes before the user's, a blank line between);
  longer conversations are a DataError naming the line (one (prompt, answer) pair per row).

Every example's first answer is the one trained on; evaluation accepts any of them.
Splits are drawn per task with a seed that depends on the split seed and the task's name
only, test rows first, then validation, then training: a larger training cap never moves
a test row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fishjax.data.raw_split import RawSplit
from fishjax.data.tasks import DataError

INSTRUCTION_MODES = ("full", "definition", "none")
SPLITS = ("train", "validation", "test")
BIGBENCH_FILE = "task.json"


@dataclasses.dataclass(frozen=True)
class Example:
    """One instruction example: its task, the prompt, the acceptable answers (the first is
    trained on) and its row in the source file."""

    task: str
    prompt: str
    targets: tuple[str, ...]
    row: int


def _answers(value: Any, where: str) -> tuple[str, ...]:
    answers = (value,) if isinstance(value, str) else value
    if (not isinstance(answers, list | tuple) or not answers
            or not all(isinstance(a, str) for a in answers)):
        raise DataError(f"{where}: an answer must be a string or a non-empty list of strings")
    if not answers[0].strip():
        raise DataError(f"{where}: empty answer")
    return tuple(answers)


def instruction_text(task_prefix: str, mode: str) -> str:
    """The part of a Natural Instructions `task_prefix` that `mode` keeps (module
    docstring); a prefix without a "Definition:" part is kept whole in "definition" mode."""
    if mode not in INSTRUCTION_MODES:
        raise DataError(f"instruction must be one of {INSTRUCTION_MODES}, got {mode!r}")
    if mode == "none":
        return ""
    text = task_prefix.strip()
    if mode == "definition" and text.startswith("Definition:"):
        text = re.split(r"\s+(?:Things to Avoid:|Emphasis\s*&?/?\s*Caution:|Prompt:)", text,
                        maxsplit=1)[0]
        text = text[len("Definition:"):].strip()
    return text


def read_bigbench_task(path: str | Path, instruction: str = "full") -> list[Example]:
    """The examples of one BIG-bench `task.json` (a file, or the folder holding it); the
    task is named by its `name` field, else its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / BIGBENCH_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except ValueError as e:
        raise DataError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise DataError(f"{path}: not a BIG-bench task (no 'examples' list)")
    name = data.get("name") or path.parent.name
    prefix = instruction_text(str(data.get("task_prefix", "")), instruction)
    out = []
    for i, ex in enumerate(data["examples"]):
        where = f"{path}: example {i}"
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
            raise DataError(f"{where}: needs a string 'input'")
        prompt = f"{prefix}\n\n{ex['input']}" if prefix else ex["input"]
        out.append(Example(name, prompt, _answers(ex.get("target"), where), i))
    if not out:
        raise DataError(f"{path}: no examples")
    return out


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
          "system": "system"}


def _conversation(row: dict[str, Any], where: str) -> tuple[str, str]:
    """(prompt, answer) of a chat row in any of the three shapes (module docstring)."""
    if "instruction" in row and "output" in row:  # Alpaca
        parts = [row["instruction"], row.get("input") or ""]
        if not all(isinstance(p, str) for p in parts) or not isinstance(row["output"], str):
            raise DataError(f"{where}: Alpaca fields must be strings")
        return "\n\n".join(p for p in parts if p.strip()), row["output"]
    turns = row.get("messages", row.get("conversations"))
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: a chat row needs 'messages', 'conversations' or Alpaca's "
                        "'instruction'/'output'")
    pairs = []
    for t in turns:
        role = _ROLES.get(str(t.get("role", t.get("from"))).lower()) if isinstance(
            t, dict) else None
        text = t.get("content", t.get("value")) if isinstance(t, dict) else None
        if role is None or not isinstance(text, str):
            raise DataError(f"{where}: each turn needs a role (system/user/assistant) and text")
        pairs.append((role, text))
    roles = [r for r, _ in pairs]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise DataError(f"{where}: turns {roles}: a row must be [system,] user, assistant "
                        "(one prompt and its answer)")
    prompt = "\n\n".join(text for _, text in pairs[:-1] if text.strip())
    return prompt, pairs[-1][1]


def read_jsonl(path: str | Path, task: str | None = None) -> list[Example]:
    """Examples of a JSONL file of prompt/completion rows or chat rows (module docstring);
    the task is named `task`, else by the file's stem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    return parse_jsonl(data, str(path), task or path.stem)


def parse_jsonl(data: bytes, source: str, task: str) -> list[Example]:
    """Examples of JSONL bytes, one prompt/completion or chat row per line (blank lines
    skipped; module docstring); a bad row is a DataError naming `source` and its line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 ({e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{where}: not a JSON object ({e})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: not a JSON object")
        if "prompt" in row or "completion" in row:
            if not isinstance(row.get("prompt"), str) or "completion" not in row:
                raise DataError(f"{where}: a row needs string fields 'prompt' and "
                                "'completion' (or a chat row's 'messages')")
            prompt, answers = row["prompt"], _answers(row["completion"], where)
        else:
            prompt, answer = _conversation(row, where)
            answers = _answers(answer, where)
        out.append(Example(task, prompt, answers, n - 1))
    if not out:
        raise DataError(f"{source}: no rows")
    return out


def read_task(source: str | Path, instruction: str = "full") -> list[Example]:
    """A task's examples from a BIG-bench folder or `task.json`, or a `.jsonl` file."""
    source = Path(source)
    if source.suffix == ".jsonl":
        return read_jsonl(source)
    if source.is_dir() or source.name == BIGBENCH_FILE:
        return read_bigbench_task(source, instruction)
    raise DataError(f"{source}: not a task folder, {BIGBENCH_FILE} or .jsonl file")


def _task_seed(seed: int, task: str) -> int:
    digest = hashlib.sha256(f"{seed}:{task}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def split_task(examples: Sequence[Example], *, train: int | None, validation: int, test: int,
               seed: int) -> dict[str, list[Example]]:
    """One task's examples split into `test`, `validation` and up to `train` rows (None:
    all the rest), drawn in that order from a permutation seeded by `seed` and the task's
    name; each split keeps its rows in file order."""
    if not examples:
        raise DataError("no examples to split")
    if min(validation, test) < 0 or (train is not None and train < 0):
        raise DataError("split sizes must be >= 0")
    if validation + test > len(examples):
        raise DataError(f"task {examples[0].task!r}: {len(examples)} examples, fewer than "
                        f"validation {validation} + test {test}")
    order = np.random.default_rng(_task_seed(seed, examples[0].task)).permutation(len(examples))
    test_rows, rest = order[:test], order[test:]
    val_rows, rest = rest[:validation], rest[validation:]
    train_rows = rest if train is None else rest[:train]
    return {name: [examples[i] for i in sorted(rows)] for name, rows in
            (("train", train_rows), ("validation", val_rows), ("test", test_rows))}


def split_record(splits: dict[str, dict[str, list[Example]]]) -> dict[str, Any]:
    """{task: {split: [source rows]}}: what a workdir records of a mixture's splits."""
    return {task: {name: [e.row for e in rows] for name, rows in by_split.items()}
            for task, by_split in splits.items()}


def to_raw_split(examples: Sequence[Example], task: str, split: str) -> RawSplit:
    """Examples as a generation split (prompts, first answers) for the tokenizer."""
    if not examples:
        raise DataError(f"{task}: split {split!r} is empty")
    body = json.dumps([[e.task, e.row, e.prompt, e.targets] for e in examples]).encode()
    return RawSplit(task=task, split=split, text_a=[e.prompt for e in examples],
                    text_b=[e.targets[0] for e in examples],
                    labels=np.zeros(len(examples), np.int32),
                    source=f"{task}:{split}",
                    fingerprint="sha256:" + hashlib.sha256(body).hexdigest()[:16])


@dataclasses.dataclass(frozen=True)
class Mixture:
    """A multi-task instruction mixture (`config.data.instruct`): `tasks` are trained on
    and evaluated on their own held-back rows; `heldout_tasks` are only tested (tasks the
    model never sees in training). A task is a folder under `dir` (BIG-bench), or a path
    to a task folder, `task.json` or `.jsonl` file."""

    dir: str | None
    tasks: tuple[str, ...]
    heldout_tasks: tuple[str, ...] = ()
    train_per_task: int | None = None
    validation_per_task: int = 0
    test_per_task: int = 0
    instruction: str = "full"
    split_seed: int = 0

    @classmethod
    def from_config(cls, c: Any) -> Mixture:
        if c is None:
            raise DataError("task 'instruct' needs config.data.instruct (configs/instruct.py)")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(c.keys()) - fields)
        if unknown:
            raise DataError(f"config.data.instruct: unknown fields {unknown}")
        d = dict(c.items())
        for k in ("tasks", "heldout_tasks"):
            if k in d:
                d[k] = tuple(d[k] or ())
        m = cls(**d)
        if not m.tasks:
            raise DataError("config.data.instruct.tasks is empty")
        overlap = set(m.tasks) & set(m.heldout_tasks)
        if overlap:
            raise DataError(f"config.data.instruct: {sorted(overlap)} both trained on and "
                            "held out")
        return m

    def path(self, task: str) -> Path:
        p = Path(task)
        if self.dir is not None and not p.is_absolute() and not p.exists():
            p = Path(self.dir) / task
        if not p.exists():
            raise DataError(f"instruction task {task!r}: {p} not found")
        return p

    def splits(self) -> dict[str, dict[str, list[Example]]]:
        """{task: {"train", "validation", "test": examples}}; held-out tasks have test rows
        only."""
        out = {}
        for task in self.tasks:
            out[task] = split_task(read_task(self.path(task), self.instruction),
                                   train=self.train_per_task,
                                   validation=self.validation_per_task,
                                   test=self.test_per_task, seed=self.split_seed)
        for task in self.heldout_tasks:
            out[task] = split_task(read_task(self.path(task), self.instruction), train=0,
                                   validation=0, test=self.test_per_task,
                                   seed=self.split_seed)
        return out

    def raw_splits(self, name: str = "instruct") -> tuple[dict[str, RawSplit], dict[str, Any]]:
        """(the trained tasks' train and validation rows as generation splits, the split
        record); test rows stay out of training runs (`splits()` gives them)."""
        splits = self.splits()
        raw = {s: to_raw_split([e for t in self.tasks for e in splits[t][s]], name, s)
               for s in ("train", "validation") if any(splits[t][s] for t in self.tasks)}
        return raw, {"mixture": dataclasses.asdict(self), "rows": split_record(splits)}
