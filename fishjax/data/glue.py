"""Loading GLUE splits from TSV files, the bundled sample, or the Hugging Face hub.

TSV rules (those of the files GLUE's download script leaves in ``glue_data/<TASK>/``):
fields are split on tabs only and quotes are never parsed (MRPC text has unbalanced
``"``); files are read as ``utf-8-sig`` so MRPC's leading BOM is dropped; a trailing
``\\r`` is removed from each line and empty lines are skipped; text is kept verbatim
(SST-2's trailing space included) and labels are compared after stripping whitespace.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fishjax.data.generation import load_jsonl_file, parse_jsonl
from fishjax.data.raw_split import RawSplit
from fishjax.data.tasks import DataError, TaskSpec, get_task

HUB_DATASET = "nyu-mll/glue"


def text_split(texts: Sequence[str], pairs: Sequence[str] | None = None, *,
               task: str = "predict") -> RawSplit:
    """Raw texts (and, for pair tasks, their second segments) as an unlabelled split, for
    prediction."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise DataError("texts must be a list of strings (one per example)")
    if pairs is not None and (isinstance(pairs, str) or len(pairs) != len(texts)
                              or not all(isinstance(t, str) for t in pairs)):
        raise DataError(f"pairs must be a list of {len(texts)} strings, one per text")
    if not texts:
        raise DataError("no texts to predict")
    return RawSplit(task=task, split="predict", text_a=list(texts),
                    text_b=None if pairs is None else list(pairs),
                    labels=np.zeros(len(texts), np.int32), source="texts", fingerprint="")


def load_split(task: TaskSpec | str, split: str, data_dir: str | None = None,
               max_samples: int | None = None, seed: int = 0) -> RawSplit:
    """Load ``split`` of ``task``.

    With ``data_dir`` (the task folder, e.g. ``.../glue/RTE``) reads ``<data_dir>/<split>.tsv``.
    Without it, ``quickstart`` reads the bundled package data and GLUE tasks are fetched
    from the hub dataset ``nyu-mll/glue``. ``max_samples`` keeps a random subset of that
    size drawn with ``seed`` (same seed, same subset), in file order.
    """
    spec = get_task(task)
    if split not in spec.splits:
        raise DataError(f"task {spec.name!r} has no split {split!r}; "
                        f"valid splits: {', '.join(spec.splits)}")
    if max_samples is not None and max_samples <= 0:
        raise DataError(f"max_samples must be positive, got {max_samples}")

    if spec.generative:  # JSON lines of (prompt, completion): fishjax.data.generation
        if data_dir is not None:
            raw = load_jsonl_file(spec, split, Path(data_dir) / f"{split}.jsonl")
        else:
            name = f"{spec.name}_{split}.jsonl"
            resource = importlib.resources.files("fishjax.data") / "samples" / name
            raw = parse_jsonl(spec, split, resource.read_bytes(), f"fishjax.data:samples/{name}")
    elif data_dir is not None:
        raw = _load_tsv_file(spec, split, Path(data_dir) / f"{split}.tsv")
    elif spec.hub_config is None:
        name = f"{spec.name}_{split}.tsv"
        resource = importlib.resources.files("fishjax.data") / "samples" / name
        raw = _parse_tsv(spec, split, resource.read_bytes(), f"fishjax.data:samples/{name}")
    else:
        raw = _load_hub(spec, split)
    return _subset(raw, max_samples, seed)


def _load_tsv_file(spec: TaskSpec, split: str, path: Path) -> RawSplit:
    if not path.is_file():
        expected = ", ".join(f"{s}.tsv" for s in spec.splits)
        hint = ""
        if spec.glue_folder and (path.parent / spec.glue_folder / path.name).is_file():
            hint = f" (found it in {path.parent / spec.glue_folder}: pass that task folder)"
        raise DataError(f"task {spec.name!r}: data file {path} not found; the data folder "
                        f"should hold {expected}{hint}")
    return _parse_tsv(spec, split, path.read_bytes(), str(path))


