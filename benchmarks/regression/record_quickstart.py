"""Proof that a refactor changes no result: the quickstart's artefacts and dev metrics.

Runs `configs/quickstart.py` (the real MiniLM-L6 on the bundled quickstart task, seed 0)
once per method (`fish` with the empirical and
the expected Fisher, `ird`, `sift`, `lora_fish`, `xpeft`), each in a fresh workdir, and
records per run:
- every artefact file in the workdir root (`*.safetensors`: mask, delta, PEFT, profile, bank)
  and the exported model (`export/model.safetensors`): the whole file's sha256, each
  tensor's sha256 (name, dtype, shape, bytes) and the JSON metadata of its header;
- the final and best dev metrics and the step count from `results.json`.

  python -m benchmarks.regression.record_quickstart \
      --out benchmarks/results/refactor_baseline.json
  python -m benchmarks.regression.record_quickstart \
      --compare benchmarks/results/refactor_baseline.json

`--compare` reruns and checks the new record against a committed one: file hashes equal, or,
where a header gained fields, every tensor equal and every old metadata field unchanged;
metrics equal. It prints each difference and exits 1 on any.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from benchmarks.common.machine import cpu_model
from configs import quickstart
from fishjax.core.io import atomic_write_json
from fishjax.train.trainer import train_and_evaluate

# One run per method: the config overrides on top of configs/quickstart.py. Settings that
# the refactor may move stay pinned here (e.g. lora_fish scores at LoRA's init).
RUNS: dict[str, dict[str, Any]] = {
    "fish": {"method.name": "fish", "train.learning_rate": 1e-3},
    # the expected Fisher: the label-specific path an objective protocol takes over
    "fish_expected": {"method.name": "fish", "train.learning_rate": 1e-3,
                      "method.fisher.mode": "expected", "method.fisher.num_samples": 256},
    "ird": {"method.name": "ird", "train.learning_rate": 1e-3, "method.ird.pool_size": 256},
    "sift": {"method.name": "sift", "train.learning_rate": 1e-3},
    # scored at LoRA's init, as recorded (the default became the Fisher after a warm-up)
    "lora_fish": {"method.name": "lora_fish", "train.learning_rate": 1e-3,
                  "method.peft.fisher_after_warmup": False},
    "xpeft": {"method.name": "xpeft", "train.learning_rate": 1e-3,
              "method.xpeft.pool_size": 8},
}
METRIC_KEYS = ("final_eval", "best", "step")


def _set(config, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value


def file_record(path: str) -> dict[str, Any]:
    """sha256 of the file, of each tensor (dtype, shape and bytes) and the header's metadata."""
    with open(path, "rb") as f:
        raw = f.read()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    tensors = {}
    for name, arr in sorted(load_file(path).items()):
        h = hashlib.sha256(f"{arr.dtype}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
        tensors[name] = h.hexdigest()
    return {"file_sha256": hashlib.sha256(raw).hexdigest(), "tensors": tensors,
            "metadata": header.get("__metadata__", {})}


def record_run(name: str, overrides: dict[str, Any], workdir: str) -> dict[str, Any]:
    config = quickstart.get_config()
    for k, v in overrides.items():
        _set(config, k, v)
    t0 = time.perf_counter()
    results = train_and_evaluate(config, workdir)
    files = {}
    for rel in sorted(os.listdir(workdir)) + ["export/model.safetensors"]:
        path = os.path.join(workdir, rel)
        if rel.endswith(".safetensors") and os.path.isfile(path):
            files[rel] = file_record(path)
    return {"overrides": overrides, "seconds": round(time.perf_counter() - t0, 1),
            "metrics": {k: results.get(k) for k in METRIC_KEYS}, "files": files}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Differences between two records of one method (empty: the same results)."""
    diffs = []
    if old["metrics"] != new["metrics"]:
        diffs.append(f"metrics {old['metrics']} -> {new['metrics']}")
    for rel, a in old["files"].items():
        b = new["files"].get(rel)
        if b is None:
            diffs.append(f"{rel}: missing")
            continue
        if a["file_sha256"] == b["file_sha256"]:
            continue
        if a["tensors"] != b["tensors"]:
            changed = sorted(k for k in set(a["tensors"]) | set(b["tensors"])
                             if a["tensors"].get(k) != b["tensors"].get(k))
            diffs.append(f"{rel}: tensors differ: {changed[:5]}")
        lost = _changed_fields(_fields(a["metadata"]), _fields(b["metadata"]))
        if lost:
            diffs.append(f"{rel}: metadata fields changed: {lost}")
    return diffs


def _fields(metadata: dict[str, str]) -> dict[str, Any]:
    """A header's metadata with its JSON documents (fishjax's `fishjax_<kind>` entries)
    opened into `<key>.<field>` entries, so that a field added to one is not a change."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            doc = json.loads(value)
        except (TypeError, ValueError):
            doc = None
        if isinstance(doc, dict):
            out.update({f"{key}.{k}": v for k, v in doc.items()})
        else:
            out[key] = value
    return out


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The old fields whose value changed or that are gone (the tensors' own hash aside)."""
    return {k: (v, new.get(k)) for k, v in old.items()
            if new.get(k) != v and not k.endswith("content_sha256")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="write the record here (JSON)")
    ap.add_argument("--compare", help="a committed record to check this run against")
    ap.add_argument("--methods", default=",".join(RUNS), help="comma-separated subset")
    args = ap.parse_args(argv)
    if not (args.out or args.compare):
        ap.error("give --out, --compare or both")
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(RUNS))
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {', '.join(RUNS)}")
    record = {"cpu": cpu_model(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="fishjax-record-") as tmp:
        for name in methods:
            record["runs"][name] = record_run(name, RUNS[name], os.path.join(tmp, name))
            print(f"{name}: {record['runs'][name]['metrics']['final_eval']} "
                  f"({record['runs'][name]['seconds']} s)", flush=True)
    if args.out:
        atomic_write_json(args.out, record)
    if args.compare:
        with open(args.compare, encoding="utf-8") as f:
            old = json.load(f)["runs"]
        bad = 0
        for name in methods:
            diffs = compare(old[name], record["runs"][name])
            print(f"{name}: {'identical' if not diffs else 'DIFFERENT'}")
            for d in diffs:
                print(f"  {d}")
            bad += bool(diffs)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
