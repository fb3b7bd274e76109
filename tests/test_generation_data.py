"""Generation (instruction) data: JSON-lines rows, next-token labels over the target only,
prompts cut from the left with a count, and the one-line errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from benchmarks.common.tiny_model import tiny_byte_tokenizer
from fishjax.data import load_split, make_batch, tokenize_split
from fishjax.data.generation import IGNORE_INDEX, parse_jsonl
from fishjax.data.tasks import DataError, get_task

SPEC = get_task("chat_quickstart")


def _split(rows: str):
    return parse_jsonl(SPEC, "train", rows.encode(), "rows.jsonl")


def test_labels_cover_the_target_and_its_end_token_only():
    tok = tiny_byte_tokenizer()
    raw = _split('{"prompt": "ab", "completion": "xyz"}\n\n{"prompt": "c", "completion": "q"}\n')
    for fmt in ("chat", "plain"):
        ds = tokenize_split(raw, tok, max_length=40, buckets=(40,), prompt_format=fmt)
        for row, target in enumerate(("xyz", "q")):
            n = int(ds.lengths[row])
            ids, labels = ds.input_ids[row, :n], ds.labels[row]
            kept = labels[labels != IGNORE_INDEX]
            assert tok.decode(kept) == target + tok.eos_token
            # each label is the next input token
            t = np.flatnonzero(labels != IGNORE_INDEX)
            np.testing.assert_array_equal(labels[t], ids[t + 1])
            assert t[-1] == n - 2 and (labels[n - 1:] == IGNORE_INDEX).all()
        if fmt == "plain":
            assert tok.decode(ds.input_ids[0, :ds.lengths[0]]) == "abxyz" + tok.eos_token
    batch = make_batch(ds, np.array([0]), 40, 3)
    assert (batch["labels"][1:] == IGNORE_INDEX).all()  # padding rows


def test_long_prompts_are_cut_from_the_left_and_counted(caplog):
    tok = tiny_byte_tokenizer()
    raw = _split('{"prompt": "0123456789", "completion": "ab"}\n'
                 '{"prompt": "x", "completion": "cd"}\n')
    with caplog.at_level(logging.WARNING):
        ds = tokenize_split(raw, tok, max_length=8, buckets=(8,), prompt_format="plain")
    assert "1 of 2 prompts cut from the left" in caplog.text
    assert tok.decode(ds.input_ids[0]) == "56789ab" + tok.eos_token  # the prompt's end kept
    with pytest.raises(DataError, match="row 0: the target is 4 tokens"):
        tokenize_split(_split('{"prompt": "p", "completion": "abc"}\n'), tok, max_length=4,
                       buckets=(4,), prompt_format="plain")


def test_long_targets_cut_are_counted_and_keep_one_prompt_token(caplog, tmp_path):
    tok = tiny_byte_tokenizer()
    raw = _split('{"prompt": "pq", "completion": "abcdef"}\n{"prompt": "x", "completion": "y"}\n')
    with caplog.at_level(logging.WARNING):
        ds = tokenize_split(raw, tok, max_length=4, buckets=(4,), prompt_format="plain",
                            long_targets="cut", cache_dir=str(tmp_path))
    assert "1 of 2 targets cut at the end" in caplog.text
    assert tok.decode(ds.input_ids[0]) == "qabc"  # one prompt token, the target's start
    assert tok.decode(ds.labels[0][ds.labels[0] != IGNORE_INDEX]) == "abc"
    # the cut split is cached under its own key: the strict one still refuses the row
    with pytest.raises(DataError, match="row 0: the target is 7 tokens"):
        tokenize_split(raw, tok, max_length=4, buckets=(4,), prompt_format="plain",
                       cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="long_targets must be one of"):
        tokenize_split(raw, tok, max_length=4, buckets=(4,), prompt_format="plain",
                       long_targets="drop")


@pytest.mark.parametrize("rows, message", [
    ('{"prompt": "p"}\n', "rows.jsonl:1: a row needs string fields"),
    ('{"prompt": "p", "completion": "a"}\nnot json\n', "rows.jsonl:2: not a JSON object"),
    ('{"prompt": "p", "completion": " "}\n', "rows.jsonl:1: empty answer"),
    ("\n\n", "rows.jsonl: no rows"),
])
def test_bad_rows_are_one_line_errors(rows, message):
    with pytest.raises(DataError) as e:
        _split(rows)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_bundled_sample_loads_and_a_chat_format_needs_a_template():
    raw = load_split("chat_quickstart", "dev")
    assert len(raw) == 16 and all(raw.text_b)
    tok = tiny_byte_tokenizer()
    tok.chat_template = None
    with pytest.raises(DataError, match="has no chat template"):
        tokenize_split(raw, tok, max_length=96, buckets=(96,), prompt_format="chat")


def test_a_generation_split_reads_chat_rows_and_trains_on_the_first_answer():
    raw = _split('{"messages": [{"role": "user", "content": "hi?"}, '
                 '{"role": "assistant", "content": "yo"}]}\n'
                 '{"prompt": "p", "completion": ["first", "second"]}\n')
    assert raw.text_a == ["hi?", "p"] and raw.text_b == ["yo", "first"]
    assert raw.fingerprint.startswith("sha256:") and raw.task == SPEC.name
