"""Tokenization (with an on-disk cache), length buckets and fixed-shape batches.

Every example is assigned to the smallest bucket length >= its token count, and batches
are cut within a bucket, so a jitted step only ever sees the shapes ``(batch_size, b)``
for ``b`` in ``buckets``: one compilation per bucket.

A partial batch (the last of a bucket) is filled up to ``batch_size`` with padding rows:
all pad tokens, ``token_type_ids`` 0, label 0 (next-token labels: all `IGNORE_INDEX`) and
weight 0. Their ``attention_mask`` is 1
at position 0 only, so no row is fully masked (a fully masked softmax row is NaN in some
attention implementations); losses and metrics must use ``weights`` to ignore them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import operator
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fishjax.core.io import atomic_write
from fishjax.data.generation import IGNORE_INDEX, encode_rows, token_labels
from fishjax.data.raw_split import RawSplit
from fishjax.data.tasks import DataError

logger = logging.getLogger(__name__)

# Bump whenever the cached arrays or the way they are computed change.
_CACHE_FORMAT = 1
# Texts per tokenizer call: bounds the size of the intermediate Python lists.
_CHUNK = 8192

EpochPlan = list[tuple[np.ndarray, int]]


@dataclass
class TokenizedSplit:
    """Token ids padded to ``max_length`` (= ``buckets[-1]``) plus true lengths and labels:
    one per row (classification, regression) or one per token ([N, max_length]: a
    generation task's next-token labels, `fishjax.data.generation`)."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    buckets: tuple[int, ...]
    pad_id: int

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def max_length(self) -> int:
        return self.buckets[-1]

    @property
    def bucket_ids(self) -> np.ndarray:
        """Index into ``buckets`` of each example's bucket (smallest bucket >= length)."""
        return np.searchsorted(np.asarray(self.buckets), self.lengths, side="left")


def _check_buckets(buckets: Sequence[int], max_length: int) -> tuple[int, ...]:
    if max_length <= 0:
        raise DataError(f"max_length must be positive, got {max_length}")
    try:
        b = tuple(operator.index(x) for x in buckets)
    except TypeError:
        b = ()
    if (not b or b[0] <= 0 or any(x >= y for x, y in itertools.pairwise(b))
            or b[-1] != max_length):
        raise DataError(f"buckets must be integers, positive, strictly increasing and end "
                        f"with max_length={max_length}; got {list(buckets)}")
    return b


def tokenize_split(raw: RawSplit, tokenizer: Any, *, max_length: int, buckets: Sequence[int],
                   cache_dir: str | None = None,
                   prompt_format: str | None = None,
                   long_targets: str = "error") -> TokenizedSplit:
    """Tokenize (text_a[, text_b]) with 'longest_first' truncation to ``max_length``.

    With ``cache_dir`` the result is stored as an ``.npz`` keyed by the data (fingerprint
    and content, so a ``max_samples`` subset is its own entry), the tokenizer's full
    definition, ``max_length``, ``buckets`` and a format version; an unreadable cache file
    is treated as a miss and rewritten. With ``prompt_format`` the split is a generation
    task's (prompt, target) rows ("chat" or "plain"; `fishjax.data.generation`, which
    also says what `long_targets` does).
    """
    buckets = _check_buckets(buckets, max_length)
    if len(raw) == 0:
        raise DataError(f"{raw.source}: split {raw.split!r} of task {raw.task!r} is empty")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise DataError("the tokenizer has no pad token (pad_token_id is None)")

    path = None
    if cache_dir is not None:
        key = _cache_key(raw, tokenizer, max_length, buckets, prompt_format, long_targets)
        path = Path(cache_dir) / f"{raw.task}-{raw.split}-{key[:24]}.npz"
        cached = _load_cache(path, buckets, int(pad_id))
        if cached is not None:
            logger.info("loaded tokenized %s/%s from %s", raw.task, raw.split, path)
            return cached

    if prompt_format is None:
        out = _tokenize(raw, tokenizer, max_length, buckets, int(pad_id))
    else:
        out = _tokenize_generation(raw, tokenizer, max_length, buckets, int(pad_id),
                                   prompt_format, long_targets)
    if path is not None:
        try:
            _save_cache(path, out)
            logger.info("cached tokenized %s/%s in %s", raw.task, raw.split, path)
        except OSError as e:  # a read-only or full cache folder only costs time, next run
            logger.warning("could not cache tokenized %s/%s in %s (%s): going on without the "
                           "cache (set data.cache_dir or $FISHJAX_CACHE to a writable folder)",
                           raw.task, raw.split, cache_dir, e.strerror or e)
    return out


def _tokenize_generation(raw: RawSplit, tokenizer: Any, max_length: int,
                         buckets: tuple[int, ...], pad_id: int,
                         prompt_format: str, long_targets: str) -> TokenizedSplit:
    rows, starts = encode_rows(raw, tokenizer, max_length, prompt_format, long_targets)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    input_ids = np.full((len(rows), max_length), pad_id, dtype=np.int32)
    input_ids[np.arange(max_length)[None, :] < lengths[:, None]] = np.fromiter(
        (t for row in rows for t in row), dtype=np.int32, count=int(lengths.sum()))
    return TokenizedSplit(input_ids=input_ids,
                          token_type_ids=np.zeros_like(input_ids), lengths=lengths,
                          labels=token_labels(rows, starts, max_length), buckets=buckets,
                          pad_id=pad_id)


def _tokenize(raw: RawSplit, tokenizer: Any, max_length: int, buckets: tuple[int, ...],
              pad_id: int) -> TokenizedSplit:
    ids: list[list[int]] = []
    types: list[list[int]] | None = []
    for start in range(0, len(raw), _CHUNK):
        a = raw.text_a[start:start + _CHUNK]
        b = None if raw.text_b is None else raw.text_b[start:start + _CHUNK]
        enc = _encode(tokenizer, a, b, max_length)
        ids.extend(enc["input_ids"])
        # Tokenizers without segment ids (e.g. RoBERTa) get zeros.
        if types is not None and enc.get("token_type_ids") is not None:
            types.extend(enc["token_type_ids"])
        else:
            types = None

    lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
    if lengths.max() > max_length:
        i = int(lengths.argmax())
        raise DataError(f"{raw.source}: row {i} is {lengths[i]} tokens after truncation, "
                        f"more than max_length={max_length} (max_length too small?)")
    if lengths.min() == 0:
        # A zero-length row would be fully masked in attention.
        raise DataError(f"{raw.source}: row {int(lengths.argmin())} tokenizes to no tokens")
    # Fill row by row in one vectorised step: the mask's True cells, in C order, are
    # exactly the real tokens of each row in sequence.
    mask = np.arange(max_length)[None, :] < lengths[:, None]
    input_ids = np.full((len(ids), max_length), pad_id, dtype=np.int32)
    input_ids[mask] = np.fromiter((t for row in ids for t in row), dtype=np.int32,
                                  count=int(lengths.sum()))
    token_type_ids = np.zeros((len(ids), max_length), dtype=np.int32)
    if types is not None:
        token_type_ids[mask] = np.fromiter((t for row in types for t in row), dtype=np.int32,
                                           count=int(lengths.sum()))
    return TokenizedSplit(input_ids=input_ids, token_type_ids=token_type_ids, lengths=lengths,
                          labels=raw.labels.copy(), buckets=buckets, pad_id=pad_id)


def _encode(tokenizer: Any, a: list[str], b: list[str | None] | None,
            max_length: int) -> dict[str, list]:
    """Token ids (and segment ids) of rows (a[, b]); in a mixed split (`fishjax.data.mixture`)
    a row whose b is None is encoded alone, the others as pairs, in row order."""
    kw = dict(truncation="longest_first", max_length=max_length, padding=False,
              return_attention_mask=False)
    if b is None or all(x is not None for x in b):
        return tokenizer(a, b, **kw)
    single = [i for i, x in enumerate(b) if x is None]
    pair = [i for i, x in enumerate(b) if x is not None]
    parts = [(single, tokenizer([a[i] for i in single], **kw))]
    if pair:
        parts.append((pair, tokenizer([a[i] for i in pair], [b[i] for i in pair], **kw)))
    out: dict[str, list] = {}
    for key in ("input_ids", "token_type_ids"):
        if all(enc.get(key) is not None for _, enc in parts):
            column: list = [None] * len(a)
            for rows, enc in parts:
                for i, v in zip(rows, enc[key], strict=True):
                    column[i] = v
            out[key] = column
    return out


def _tokenizer_identity(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # Each call with truncation/padding rewrites these backend settings, so they
        # would differ between a first and a second call; the call arguments that
        # matter are part of the cache key anyway.
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = {"vocab": sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))}
    spec["class"] = type(tokenizer).__qualname__
    spec["truncation_side"] = getattr(tokenizer, "truncation_side", None)
    return json.dumps(spec, sort_keys=True, ensure_ascii=False)


