"""Instruction data (fishjax.data.instructions) and answer scores (fishjax.data.text_metrics):
readers of BIG-bench task.json, prompt/completion and chat JSONL; seeded per-task splits;
mixtures; ROUGE-L and exact match against hand-computed values."""

from __future__ import annotations

import json
import os

import pytest

from conftest import BIGBENCH_PREFIX as PREFIX
from conftest import write_bigbench_task
from fishjax.data.instructions import (
    Mixture,
    instruction_text,
    read_bigbench_task,
    read_jsonl,
    read_task,
    split_task,
    to_raw_split,
)
from fishjax.data.tasks import DataError
from fishjax.data.text_metrics import exact_match, normalize_answer, rouge_l

NI_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                      "natural_instructions")
def test_bigbench_prompts_answers_and_instruction_modes(tmp_path):
    write_bigbench_task(tmp_path, "t1", n=4)
    full = read_bigbench_task(tmp_path / "t1", "full")
    assert full[0].prompt == PREFIX + "\n\nquestion 0?"
    assert full[0].targets == ("answer 0",) and full[1].targets == ("answer 1", "alt 1")
    assert [e.row for e in full] == [0, 1, 2, 3] and {e.task for e in full} == {"t1"}
    definition = read_task(tmp_path / "t1" / "task.json", "definition")
    assert definition[0].prompt == "Write the answer. Keep it short.\n\nquestion 0?"
    assert read_bigbench_task(tmp_path / "t1", "none")[2].prompt == "question 2?"
    assert instruction_text("No definition here.", "definition") == "No definition here."
    with pytest.raises(DataError, match="instruction must be one of"):
        instruction_text(PREFIX, "short")


@pytest.mark.parametrize("body, message", [
    ("not json", "not JSON"),
    (json.dumps({"examples": []}), "no examples"),
    (json.dumps({"name": "x"}), "no 'examples' list"),
    (json.dumps({"examples": [{"input": "q", "target": []}]}), "example 0: an answer"),
    (json.dumps({"examples": [{"target": "a"}]}), "example 0: needs a string 'input'"),
])
def test_bad_task_files_are_one_line_errors(tmp_path, body, message):
    (tmp_path / "task.json").write_text(body)
    with pytest.raises(DataError, match=message):
        read_bigbench_task(tmp_path)


