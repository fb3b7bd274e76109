"""Scores of generated text against acceptable answers, as Natural Instructions scores them.

- ROUGE-L: the F-measure of the longest common subsequence of words, from the
  `rouge-score` package with its default tokenizer and the Porter stemmer (Natural
  Instructions' official metric), the best over the acceptable answers, x100.
- Exact match: 100 if the answer equals any acceptable answer after SQuAD's normalisation
  (lower case, punctuation and the articles a/an/the removed, whitespace collapsed), else 0.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence

from rouge_score import rouge_scorer

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@functools.cache
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation (module docstring)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """100.0 if `prediction` matches any of `answers` after normalisation, else 0.0."""
    p = normalize_answer(prediction)
    return 100.0 * any(p == normalize_answer(a) for a in answers)


def rouge_l(prediction: str, answers: Sequence[str]) -> float:
    """The best ROUGE-L F-measure of `prediction` against any of `answers`, x100."""
    if not answers:
        raise ValueError("no answers to score against")
    return 100.0 * max(_scorer().score(a, prediction)["rougeL"].fmeasure for a in answers)