def _content_hash(raw: RawSplit) -> str:
    h = hashlib.sha256()
    for column in (raw.text_a, raw.text_b or []):
        h.update(len(column).to_bytes(8, "little"))
        for text in column:
            if text is None:  # a single-sentence row of a mixed split (no second segment)
                h.update((2**64 - 1).to_bytes(8, "little"))
                continue
            data = text.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    h.update(raw.labels.dtype.str.encode())
    h.update(np.ascontiguousarray(raw.labels).tobytes())
    return h.hexdigest()


def _cache_key(raw: RawSplit, tokenizer: Any, max_length: int, buckets: tuple[int, ...],
               prompt_format: str | None = None, long_targets: str = "error") -> str:
    parts = {
        "format": _CACHE_FORMAT,
        "task": raw.task,
        "split": raw.split,
        "fingerprint": raw.fingerprint,
        "content": _content_hash(raw),
        "pair": raw.text_b is not None,
        "tokenizer": hashlib.sha256(_tokenizer_identity(tokenizer).encode()).hexdigest(),
        "max_length": max_length,
        "buckets": list(buckets),
    }
    if prompt_format is not None:  # a generation split: the template is part of the text
        parts["prompt_format"] = prompt_format
        parts["chat_template"] = getattr(tokenizer, "chat_template", None)
        if long_targets != "error":  # the keys of earlier caches stay as they were
            parts["long_targets"] = long_targets
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