def test_jsonl_rows_of_every_shape(tmp_path):
    rows = [
        {"prompt": "p1", "completion": "c1"},
        {"prompt": "p2", "completion": ["c2", "c2b"]},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "u3"},
                      {"role": "assistant", "content": "a3"}]},
        {"conversations": [{"from": "human", "value": "u4"}, {"from": "gpt", "value": "a4"}]},
        {"instruction": "Do it.", "input": "x5", "output": "a5"},
        {"instruction": "Do it.", "input": "", "output": "a6"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ex = read_jsonl(path)
    assert [(e.prompt, e.targets) for e in ex] == [
        ("p1", ("c1",)), ("p2", ("c2", "c2b")), ("Be brief.\n\nu3", ("a3",)),
        ("u4", ("a4",)), ("Do it.\n\nx5", ("a5",)), ("Do it.", ("a6",))]
    assert {e.task for e in ex} == {"mine"} and ex[-1].row == 5


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
     r"rows.jsonl:2: turns \['user', 'assistant', 'user', 'assistant'\]"),
    ({"messages": [{"role": "robot", "content": "a"}]}, "rows.jsonl:2: each turn needs a role"),
    ({"text": "x"}, "rows.jsonl:2: a chat row needs"),
    ({"prompt": "p", "completion": ""}, "rows.jsonl:2: empty answer"),
    ([1, 2], "rows.jsonl:2: not a JSON object"),
])
def test_bad_jsonl_rows_name_their_line(tmp_path, row, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n" + json.dumps(row))
    with pytest.raises(DataError, match=message):
        read_jsonl(path)


def test_splits_are_seeded_disjoint_and_test_rows_do_not_move(tmp_path):
    ex = read_bigbench_task(write_bigbench_task(tmp_path, "t1", n=50))
    a = split_task(ex, train=10, validation=5, test=8, seed=3)
    b = split_task(ex, train=None, validation=5, test=8, seed=3)
    rows = {k: [e.row for e in v] for k, v in a.items()}
    assert [len(rows[k]) for k in ("train", "validation", "test")] == [10, 5, 8]
    assert not set(rows["train"]) & set(rows["test"]) and not set(rows["validation"]) & set(
        rows["test"]) and not set(rows["train"]) & set(rows["validation"])
    assert rows["test"] == sorted(rows["test"])  # file order within a split
    assert rows["test"] == [e.row for e in b["test"]] and len(b["train"]) == 37
    assert rows["validation"] == [e.row for e in b["validation"]]
    assert rows != {k: [e.row for e in v] for k, v in
                    split_task(ex, train=10, validation=5, test=8, seed=4).items()}
    with pytest.raises(DataError, match="fewer than validation 40 \\+ test 20"):
        split_task(ex, train=None, validation=40, test=20, seed=0)


def test_mixture_splits_record_and_raw_splits(tmp_path):
    for name in ("a", "b", "c"):
        write_bigbench_task(tmp_path, name, n=30)
    m = Mixture.from_config({"dir": str(tmp_path), "tasks": ["a", "b"], "heldout_tasks": ["c"],
                             "train_per_task": 6, "validation_per_task": 3,
                             "test_per_task": 4, "split_seed": 1})
    raw, record = m.raw_splits()
    assert len(raw["train"]) == 12 and len(raw["validation"]) == 6 and "test" not in raw
    assert raw["train"].text_b[0].startswith("answer")  # the first acceptable answer
    assert set(record["rows"]) == {"a", "b", "c"}
    assert record["rows"]["c"]["train"] == [] and len(record["rows"]["c"]["test"]) == 4
    assert record["mixture"]["tasks"] == ["a", "b"] or record["mixture"]["tasks"] == ("a", "b")
    again = to_raw_split([e for t in ("a", "b") for e in m.splits()[t]["train"]], "x", "train")
    assert again.fingerprint == raw["train"].fingerprint


@pytest.mark.parametrize("config, message", [
    (None, "needs config.data.instruct"),
    ({"dir": None, "tasks": ["a"], "bogus": 1}, r"unknown fields \['bogus'\]"),
    ({"dir": None, "tasks": []}, "tasks is empty"),
    ({"dir": None, "tasks": ["a"], "heldout_tasks": ["a"]}, "both trained on and held out"),
])
def test_bad_mixture_configs(config, message):
    with pytest.raises(DataError, match=message):
        Mixture.from_config(config)


def test_missing_task_folder_is_named(tmp_path):
    m = Mixture.from_config({"dir": str(tmp_path), "tasks": ["nope"]})
    with pytest.raises(DataError, match="'nope'.*not found"):
        m.splits()


def test_rouge_l_against_hand_computed_values():
    # LCS("the cat on the mat", "the cat sat on the mat") = 5 words: P = 5/5, R = 5/6.
    assert rouge_l("the cat on the mat", ["the cat sat on the mat"]) == pytest.approx(
        100 * 2 * (5 / 6) / (1 + 5 / 6))
    # The Porter stemmer: "cats" ~ "cat", "sitting" ~ "sit"; punctuation and case ignored.
    assert rouge_l("Cats sitting.", ["cat sit"]) == pytest.approx(100.0)
    # The best acceptable answer counts.
    assert rouge_l("blue", ["red", "blue sky"]) == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert rouge_l("", ["anything"]) == 0.0
    with pytest.raises(ValueError):
        rouge_l("x", [])


def test_exact_match_normalises_like_squad():
    assert normalize_answer("  The  Answer, is: A cat! ") == "answer is cat"
    assert exact_match("the Cat.", ["dog", "a cat"]) == 100.0
    assert exact_match("cats", ["cat"]) == 0.0


@pytest.mark.skipif(not os.path.isdir(NI_DIR), reason="../shared/data/natural_instructions absent")
def test_every_natural_instructions_task_reads():
    folders = sorted(f for f in os.listdir(NI_DIR) if os.path.isdir(os.path.join(NI_DIR, f)))
    assert len(folders) == 55
    for f in folders:
        full = read_task(os.path.join(NI_DIR, f), "full")
        short = read_task(os.path.join(NI_DIR, f), "definition")
        assert len(full) == len(short) > 0
        assert len(short[0].prompt) < len(full[0].prompt)
        assert all(e.targets and e.targets[0].strip() for e in full)
