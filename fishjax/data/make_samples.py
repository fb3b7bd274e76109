"""Write the bundled ``quickstart`` sample: short product reviews labelled by sentiment.

The sentences come from hand-written templates and word lists (nothing is taken from a
dataset). Five templates, equally represented in each label:

* plain:       "The kettle is really wonderful."
* verb:        "I regret buying this lamp."
* outcome:     "The printer broke after two days."
* negation:    "The album is not boring at all."         (label flips the adjective's)
* contrast:    "The tent looked cheap, but it works perfectly."  (label from the 2nd clause)

Negation defeats word lookup: a unigram bag-of-words logistic regression reaches about 78%
on dev and is at chance on the negations, while a linear probe on frozen mean-pooled MiniLM
features already reaches about 97% (94% on the negations). 400 sentences per label are
drawn without repetition with ``random.Random(SEED)`` (whose ``shuffle`` is stable across
Python versions); 100 per label go to dev and 300 to train, so the splits share no sentence.

Run ``python -m fishjax.data.make_samples`` to rewrite ``samples/quickstart_{train,dev}.tsv``
(byte-identical output); ``--out-dir`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Iterator
from pathlib import Path

SEED = 20240611
PER_LABEL = 400
DEV_PER_LABEL = 100
LABELS = ("negative", "positive")  # label ids 0 and 1, as in the 'quickstart' TaskSpec

NOUNS = (
    "movie", "film", "novel", "album", "phone", "laptop", "blender", "kettle",
    "backpack", "jacket", "camera", "printer", "hotel room", "restaurant", "game",
    "keyboard", "lamp", "chair", "watch", "tent", "show", "toaster", "speaker", "mattress",
)
ADVERBS = ("", "really ", "truly ", "very ", "quite ", "absolutely ", "pretty ")
# Index 0: negative words, index 1: positive words.
ADJECTIVES = (
    ("terrible", "awful", "disappointing", "boring", "dreadful", "poor", "horrible",
     "useless", "annoying", "mediocre", "frustrating", "flimsy"),
    ("great", "wonderful", "excellent", "fantastic", "delightful", "superb", "lovely",
     "brilliant", "impressive", "enjoyable", "reliable", "outstanding"),
)
VERBS = (
    ("hate", "regret buying", "returned", "can't stand", "dislike", "am unhappy with"),
    ("love", "adore", "really like", "highly recommend", "enjoy", "am happy with"),
)
OUTCOMES = (
    ("broke after two days", "was a waste of money", "stopped working quickly",
     "fell apart in a week", "never worked properly", "bored me to tears",
     "is a pain to use", "left me disappointed"),
    ("works perfectly", "exceeded my expectations", "was worth every penny",
     "made my whole week", "still works like new", "arrived quickly and works well",
     "kept me entertained", "is a joy to use"),
)
LOOKS = (
    ("cheap", "ugly", "plain", "boring", "odd"),
    ("nice", "promising", "great", "fancy", "solid"),
)


def _templates(label: int) -> list[Iterator[str]]:
    """One generator of all sentences per template for ``label`` (0 negative, 1 positive)."""
    other = 1 - label
    return [
        (f"The {n} is {a}{j}." for n in NOUNS for a in ADVERBS for j in ADJECTIVES[label]),
        (f"I {v} this {n}." for n in NOUNS for v in VERBS[label]),
        (f"The {n} {o}." for n in NOUNS for o in OUTCOMES[label]),
        (f"The {n} is not {j} at all." for n in NOUNS for j in ADJECTIVES[other]),
        (f"The {n} looked {lk}, but it {o}." for n in NOUNS for lk in LOOKS[other]
         for o in OUTCOMES[label]),
    ]


def generate(seed: int = SEED) -> dict[str, list[tuple[str, str]]]:
    """The train and dev rows as (sentence, label name), each split shuffled."""
    rng = random.Random(seed)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "dev": []}
    for label, name in enumerate(LABELS):
        pools = [list(t) for t in _templates(label)]
        per_template = PER_LABEL // len(pools)
        chosen: list[str] = []
        for pool in pools:
            rng.shuffle(pool)
            chosen.extend(pool[:per_template])
        rng.shuffle(chosen)
        splits["dev"] += [(s, name) for s in chosen[:DEV_PER_LABEL]]
        splits["train"] += [(s, name) for s in chosen[DEV_PER_LABEL:]]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def render(rows: list[tuple[str, str]]) -> str:
    """TSV text with a ``sentence\\tlabel`` header and LF line endings."""
    return "".join(f"{s}\t{label}\n" for s, label in [("sentence", "label"), *rows])


def write_splits(out_dir: Path, splits: dict[str, str], name: str, suffix: str) -> list[Path]:
    """Writes each split's text as `<name>_<split><suffix>` into `out_dir` (UTF-8, created
    if needed); returns the paths. Shared by the bundled samples' generators."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, text in splits.items():
        path = out_dir / f"{name}_{split}{suffix}"
        path.write_bytes(text.encode("utf-8"))
        paths.append(path)
    return paths


def write_samples(out_dir: Path) -> list[Path]:
    """Write ``quickstart_{train,dev}.tsv`` into ``out_dir``; returns the paths."""
    return write_splits(out_dir, {k: render(v) for k, v in generate().items()}, "quickstart",
                        ".tsv")


def samples_main(doc: str, write: Callable[[Path], list[Path]],
                 argv: list[str] | None = None) -> None:
    """The command line of a sample generator: `--out-dir` (default: the package's
    samples/), then `write(out_dir)`; prints the paths written."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "samples",
                        help="folder to write into (default: the package's samples/)")
    for path in write(parser.parse_args(argv).out_dir):
        print(path)


def main(argv: list[str] | None = None) -> None:
    samples_main(__doc__, write_samples, argv)


if __name__ == "__main__":
    main()
