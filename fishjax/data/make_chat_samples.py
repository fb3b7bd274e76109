"""Write the bundled ``chat_quickstart`` sample: short instructions with one-word answers.

For smoke runs and the quick decoder configs: a few dozen rows a small instruction-tuned
model half knows, so a fine-tune shows its loss falling within minutes on CPU. Four
hand-written templates (nothing is taken from a dataset): sums of two small numbers,
antonyms, plurals and upper-casing a word. ``random.Random(SEED)`` draws 48 training and
16 dev rows without repetition (the splits share no row).

Run ``python -m fishjax.data.make_chat_samples`` to rewrite
``samples/chat_quickstart_{train,dev}.jsonl`` (byte-identical output).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from fishjax.data.make_samples import samples_main, write_splits

SEED = 20261204
TRAIN_ROWS, DEV_ROWS = 48, 16

ANTONYMS = (("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"),
            ("early", "late"), ("light", "dark"), ("open", "closed"), ("full", "empty"),
            ("up", "down"), ("old", "new"), ("wet", "dry"), ("hard", "soft"),
            ("high", "low"), ("rich", "poor"), ("strong", "weak"), ("long", "short"))
PLURALS = (("cat", "cats"), ("box", "boxes"), ("child", "children"), ("mouse", "mice"),
           ("city", "cities"), ("leaf", "leaves"), ("foot", "feet"), ("tooth", "teeth"),
           ("bus", "buses"), ("story", "stories"), ("man", "men"), ("knife", "knives"),
           ("dog", "dogs"), ("baby", "babies"), ("glass", "glasses"), ("wolf", "wolves"))
WORDS = ("apple", "river", "green", "music", "table", "paper", "stone", "cloud", "house",
         "light", "bread", "chair", "ocean", "tiger", "plant", "water")


def candidates() -> list[tuple[str, str]]:
    """Every (prompt, answer) the templates give."""
    rows = [(f"What is {a} plus {b}? Answer with the number only.", str(a + b))
            for a in range(2, 10) for b in range(2, 10)]
    rows += [(f"Give the opposite of the word '{w}'. Answer with one word.", o)
             for w, o in ANTONYMS]
    rows += [(f"What is the plural of '{w}'? Answer with one word.", p) for w, p in PLURALS]
    rows += [(f"Write the word '{w}' in capital letters.", w.upper()) for w in WORDS]
    return rows


def generate(seed: int = SEED) -> dict[str, list[tuple[str, str]]]:
    rows = candidates()
    random.Random(seed).shuffle(rows)
    return {"train": rows[:TRAIN_ROWS], "dev": rows[TRAIN_ROWS:TRAIN_ROWS + DEV_ROWS]}


def render(rows: list[tuple[str, str]]) -> str:
    return "".join(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n"
                   for p, c in rows)


def write_samples(out_dir: Path) -> list[Path]:
    """Write ``chat_quickstart_{train,dev}.jsonl`` into ``out_dir``; returns the paths."""
    return write_splits(out_dir, {k: render(v) for k, v in generate().items()},
                        "chat_quickstart", ".jsonl")


def main(argv: list[str] | None = None) -> None:
    samples_main(__doc__, write_samples, argv)


if __name__ == "__main__":
    main()