_ARRAYS = ("input_ids", "token_type_ids", "lengths", "labels")


def _load_cache(path: Path, buckets: tuple[int, ...], pad_id: int) -> TokenizedSplit | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("ignoring unreadable tokenization cache %s (%s)", path, e)
        return None
    return TokenizedSplit(**arrays, buckets=buckets, pad_id=pad_id)


def _save_cache(path: Path, ds: TokenizedSplit) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **{k: getattr(ds, k) for k in _ARRAYS}))


def _check_batch_size(batch_size: int) -> None:
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")


def epoch_plan(ds: TokenizedSplit, batch_size: int, *, seed: int, epoch: int,
               shuffle: bool) -> EpochPlan:
    """The batches of one epoch as (example indices, bucket length) pairs.

    Each bucket's examples are cut into batches of ``batch_size`` (the last one may be
    partial; it is kept). With ``shuffle`` an rng seeded with ``(seed, epoch)`` permutes
    the examples before grouping and then permutes the batch order; without it examples
    keep file order and buckets come in ascending length.
    """
    _check_batch_size(batch_size)
    bucket_ids = ds.bucket_ids
    if shuffle:
        if seed < 0 or epoch < 0:
            raise DataError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
        rng = np.random.default_rng((seed, epoch))
        order = rng.permutation(len(ds))
    else:
        order = np.arange(len(ds))

    plan: EpochPlan = []
    for b, bucket_len in enumerate(ds.buckets):
        members = order[bucket_ids[order] == b]
        plan.extend((members[i:i + batch_size], bucket_len)
                    for i in range(0, len(members), batch_size))
    if shuffle:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan


def num_batches(ds: TokenizedSplit, batch_size: int) -> int:
    """Number of batches in every epoch's plan (independent of seed, epoch and shuffle)."""
    _check_batch_size(batch_size)
    counts = np.bincount(ds.bucket_ids, minlength=len(ds.buckets))
    return int(np.sum(-(-counts // batch_size)))


def make_batch(ds: TokenizedSplit, indices: np.ndarray, bucket_len: int,
               batch_size: int) -> dict[str, np.ndarray]:
    """Gather ``indices`` into arrays of shape ``[batch_size, bucket_len]``.

    Rows past ``len(indices)`` are padding rows (see the module docstring) with weight 0.
    """
    _check_batch_size(batch_size)
    indices = np.asarray(indices, dtype=np.int64)
    n = len(indices)
    if n == 0 or n > batch_size:
        raise DataError(f"a batch needs 1..{batch_size} indices, got {n}")
    if bucket_len not in ds.buckets:
        raise DataError(f"bucket_len {bucket_len} is not one of the buckets {ds.buckets}")
    if indices.min() < 0 or indices.max() >= len(ds):
        raise DataError(f"batch indices out of range 0..{len(ds) - 1}")
    if ds.lengths[indices].max() > bucket_len:
        raise DataError(f"bucket_len {bucket_len} is shorter than an example in the batch "
                        f"({ds.lengths[indices].max()} tokens)")

    input_ids = np.full((batch_size, bucket_len), ds.pad_id, dtype=np.int32)
    token_type_ids = np.zeros((batch_size, bucket_len), dtype=np.int32)
    input_ids[:n] = ds.input_ids[indices, :bucket_len]
    token_type_ids[:n] = ds.token_type_ids[indices, :bucket_len]
    lengths = np.ones(batch_size, dtype=np.int32)  # padding rows attend to position 0
    lengths[:n] = ds.lengths[indices]
    attention_mask = (np.arange(bucket_len)[None, :] < lengths[:, None]).astype(np.int32)
    if ds.labels.ndim == 2:  # next-token labels: cut to the bucket, padding rows ignored
        labels = np.full((batch_size, bucket_len), IGNORE_INDEX, dtype=ds.labels.dtype)
        labels[:n] = ds.labels[indices, :bucket_len]
    else:
        labels = np.zeros(batch_size, dtype=ds.labels.dtype)
        labels[:n] = ds.labels[indices]
    weights = np.zeros(batch_size, dtype=np.float32)
    weights[:n] = 1.0
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "labels": labels,
        "weights": weights,
    }


def iterate_batches(ds: TokenizedSplit, batch_size: int, *, seed: int, epoch: int,
                    shuffle: bool, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Host batches of one epoch's plan (`epoch_plan`), from batch index `start` on."""
    for indices, bucket_len in epoch_plan(ds, batch_size, seed=seed, epoch=epoch,
                                          shuffle=shuffle)[start:]:
        yield make_batch(ds, indices, bucket_len, batch_size)


def index_batches(ds: TokenizedSplit, indices: np.ndarray,
                  batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape batches of exactly the examples `indices`, with their `example_ids`.

    As `epoch_plan` without shuffling: by length bucket (ascending), ids ascending within a
    bucket, cut into `batch_size` rows, the last one padded (weight 0, example id -1).
    """
    indices = np.asarray(indices, np.int64)
    bucket_ids = ds.bucket_ids[indices]
    for b, bucket_len in enumerate(ds.buckets):
        members = np.sort(indices[bucket_ids == b])
        for start in range(0, len(members), batch_size):
            rows = members[start:start + batch_size]
            batch = make_batch(ds, rows, bucket_len, batch_size)
            ids = np.full(batch_size, -1, np.int64)
            ids[:len(rows)] = rows
            batch["example_ids"] = ids
            yield batch


def cycle_epochs(make_epoch: Callable[[int], Iterable[Any]], start: int = 0) -> Iterator[Any]:
    """The batches of epoch `start`, `start` + 1, ... (`make_epoch(epoch)`), for runs longer
    than one pass (e.g. `make_epoch = lambda e: iterate_batches(ds, 32, seed=0, epoch=e,
    shuffle=True)`: the trainer's own epochs); stops at an empty epoch."""
    epoch = start
    while True:
        empty = True
        for batch in make_epoch(epoch):
            empty = False
            yield batch
        if empty:
            return
        epoch += 1