def _parse_tsv(spec: TaskSpec, split: str, data: bytes, source: str) -> RawSplit:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{source}: line {line}: not valid UTF-8 ({e.reason})") from None

    if "\r" in text and text.count("\r") > 2 * text.count("\n"):  # old Mac line ends
        raise DataError(f"{source}: lines end with a bare carriage return (CR, \\r) instead "
                        "of a newline; convert the file to LF or CRLF line endings (e.g. "
                        "tr '\\r' '\\n' < old.tsv > new.tsv)")
    rows = [(n, line.removesuffix("\r")) for n, line in enumerate(text.split("\n"), start=1)]
    rows = [(n, line) for n, line in rows if line]
    if spec.has_header:
        if not rows:
            raise DataError(f"{source}: empty file, expected a header line")
        columns = [c.strip() for c in rows[0][1].split("\t")]
        rows = rows[1:]
    else:
        columns = list(spec.columns)
    if not rows:
        raise DataError(f"{source}: split {split!r} of task {spec.name!r} has no data rows")

    wanted = (*spec.text_fields, spec.label_field)
    for name in wanted:
        if name not in columns:
            raise DataError(f"{source}: missing column {name!r} needed by task {spec.name!r}; "
                            f"the header has {columns}")
    text_idx = [columns.index(name) for name in spec.text_fields]
    label_idx = columns.index(spec.label_field)
    label_ids = None if spec.label_names is None else {v: i for i, v in enumerate(spec.label_names)}

    texts: list[list[str]] = [[] for _ in text_idx]
    labels: list[float | int] = []
    for lineno, line in rows:
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataError(f"{source}: line {lineno}: expected {len(columns)} tab-separated "
                            f"fields ({', '.join(columns)}), got {len(fields)}")
        for out, i in zip(texts, text_idx, strict=True):
            out.append(fields[i])
        value = fields[label_idx].strip()
        labels.append(_parse_label(spec, label_ids, value, f"{source}: line {lineno}"))

    return RawSplit(
        task=spec.name,
        split=split,
        text_a=texts[0],
        text_b=texts[1] if spec.is_pair else None,
        labels=_label_array(spec, labels),
        source=source,
        fingerprint=hashlib.sha256(data).hexdigest(),
    )


def _parse_label(spec: TaskSpec, label_ids: dict[str, int] | None, value: str,
                 where: str) -> float | int:
    if label_ids is None:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise DataError(f"{where}: column {spec.label_field!r}: score {value!r} is not a "
                            f"finite number (task {spec.name!r} is a regression task)")
        return score
    if value not in label_ids:
        raise DataError(f"{where}: column {spec.label_field!r}: label {value!r} is not one of "
                        f"{list(label_ids)} (task {spec.name!r})")
    return label_ids[value]


def _label_array(spec: TaskSpec, labels: list) -> np.ndarray:
    return np.asarray(labels, dtype=np.float32 if spec.is_regression else np.int32)


def _load_hub(spec: TaskSpec, split: str) -> RawSplit:
    hub_split = spec.hub_split(split)
    source = f"{HUB_DATASET}/{spec.hub_config}:{hub_split}"
    try:
        import datasets  # deferred: slow to import and only needed without a data_dir

        ds = datasets.load_dataset(HUB_DATASET, spec.hub_config, split=hub_split)
    except Exception as e:
        raise DataError(
            f"task {spec.name!r}: could not load {source} from the Hugging Face hub "
            f"({type(e).__name__}: {e}); the hub may be unreachable (offline). Pass "
            f"config.data.dir with the GLUE TSV folder of this task (e.g. glue_data/"
            f"{spec.glue_folder}, holding {', '.join(s + '.tsv' for s in spec.splits)})"
        ) from e

    missing = [c for c in (*spec.hub_text_fields, "label") if c not in ds.column_names]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; it has {ds.column_names}")
    texts = [list(ds[c]) for c in spec.hub_text_fields]
    labels = _label_array(spec, list(ds["label"]))
    if len(labels) == 0:
        raise DataError(f"{source}: split {split!r} of task {spec.name!r} has no rows")
    if not spec.is_regression:
        bad = np.flatnonzero((labels < 0) | (labels >= spec.num_labels))
        if bad.size:
            raise DataError(f"{source}: row {bad[0]}: label {labels[bad[0]]} is outside "
                            f"0..{spec.num_labels - 1} (unlabelled test split?)")
    elif not np.all(np.isfinite(labels)):
        raise DataError(f"{source}: non-finite regression score")
    return RawSplit(task=spec.name, split=split, text_a=texts[0],
                    text_b=texts[1] if spec.is_pair else None, labels=labels,
                    source=source, fingerprint=f"hub:{source}")


def _subset(raw: RawSplit, max_samples: int | None, seed: int) -> RawSplit:
    n = len(raw)
    if max_samples is None or max_samples >= n:
        return raw
    keep = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
    return raw.rows(keep)
