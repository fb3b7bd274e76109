"""Grid of fine-tuning runs: methods x GLUE tasks x seeds, resumable, with a Markdown table.

  python -m benchmarks.grid.glue --glue_dir=../shared/data/glue --tasks=rte,mrpc,sst2 \\
      --methods=full,bitfit,random_mask,fish,ird,sift --seeds=0,1,2 --out=benchmarks/results/glue
  python -m benchmarks.grid.glue --quick --glue_dir=../shared/data/glue      # ~6 min, see below
  python -m benchmarks.grid.glue --report --plots --readme README.md         # runs nothing

Each cell (task, method, seed) runs `train_and_evaluate` with the task's config from
`configs/glue.py:<task>` into `<out>/cells/<task>-<method>-s<seed>/`. Finished cells are
recorded in `<out>/results.json` (written atomically after every cell) and skipped on a
rerun; a cell that crashes is recorded with its error and the grid goes on (rerun to retry
it). Before it starts, the grid prints its expected wall time: per cell, the mean seconds
per step of finished cells of the same task and method (else the same method on other
tasks, scaled by the ratio of sequence lengths, else the same task), times the cell's
steps; with no finished cell at all, `FALLBACK_EX_PER_S` training examples/s plus
`FALLBACK_CELL_OVERHEAD_S` per cell (a rough
CPU figure: MiniLM-L6 on 2 cores trains at ~9-14 examples/s at length <= 128).

Outputs in `<out>`: `results.json` ({"cells": {cell_id: {...}}}: status, final and best dev
metrics, seed, learning rate, trainable entries, total params, train examples, wall /
train / setup / Fisher seconds, overrides), `results.md` (mean ± std over seeds of each
task's main metric, and each method's trainable entries and fraction of the model's
parameters); with `--plots`, `<out>/plots/` (benchmarks/grid/plots.py: score vs trainable
fraction, per-layer mask density, mask overlap across tasks and seeds); with `--readme
PATH`, the table between the `<!-- glue-table:begin -->` / `<!-- glue-table:end -->`
markers of that file, rewritten from results.json (`--check_readme PATH` checks it).

Protocol: each task's config (3 epochs, batch 32, length buckets, AdamW with warmup and
linear decay; `configs/glue.py`), the reported score is the dev metric after the
last epoch (no checkpoint picking on dev). Learning rate per method (`--method_lr`): 1e-4
for `full` (picked on RTE seed 0 between 3e-5 and 1e-4, see configs/glue.py) and 5e-4
for the sparse methods (fish, random_mask, bitfit, ird, sift), 5e-4 for lora/dora and
their `*_fish` variants (the LoRA paper's range for RoBERTa-base on GLUE) and 1e-3 for
adapter/adapter_fish (the top of the usual Houlsby sweep) — common choices, not tuned here;
a method not listed keeps its task config's rate. Budgets: the mask methods train 0.5% of
all parameters (head included, `method.keep_ratio`); `sift` is put on the same trainable
count by `METHOD_OVERRIDES` (rate 0.0318 of the attention tensors + the classifier; see
there), recorded in each cell's `overrides` (`--no_method_overrides` turns this off); the
PEFT methods have their own counts (LoRA r=8 on query/value, Houlsby adapters with
bottleneck 24), reported beside the scores.

SST-2 trains on a fixed 8,000-example subset of its 67,349 training sentences
(`--train_subset sst2=8000`, `--subset_seed 0`): the rows
`np.random.default_rng(0).choice(67349, 8000, replace=False)`, kept in file order — the same
rows `load_split(..., max_samples=8000, seed=0)` keeps — written once as a TSV folder
(train.tsv + the untouched eval files, with a manifest of the source's sha256) under
`<data cache>/glue_subsets/` and used as that task's `data.dir` for every seed and method.
Its dev set is complete. The subset needs `--glue_dir` (TSV files).

`--quick`: RTE, seed 0, methods full, bitfit, random_mask, fish, ird, sift (the registered
ones of these) into `benchmarks/results/glue_quick` unless --tasks/--seeds/--methods/--out
are given, with `QUICK_OVERRIDES`: 640 training examples (seeded subset), 1 epoch (21
steps of <= 32 with RTE's two length buckets), Fisher over 256 examples, IRD pool 256; the
full dev set. Measured: 332 s for the 6 cells on 2 CPU cores (2026-11-23, tokenized data
cached; `time python -m benchmarks.grid.glue --quick --glue_dir=../shared/data/glue`). A check
that the pipeline and these methods work end to end, not a comparison: its scores are near
chance.

Where the grid runs. The committed grid (`benchmarks/results/glue_gpu`, README "Results")
ran this protocol on a lent H100 in about 20 minutes as 8 processes. On 2 CPU cores the same
main grid (12 methods x RTE, MRPC, SST-2 8k x 3 seeds; the table's selection baselines
add 24 RTE/MRPC cells) is estimated at about 31 h (`--estimate
--estimate_from benchmarks/results/glue/results.json`, calibrated on the CPU cells). A
CPU-only protocol of about 6 hours is `--set train.num_epochs=1 --train_subset sst2=2000`
(estimate 5h30m). That estimate scales per-step costs, so fixed per-cell costs such as
Fisher scoring make the real run longer. It has not been run here; its scores would not be
comparable with the 3-epoch table.

Methods may also be `METHOD_VARIANTS` names (`lora_fish_random`, `adapter_fish_reversed`,
...): a registered method with fixed overrides, recorded under the variant's name. Among
them: `<m>_b<percent>` (fish, random_mask, ird, sift at 0.1%, 2% or 5% of all parameters,
SIFT's rate matched to the count), `fish_reference` (configs/fish_reference.py's recipe as
overrides) and `xpeft_soft` / `xpeft_hard_k<K>[_mean|_sum]` (X-PEFT over the pool given by
`--set method.xpeft.pool=...`; `{task}` in a --set value is the cell's task).
`--row_split task=PATH,...` trains each cell of that task on a `fishjax.data.row_split` file's
rows (with `--select_on=validation`, the file's validation rows replace the carved split). On a GPU,
split a grid over several processes with their own `--out` and merge them with
`benchmarks/grid/merge_results.py`; each cell records its `device`.

`--select_on=validation`: learning rates chosen per method on a validation split carved
from the training set, dev reported once per chosen rate
(benchmarks/grid/validation_protocol.py has the protocol; `--lr_grid`,
`--validation_fraction`, `--validation_cap`, `--validation_seed`); the default `dev_last`
is the protocol above.

`--set key=value` overrides config fields for every cell (e.g. `--set train.num_epochs=1`);
`--json PATH` also writes the results there; `--estimate` prints the expected wall time
and runs nothing.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import logging
import math
import os
import shlex
import shutil
import sys
import time
import traceback
from typing import Any

import jax
import numpy as np

from benchmarks.common import cli, readme_blocks
from benchmarks.grid import plots
from benchmarks.grid import validation_protocol as vp
from benchmarks.grid.cells import (
    METHOD_ORDER,
    TASK_ORDER,
    cell_id,
    ordered,
    score_of,
    trainable_fraction,
)
from configs import fish_reference as fish_reference_configs
from configs import glue as glue_configs
from fishjax.core.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    read_json,
)
from fishjax.core.progress import logs_above, progress_bar
from fishjax.data import get_task
from fishjax.data.row_split import load_row_split
from fishjax.methods import available_methods
from fishjax.train.trainer import train_and_evaluate
from fishjax.train.workdir import flatten_config

log = logging.getLogger("fishjax.benchmarks")

DEFAULT_OUT = "benchmarks/results/glue"
QUICK_OUT = "benchmarks/results/glue_quick"
QUICK_METHODS = ("full", "bitfit", "random_mask", "fish", "ird", "sift")
QUICK_OVERRIDES = ("data.max_train_samples=640", "train.num_epochs=1.0",
                   "method.fisher.num_samples=256", "method.ird.pool_size=256")
DEFAULT_TRAIN_SUBSET = "sst2=8000"
# Training-set sizes of the GLUE tasks (for the time estimate when no TSV folder is given).
GLUE_TRAIN_SIZES = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qqp": 363846,
                    "mnli": 392702, "qnli": 104743, "rte": 2490, "wnli": 635}
FALLBACK_EX_PER_S = 9.0
# Per-method config overrides that put a method on the grid's common budget (the docstring's
# protocol), applied after --method_lr and before --set, recorded in each cell's overrides.
# SIFT: its GLUE rule (attention q/k/v/o kernels and biases, per-tensor top-k by |grad|)
# at the trainable count of FISH 0.5% on minilm-l6 (113,570 = 0.5% of all params, head
# included): rate 0.0318 gives 112,872 attention entries + the 770-entry classifier =
# 113,642 (+0.06%); the pooler, which SIFT's reference trains densely (148k entries, more
# than the whole budget), stays frozen.
METHOD_OVERRIDES: dict[str, tuple[str, ...]] = {
    "sift": ("method.sift.rate=0.0318", "method.sift.head_regex=^classifier/"),
    # X-PEFT's scores are logits over N adapters whose ranking must move within one run:
    # 10x the head's rate (our choice; no reference exists).
    "xpeft": ("method.xpeft.score_learning_rate=0.01",),
}
# Trained X-PEFT pools: one bank per target task and N, built by
# benchmarks/xpeft/xpeft_banks.py from adapters trained on shards of the other tasks (`{task}`
# is the cell's task).
XPEFT_BANKS = "benchmarks/results/xpeft_banks/{task}-n{n}.safetensors"
# Grid methods that are a registered method with fixed config overrides, recorded under
# their own name: FISH-Tuning's selection baselines (the same search-size PEFT tree and
# budget as `<m>`, entries picked at random or by the lowest Fisher scores) and its
# warm-up variant. They always get these overrides (also with --no_method_overrides: they
# define the method), before --set, and the base method's learning rate unless
# --method_lr names them; a variant whose overrides set train.learning_rate
# (`fish_reference`) keeps that rate in the fixed-rate protocol, and with
# --select_on=validation runs its LR_GRIDS entry (the recipe's rate alone).
# The grid's `lora_fish`, `adapter_fish`, `dora_fish` and their baselines score the Fisher
# at the PEFT init, as the FISH-Tuning paper does (and as their recorded cells ran); the
# library's default became the Fisher after a warm-up, run here as `<m>_warmup`.
AT_INIT = "method.peft.fisher_after_warmup=False"
def recipe_overrides(recipe, base, task: str = "rte") -> tuple[str, ...]:
    """The `key=value` assignments that turn config `base(task)` into `recipe(task)`."""
    want = flatten_config(recipe(task).to_dict())
    have = flatten_config(base(task).to_dict())
    return tuple(f"{k}={want[k]!r}" for k in sorted(want) if want[k] != have.get(k))


# minilm-l6 with a 2-way head: all parameters, the attention q/k/v/o kernels and biases
# (SIFT's GLUE rule) and the classifier; `<m>_b<percent>` trains that share of all parameters.
MINILM_PARAMS, MINILM_ATTENTION, MINILM_HEAD = 22_713_986, 6 * 4 * (384 * 384 + 384), 770
CURVE_BUDGETS = (0.1, 2.0, 5.0)  # percent; 0.5 is the grid's own budget


def sift_rate(percent: float) -> float:
    """SIFT's per-tensor rate whose attention entries + the head make `percent`% of all
    parameters (0.5% -> 0.0318, METHOD_OVERRIDES)."""
    return (percent / 100 * MINILM_PARAMS - MINILM_HEAD) / MINILM_ATTENTION


BUDGET_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{f"{m}_b{p:g}": (m, (f"method.keep_ratio={p / 100}",))
       for m in ("fish", "random_mask", "ird") for p in CURVE_BUDGETS},
    **{f"sift_b{p:g}": ("sift", (f"method.sift.rate={sift_rate(p):.6f}",))
       for p in CURVE_BUDGETS},
}
XPEFT_MIXING_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "xpeft_soft": ("xpeft", ("method.xpeft.variant=soft",)),
    "xpeft_hard_k1": ("xpeft", ("method.xpeft.variant=hard", "method.xpeft.k=1")),
    **{f"xpeft_hard_k{k}_{mixing}": ("xpeft", ("method.xpeft.variant=hard", f"method.xpeft.k={k}",
                                               f"method.xpeft.mixing={mixing}"))
       for k in (2, 4) for mixing in ("mean", "sum")},
}
# X-PEFT on a task its bank does not hold: the bank of benchmarks/xpeft/xpeft_eval.py without
# the cell's task's adapters (`{task}` is the cell's task), per mixing variant; the encoder
# evidence's X-PEFT rows (benchmarks/grid/evidence.py).
XPEFT_LEAVE_OUT_BANK = "benchmarks/results/xpeft_eval/banks/without-{task}.safetensors"
XPEFT_LEAVE_OUT_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    name.replace("xpeft_", "xpeft_leaveout_", 1): (
        base, (*overrides, f"method.xpeft.pool={XPEFT_LEAVE_OUT_BANK}"))
    for name, (base, overrides) in XPEFT_MIXING_VARIANTS.items()}
METHOD_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{m: (m, (AT_INIT,)) for m in ("lora_fish", "adapter_fish", "dora_fish")},
    **{f"{m}_{sel}": (m, (AT_INIT, f"method.peft.selection={sel}"))
       for m in ("lora_fish", "adapter_fish", "dora_fish") for sel in ("random", "reversed")},
    # The zero-init remedy: Fisher after `warmup_steps` dense steps of the search module.
    **{f"{m}_warmup": (m, ("method.peft.fisher_after_warmup=True",))
       for m in ("lora_fish", "adapter_fish", "dora_fish")},
    # Vanilla adapters at X-PEFT's slots (after each FFN), bottleneck hidden/16.
    "adapter_pfeiffer": ("adapter", ("method.peft.adapter_variant=pfeiffer",)),
    # X-PEFT: random or trained pool, soft or hard masks, N adapters.
    **{f"xpeft_{pool}_{variant}_n{n}": ("xpeft", (
        f"method.xpeft.variant={variant}",
        f"method.xpeft.pool_size={n}" if pool == "random" else
        f"method.xpeft.pool={XPEFT_BANKS.replace('{n}', str(n))}"))
       for pool in ("random", "trained") for variant in ("soft", "hard") for n in (8, 32)},
    # The budget curves: the mask methods at other fractions of all parameters (head in
    # the budget, as the 0.5% cells), SIFT at the rate giving the same count.
    **BUDGET_VARIANTS,
    # FISH with the reference's recipe: what configs/fish_reference.py changes from
    # configs/glue.py, as overrides (so a merged cell is still recognised by them).
    "fish_reference": ("fish", recipe_overrides(fish_reference_configs.get_config,
                                                glue_configs.get_config)),
    # X-PEFT over the pool that --set method.xpeft.pool names (benchmarks/xpeft/xpeft_eval.py):
    # soft, or hard with K adapters per layer mixed by their mean or their sum (K = 1: one
    # adapter, the two are the same).
    **XPEFT_MIXING_VARIANTS,
    **XPEFT_LEAVE_OUT_VARIANTS,
}
# Peak learning rate per method (--method_lr); see the docstring's protocol.
DEFAULT_METHOD_LR = ("full=1e-4,fish=5e-4,random_mask=5e-4,bitfit=5e-4,ird=5e-4,sift=5e-4,"
                     "lora=5e-4,lora_fish=5e-4,dora=5e-4,dora_fish=5e-4,adapter=1e-3,"
                     "adapter_fish=1e-3,xpeft=1e-3,head_only=1e-3")
FALLBACK_CELL_OVERHEAD_S = 90.0
# The encoder read as all-MiniLM-L6-v2 was trained to be read (its pooler is not: a
# converged probe on the pooler output is 12 points below one on the token mean on
# SST-2, benchmarks/results/xpeft_eval/manifest.json): the later grids' `--set`s. A head on
# the token mean has no Hugging Face *ForSequenceClassification export (that head reads the
# pooler), so the cells export nothing (the config check refuses the pair otherwise).
MEAN_POOLING = ("model.pooling=mean", "train.export=False")
DEFAULT_COMPILATION_CACHE = "~/.cache/fishjax/jax-compilation-cache"
# README blocks (benchmarks/common/readme_blocks.py):
# `<!-- glue-table:begin <results.json> -->`.
README_BLOCK = "glue-table"


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config, assignment: str) -> None:
    if "=" not in assignment:
        raise SystemExit(f"--set expects key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        if p not in node:
            raise SystemExit(f"--set {key}: the config has no section {p!r}")
        node = node[p]
    if leaf not in node:
        raise SystemExit(f"--set {key}: the config has no such field")
    node[leaf] = parse_value(value)


def parse_row_splits(text: str) -> dict[str, str]:
    """`task=PATH,...` -> {task name: row split file}; '' -> {}."""
    out: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        task, sep, path = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"--row_split expects task=PATH,..., got {item!r}")
        if not os.path.isfile(path):
            raise SystemExit(f"--row_split {item}: {path} does not exist")
        out[get_task(task).name] = path
    return out


def parse_train_subset(text: str) -> dict[str, int]:
    """`task=N,...` -> {task name: N}; '' or 'none' -> {}."""
    out: dict[str, int] = {}
    if text.strip().lower() in ("", "none"):
        return out
    for item in text.split(","):
        task, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit() or int(n) <= 0:
            raise SystemExit(f"--train_subset expects task=N,... with N > 0, got {item!r}")
        out[get_task(task).name] = int(n)
    return out


# -- fixed training subsets --------------------------------------------------------------


def _tsv_rows(data: bytes) -> list[str]:
    """Non-empty lines as fishjax.data.glue parses them (utf-8-sig, no trailing \\r)."""
    text = data.decode("utf-8-sig")
    return [line.removesuffix("\r") for line in text.split("\n") if line.removesuffix("\r")]


def ensure_train_subset(task: str, source_dir: str, size: int, seed: int,
                        cache_root: str) -> tuple[str, dict[str, Any]]:
    """A task folder whose train.tsv holds `size` fixed rows of `source_dir`'s.

    Rows: `np.random.default_rng(seed).choice(n, size, replace=False)`, sorted (file order)
    — the rows `load_split(task, "train", source_dir, max_samples=size, seed=seed)` keeps.
    Eval files are copied unchanged. Built once under `cache_root` (atomic writes) and
    rebuilt if the source file changes; returns (folder, manifest).
    """
    spec = get_task(task)
    src = os.path.join(source_dir, f"{spec.train_split}.tsv")
    if not os.path.isfile(src):
        raise SystemExit(f"--train_subset {task}={size}: {src} not found (the subset is cut "
                         "from the TSV files of --glue_dir)")
    data = open(src, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    folder = os.path.join(cache_root, "glue_subsets",
                          f"{spec.glue_folder or spec.name}-train{size}-seed{seed}-{sha[:12]}")
    manifest_path = os.path.join(folder, "subset.json")
    if os.path.exists(manifest_path):
        manifest = read_json(manifest_path)
        if manifest.get("source_sha256") == sha and manifest.get("size") == size:
            return folder, manifest
    rows = _tsv_rows(data)
    header, rows = (rows[:1], rows[1:]) if spec.has_header else ([], rows)
    if size > len(rows):
        raise SystemExit(f"--train_subset {task}={size}: {src} has only {len(rows)} rows")
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=size, replace=False))
    for split in spec.eval_splits:
        path = os.path.join(source_dir, f"{split}.tsv")
        if not os.path.isfile(path):
            raise SystemExit(f"--train_subset {task}: eval file {path} not found")
        atomic_write_bytes(os.path.join(folder, f"{split}.tsv"), open(path, "rb").read())
    out = "\n".join(header + [rows[i] for i in keep]) + "\n"
    atomic_write_text(os.path.join(folder, f"{spec.train_split}.tsv"), out)
    manifest = {"task": spec.name, "size": size, "seed": seed, "source": os.path.abspath(src),
                "source_rows": len(rows), "source_sha256": sha,
                "train_sha256": hashlib.sha256(out.encode("utf-8")).hexdigest(),
                "rule": f"np.random.default_rng({seed}).choice({len(rows)}, {size}, "
                        "replace=False), sorted"}
    atomic_write_json(manifest_path, manifest)  # last: its presence marks a complete folder
    return folder, manifest


def _cache_root(config) -> str:
    if config.data.cache_dir:
        return config.data.cache_dir
    return os.environ.get("FISHJAX_CACHE", os.path.expanduser("~/.cache/fishjax"))


# -- cells -------------------------------------------------------------------------------


def base_method(method: str) -> str:
    """The registered method a grid method runs (itself, unless a METHOD_VARIANTS name)."""
    return METHOD_VARIANTS.get(method, (method, ()))[0]


def cell_overrides(method: str, args) -> list[str]:
    """The config assignments of a cell: the base method's METHOD_OVERRIDES, the variant's
    overrides, then --set."""
    base = base_method(method)
    own = () if getattr(args, "no_method_overrides", False) else METHOD_OVERRIDES.get(base, ())
    variant = METHOD_VARIANTS.get(method, (method, ()))[1]
    return list(own) + list(variant) + list(args.set)


def cell_config(task: str, method: str, seed: int, args):
    config = glue_configs.get_config(task)
    config.seed = seed
    config.method.name = base_method(method)
    config.model.name = args.model
    if args.glue_dir:
        config.data.dir = os.path.join(args.glue_dir, get_task(task).glue_folder)
    lrs = dict(item.split("=") for item in args.method_lr.split(",") if item)
    lr = lrs.get(method, lrs.get(base_method(method)))
    if lr is not None:
        config.train.learning_rate = float(lr)
    for assignment in cell_overrides(method, args):  # `{task}`: the cell's task
        apply_override(config, assignment.replace("{task}", task))
    subsets = parse_train_subset(getattr(args, "train_subset", "") or "")
    if task in subsets:
        if not config.data.dir:
            raise SystemExit(f"--train_subset {task}={subsets[task]} needs the TSV files: "
                             "pass --glue_dir (or --train_subset none)")
        config.data.dir, _ = ensure_train_subset(task, config.data.dir, subsets[task],
                                                 getattr(args, "subset_seed", 0),
                                                 _cache_root(config))
    row_splits = parse_row_splits(getattr(args, "row_split", "") or "")
    if task in row_splits:
        config.data.row_split = row_splits[task]
    return config


def _run_info(workdir: str) -> dict:
    path = os.path.join(workdir, "run_info.json")
    return read_json(path) if os.path.exists(path) else {}


def device_label() -> str:
    """What the cell ran on, e.g. `cpu` or `gpu: NVIDIA H100 80GB HBM3` (first device)."""
    kind = jax.devices()[0].device_kind
    backend = jax.default_backend()
    return backend if kind == backend else f"{backend}: {kind}"


def grid_command(args) -> str | None:
    """The command line that runs (and resumes) the grid a cell belongs to."""
    argv = getattr(args, "argv", None)
    return None if argv is None else shlex.join(["python", "-m", "benchmarks.grid.glue", *argv])


def run_cell(task: str, method: str, seed: int, args, config=None, cid: str | None = None
             ) -> dict:
    """Runs one cell (default: its glue.py config and id) and returns its record."""
    config = config or cell_config(task, method, seed, args)
    workdir = os.path.join(args.out, "cells", cid or cell_id(task, method, seed))
    t0 = time.perf_counter()
    res = train_and_evaluate(config, workdir)
    if not args.keep_checkpoints:  # ~0.3 GB per cell; logs, results and masks stay
        for sub in ("checkpoints", "best", "export"):
            shutil.rmtree(os.path.join(workdir, sub), ignore_errors=True)
    spec = get_task(task)
    best = res["best"] or {}
    info = _run_info(workdir)
    summary = res["method_summary"]
    subset_manifest = os.path.join(config.data.dir or "", "subset.json")
    return {
        "status": "ok",
        "task": task,
        "method": method,
        "base_method": base_method(method),
        "seed": seed,
        "main_metric": spec.main_metric,
        "final": res["final_eval"],
        "best": best.get("metrics"),
        "best_step": best.get("step"),
        "trainable_entries": summary["trainable_entries"],
        "total_params": info.get("total_params"),
        "train_examples": info.get("train_examples"),
        "method_summary": summary,
        "total_steps": res["total_steps"],
        "batch_size": config.train.batch_size,
        "max_length": config.data.max_length,
        "wall_s": time.perf_counter() - t0,
        "train_s": res["train_s"],
        "setup_s": res["setup_s"],
        "fisher_s": summary.get("fisher_seconds", summary.get("selection_seconds")),
        "learning_rate": config.train.learning_rate,
        "overrides": cell_overrides(method, args),
        "train_subset": read_json(subset_manifest) if config.data.dir
        and os.path.exists(subset_manifest) else None,
        "row_split": None if not config.data.row_split else {
            "path": config.data.row_split, "sha256": file_sha256(config.data.row_split)},
        "quick": bool(getattr(args, "quick", False)),
        "model": args.model,
        "command": grid_command(args),
        "device": device_label(),
        "workdir": workdir,
    }


# -- scores and tables -------------------------------------------------------------------


def _span(values: list[float], fmt) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"


def trainable_text(cells: dict[str, dict], method: str) -> str:
    """'113,570 (0.5%)' over the ok cells of `method` (a range if it differs by task)."""
    ok = [c for c in cells.values() if c.get("method") == method and c.get("status") == "ok"
          and c.get("trainable_entries") is not None]
    if not ok:
        return "–"
    text = _span([c["trainable_entries"] for c in ok], lambda v: f"{int(v):,}")
    fractions = [f for f in (trainable_fraction(c, cells) for c in ok) if f is not None]
    if fractions:
        text += " (" + _span([100 * f for f in fractions], lambda v: f"{v:.3g}%") + ")"
    return text


def markdown_table(cells: dict[str, dict], tasks: list[str], methods: list[str],
                   trainable: bool = True) -> str:
    """Rows: methods; columns: tasks (100 x mean ± std over seeds, n seeds), then the
    method's trainable entries (fraction of the model's parameters)."""
    header = [f"{t} ({get_task(t).main_metric})" for t in tasks] + (
        ["trainable (% of params)"] if trainable else [])
    lines = ["| method | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for m in methods:
        row = [m]
        for t in tasks:
            scores = [score_of(c) for c in cells.values()
                      if c["task"] == t and c["method"] == m and c["status"] == "ok"]
            scores = [100 * s for s in scores if s is not None]
            row.append(f"{np.mean(scores):.1f} ± {np.std(scores):.1f} (n={len(scores)})"
                       if scores else "–")
        if trainable:
            row.append(trainable_text(cells, m))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def results_table(state: dict) -> str:
    """The table of every task and method in a results.json (fixed order): a function of
    the JSON alone, so a README block can be checked against it."""
    cells = state["cells"]
    tasks = ordered({c["task"] for c in cells.values()}, TASK_ORDER)
    methods = ordered({c["method"] for c in cells.values()}, METHOD_ORDER)
    return markdown_table(cells, tasks, methods)


def compare_results(a: dict, b: dict) -> dict:
    """Cells finished in both grids: how many have the same main dev score, and the others
    (score x 100 in each), e.g. the same protocol on two devices."""
    shared = sorted(k for k, c in a["cells"].items() if c.get("status") == "ok"
                    and b["cells"].get(k, {}).get("status") == "ok")
    differ = {}
    for k in shared:
        x, y = score_of(a["cells"][k]), score_of(b["cells"][k])
        if x != y:
            differ[k] = [None if v is None else 100 * v for v in (x, y)]
    return {"shared": len(shared), "same": len(shared) - len(differ), "differ": differ}


# -- README block ----------------------------------------------------------------------

ReadmeError = readme_blocks.ReadmeError


def readme_block(readme_path: str, results_path: str) -> str:
    """The text of the README's glue-table block for `results_path`."""
    return readme_blocks.read(readme_path, README_BLOCK, results_path)


def write_readme(readme_path: str, results_path: str) -> None:
    """Rewrites the README's glue-table block for `results_path` from that file (atomic)."""
    table = results_table(read_json(results_path))
    readme_blocks.write(readme_path, README_BLOCK, results_path, table)


def check_readme(readme_path: str, results_path: str) -> list[str]:
    """Problems with the README's glue-table block for `results_path` ([] when it is
    exactly what that file generates)."""
    if not os.path.isfile(results_path):
        return [f"{results_path}: no such file"]
    problems = readme_blocks.check(readme_path, README_BLOCK, results_path,
                                   results_table(read_json(results_path)))
    if problems and len(problems) > 1:
        problems[0] += " (rerun `python -m benchmarks.grid.glue --report --readme ...`)"
    return problems


# -- time estimate -----------------------------------------------------------------------


def _train_rows(config, task: str) -> int | None:
    if config.data.row_split:
        return len(load_row_split(config.data.row_split).train)
    spec = get_task(task)
    path = os.path.join(config.data.dir or "", f"{spec.train_split}.tsv")
    if config.data.dir and os.path.isfile(path):
        n = len(_tsv_rows(open(path, "rb").read())) - (1 if spec.has_header else 0)
    else:
        n = GLUE_TRAIN_SIZES.get(spec.name)
    if n is not None and config.data.max_train_samples:
        n = min(n, config.data.max_train_samples)
    return n


def planned_steps(config, task: str) -> int | None:
    t = config.train
    if t.num_steps:
        steps = t.num_steps
    else:
        n = _train_rows(config, task)
        if n is None:
            return None
        steps = math.ceil(t.num_epochs * math.ceil(n / t.batch_size))
    return min(steps, t.stop_after_steps) if t.stop_after_steps else steps


def recorded_length(cell: dict) -> int | None:
    """A finished cell's sequence length: its record's, else its task's config default."""
    if cell.get("max_length"):
        return int(cell["max_length"])
    try:
        return int(glue_configs.get_config(cell["task"]).data.max_length)
    except (KeyError, ValueError):
        return None


def estimate_cell_s(task: str, method: str, steps: int | None, batch: int,
                    cells: dict[str, dict], length: int | None = None) -> tuple[float, str]:
    """(seconds, basis) for one cell; see the module doc. With `length` (the cell's
    sequence length), a step timed on another task counts in proportion to the lengths."""
    ok = [c for c in cells.values() if c.get("status") == "ok" and c.get("wall_s")
          and c.get("total_steps")]
    pools = (("same task and method", [c for c in ok if (c["task"], c["method"]) ==
                                       (task, method)]),
             ("same method, other tasks", [c for c in ok if c["method"] == method]),
             ("same task, other methods", [c for c in ok if c["task"] == task]))
    for basis, pool in pools:
        if pool:
            per_step = float(np.mean([c["wall_s"] / c["total_steps"] * _length_ratio(
                length, c, task) for c in pool]))
            if steps is None:
                return float(np.mean([c["wall_s"] for c in pool])), basis
            return per_step * steps, basis
    if steps is None:
        return float("nan"), "unknown size"
    return FALLBACK_CELL_OVERHEAD_S + steps * batch / FALLBACK_EX_PER_S, "fallback rate"


def _length_ratio(length: int | None, cell: dict, task: str) -> float:
    have = recorded_length(cell)
    return length / have if length and have and cell["task"] != task else 1.0


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def estimate_grid(todo: list[tuple[str, str, int]], cells: dict[str, dict], args) -> dict:
    """Expected wall time of the cells still to run, per task and in all."""
    per_task: dict[str, float] = {}
    bases: dict[str, int] = {}
    for t, m, s in todo:
        config = cell_config(t, m, s, args)
        sec, basis = estimate_cell_s(t, m, planned_steps(config, t), config.train.batch_size,
                                     cells, config.data.max_length)
        per_task[t] = per_task.get(t, 0.0) + sec
        bases[basis] = bases.get(basis, 0) + 1
    return {"total_s": float(sum(per_task.values())), "per_task_s": per_task, "bases": bases}


def print_estimate(est: dict, n_cells: int) -> None:
    if not n_cells:
        print("expected wall time: nothing to run (every cell is finished)", flush=True)
        return
    basis = ", ".join(f"{n} from {b}" for b, n in est["bases"].items())
    per_task = ", ".join(f"{t} {_fmt_s(s)}" for t, s in est["per_task_s"].items())
    print(f"expected wall time: {_fmt_s(est['total_s'])} for {n_cells} cells "
          f"({per_task}; estimates: {basis})", flush=True)


# -- main --------------------------------------------------------------------------------


def _warn_mismatched(cells: dict[str, dict], grid, args) -> None:
    """Finished cells run with other overrides are kept (resumable), but said so."""
    for g in grid:
        c = cells.get(cell_id(*g), {})
        want = cell_overrides(g[1], args)
        if c.get("status") == "ok" and list(c.get("overrides", [])) != want:
            log.warning("%s was run with overrides %s, this run has %s (kept; delete it from "
                        "results.json to rerun)", cell_id(*g), c.get("overrides"), want)


def _refuse_changed(cells: dict[str, dict], tasks, methods, args) -> None:
    """--select_on=validation resumes only cells run as this command would run them: the
    same overrides, model and row split (the file's content: --row_split's or the carved
    validation split's)."""
    for cid, c in cells.items():
        if c.get("status") != "ok" or c.get("task") not in tasks or c.get("method") \
                not in methods:
            continue
        want = cell_overrides(c["method"], args)
        if list(c.get("overrides", [])) != want:
            raise SystemExit(f"{cid} in {args.out} ran with overrides {c.get('overrides')}, "
                             f"this command has {want}: use another --out, or remove the "
                             "cell from results.json to rerun it")
        if c.get("model") not in (None, args.model):
            raise SystemExit(f"{cid} in {args.out} ran on model {c['model']!r}, this command "
                             f"on {args.model!r}: use another --out")
        split = validation_cell_config(c["task"], c["method"], c["learning_rate"], c["seed"],
                                       args).data.row_split
        have = (c.get("row_split") or {}).get("sha256")
        if split and have is not None and have != file_sha256(split):
            raise SystemExit(f"{cid} in {args.out} trained on other rows than {split} holds "
                             "now: use another --out")


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=None, help="folder with one subfolder per GLUE task")
    p.add_argument("--tasks", default=None, help="comma list (default rte)")
    p.add_argument("--methods", default=None, help="comma list (default full)")
    p.add_argument("--seeds", default=None, help="comma list (default 0)")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--out", default=None, help=f"default {DEFAULT_OUT} ({QUICK_OUT} with "
                   "--quick)")
    p.add_argument("--method_lr",
                   default=DEFAULT_METHOD_LR,
                   help="per-method peak learning rate, method=lr,...")
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--no_method_overrides", action="store_true",
                   help="do not apply METHOD_OVERRIDES (each method's budget-matching settings)")
    p.add_argument("--train_subset", default=DEFAULT_TRAIN_SUBSET,
                   help="fixed training subsets, task=N,... ('none': whole training sets)")
    p.add_argument("--subset_seed", type=int, default=0, help="seed of --train_subset rows")
    p.add_argument("--row_split", default="",
                   help="task=PATH,...: a fishjax.data.row_split file per task (the rows each "
                   "cell trains on; with --select_on=validation also its validation rows, "
                   "replacing the carved split); indices into the training split as loaded")
    p.add_argument("--select_on", choices=("dev_last", "validation"), default="dev_last",
                   help="dev_last: the fixed-rate protocol; validation: learning rates chosen "
                   "on a held-out split of the training set "
                   "(benchmarks/grid/validation_protocol.py)")
    p.add_argument("--lr_grid", default="",
                   help="--select_on=validation: rates per method, method=a/b/c,... (default "
                   "validation_protocol.LR_GRIDS)")
    p.add_argument("--validation_fraction", type=float, default=vp.FRACTION)
    p.add_argument("--validation_cap", type=int, default=vp.CAP)
    p.add_argument("--validation_seed", type=int, default=vp.SPLIT_SEED)
    p.add_argument("--quick", action="store_true",
                   help="one task, one seed, few steps (see the module doc)")
    cli.add_json(p, help="also write results.json here")
    cli.add_readme(p, README_BLOCK,
                   help="rewrite the glue-table block of this README from results.json",
                   report="only rewrite results.md (and --plots/--readme) from results.json; "
                   "without --tasks/--methods its table has every task and method there")
    p.add_argument("--plots", action="store_true", help="write <out>/plots/ (matplotlib)")
    p.add_argument("--check_readme", default=None,
                   help="check this README's glue-table block against results.json, exit 1 "
                   "if it differs (runs nothing)")
    p.add_argument("--compare", default=None,
                   help="another results.json: print how many shared cells have the same "
                   "main score as <out>'s (runs nothing)")
    p.add_argument("--estimate", action="store_true",
                   help="print the expected wall time of the cells still to run, run nothing")
    p.add_argument("--estimate_from", default=None,
                   help="a results.json whose finished cells calibrate the estimate (default: "
                   "<out>/results.json), e.g. a grid run on the same machine")
    p.add_argument("--stop_dir", default=None,
                   help="`touch <stop_dir>/STOP` stops the grid between cells (default --out; "
                   "cleared when a grid starts)")
    p.add_argument("--keep_checkpoints", action="store_true",
                   help="keep each cell's checkpoints and export (deleted by default)")
    p.add_argument("--compilation_cache", default=DEFAULT_COMPILATION_CACHE,
                   help="JAX's persistent compilation cache folder, shared by the cells (every "
                   "cell compiles the same programs); '' turns it off")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # each cell records its command
    args.derive_table = args.report and args.tasks is None and args.methods is None
    if args.quick:
        args.tasks = args.tasks or "rte"
        args.seeds = args.seeds or "0"
        if args.methods is None:
            args.methods = ",".join(m for m in QUICK_METHODS if m in available_methods())
        args.out = args.out or QUICK_OUT
        args.set = list(QUICK_OVERRIDES) + args.set
    args.tasks = args.tasks or "rte"
    args.methods = args.methods or "full"
    args.seeds = args.seeds or "0"
    args.out = args.out or DEFAULT_OUT
    return args


def validation_cell_config(task: str, method: str, lr: float, seed: int, args):
    """A glue.py cell's config at learning rate `lr`, trained without the task's
    validation rows (which it evaluates as the `validation` split)."""
    config = cell_config(task, method, seed, args)
    config.train.learning_rate = lr
    if config.data.row_split:  # --row_split: the file names the validation rows
        if load_row_split(config.data.row_split).validation is None:
            raise SystemExit(f"--select_on=validation: --row_split {task}="
                             f"{config.data.row_split} holds no `validation` rows")
        return config
    n = _train_rows(config, task)
    if n is None:
        raise SystemExit(f"--select_on=validation: the size of {task}'s training split is "
                         "unknown: pass --glue_dir")
    config.data.row_split = vp.ensure_split(task, n, args.out, args.validation_fraction,
                                            args.validation_cap, args.validation_seed)
    return config


def run_validation_grid(args, tasks, methods, seeds, state, results_path) -> dict:
    """--select_on=validation (benchmarks/grid/validation_protocol.py): every rate on the first
    seed, then the chosen rate on the others; cells written as they finish."""
    grids = vp.parse_lr_grid(args.lr_grid)

    def rates_of(m):
        return vp.grid_of(m, base_method(m), grids)

    cells = state["cells"]
    if not args.report:
        _refuse_changed(cells, tasks, methods, args)
    if args.estimate or not args.report:
        planned = vp.todo(tasks, methods, seeds, rates_of, cells)
        unchosen = [(t, m) for t in tasks for m in methods if vp.choose_lr(
            cells, t, m, rates_of(m), seeds[0])[0] is None]
        later = [(t, m, s) for t, m in unchosen for s in seeds[1:]]
        basis = read_json(args.estimate_from)["cells"] if args.estimate_from else cells
        est = estimate_grid([(t, m, s) for t, m, _, s in planned] + later, basis, args)
        print_estimate(est, len(planned) + len(later))
        if args.estimate:
            return state
    majority = {t: vp.majority_score(t, cell_config(t, methods[0], seeds[0], args).data.dir)
                for t in tasks}
    failed: set[str] = set()  # this run's crashed cells: not retried until the next run
    while not args.report and not stop_requested(args):
        todo = [g for g in vp.todo(tasks, methods, seeds, rates_of, cells)
                if vp.cell_id(*g) not in failed]
        if not todo:
            break
        t, m, lr, s = todo[0]
        cid = vp.cell_id(t, m, lr, s)
        log.info("[%d to run] %s", len(todo), cid)
        try:
            cells[cid] = run_cell(t, m, s, args, validation_cell_config(t, m, lr, s, args), cid)
            cells[cid].update({"select_on": "validation", "majority_dev": majority[t],
                               "validation_score": vp.validation_score(cells[cid])})
        except Exception as e:  # one broken cell must not stop the grid
            cells[cid] = {"status": "error", "task": t, "method": m, "seed": s,
                          "learning_rate": lr, "main_metric": get_task(t).main_metric,
                          "error": repr(e), "traceback": traceback.format_exc()}
            log.error("%s failed: %r", cid, e)
            failed.add(cid)
        state["selection"] = vp.selection_summary(cells, tasks, methods, seeds, rates_of)
        atomic_write_json(results_path, state)
        atomic_write_text(os.path.join(args.out, "results.md"),
                          vp.markdown_table(state["selection"], tasks, methods))
    state["selection"] = vp.selection_summary(cells, tasks, methods, seeds, rates_of)
    table = vp.markdown_table(state["selection"], tasks, methods)
    atomic_write_json(results_path, state)
    atomic_write_text(os.path.join(args.out, "results.md"), table)
    cli.write_json(args.json, state)
    print(table)
    return state


def _stop_dir(args) -> str:
    return getattr(args, "stop_dir", None) or args.out


def stop_requested(args) -> bool:
    """`touch <stop_dir>/STOP`: the running cell finishes and is written, no other starts."""
    if cli.stop_requested(_stop_dir(args)):
        log.warning("stop requested (%s): no further cells", cli.stop_file(_stop_dir(args)))
        return True
    return False


def use_compilation_cache(path: str) -> None:
    """Points JAX's persistent compilation cache at `path` ('' : off), unless the
    environment already chose one."""
    if path and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("fishjax").setLevel(logging.INFO)  # progress; not orbax's file log
    use_compilation_cache(args.compilation_cache)

    tasks = [get_task(t).name for t in args.tasks.split(",")]
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    parse_train_subset(args.train_subset)  # fail early on a malformed flag
    parse_row_splits(args.row_split)
    results_path = os.path.join(args.out, "results.json")
    if args.compare:
        cmp = compare_results(read_json(results_path), read_json(args.compare))
        print(f"{cmp['shared']} cells in both {results_path} and {args.compare}: "
              f"{cmp['same']} with the same main dev score")
        for k, (x, y) in cmp["differ"].items():
            if x is None or y is None:
                print(f"  {k}: {x} vs {y} (no score)")
            else:
                print(f"  {k}: {x:.2f} vs {y:.2f} ({y - x:+.2f})")
        return cmp
    if args.check_readme:
        problems = check_readme(args.check_readme, results_path)
        print("\n".join(problems) or f"{args.check_readme}: glue table matches {results_path}")
        if problems:
            raise SystemExit(1)
        return read_json(results_path)
    cli.check_readme(args.readme, README_BLOCK, results_path)  # before the grid, not after
    if not args.report and not args.estimate:
        cli.clear_stop_file(_stop_dir(args))
    state = read_json(results_path) if os.path.exists(results_path) else {"cells": {}}
    if args.report and not os.path.exists(results_path):
        raise SystemExit(f"--report: {results_path} does not exist")
    cells = state["cells"]
    if args.derive_table:  # `--report` alone: every task and method in results.json
        tasks = ordered({c["task"] for c in cells.values()}, TASK_ORDER)
        methods = ordered({c["method"] for c in cells.values()}, METHOD_ORDER)

    if args.select_on == "validation":
        return run_validation_grid(args, tasks, methods, seeds, state, results_path)

    # Seed-major order: every method on every task for seed 0 first, so a partial grid
    # already compares methods.
    grid = [(t, m, s) for s in seeds for t in tasks for m in methods]
    if args.report:
        todo = []
    else:
        todo = [g for g in grid if cells.get(cell_id(*g), {}).get("status") != "ok"]
        _warn_mismatched(cells, grid, args)
    finished = sum(cells.get(cell_id(*g), {}).get("status") == "ok" for g in grid)
    log.info("%d cells, %d already finished, %d to run", len(grid), finished, len(todo))
    if todo or args.estimate:
        basis = read_json(args.estimate_from)["cells"] if args.estimate_from else cells
        print_estimate(estimate_grid(todo, basis, args), len(todo))
    if args.estimate:
        return state
    bar = progress_bar(len(todo), "grid", "cell")  # on a terminal only
    with bar, logs_above(bar):
        for i, (t, m, s) in enumerate(todo):
            if stop_requested(args):
                break
            cid = cell_id(t, m, s)
            log.info("[%d/%d] %s", i + 1, len(todo), cid)
            try:
                cells[cid] = run_cell(t, m, s, args)
            except Exception as e:  # one broken cell must not stop the grid
                cells[cid] = {"status": "error", "task": t, "method": m, "seed": s,
                              "main_metric": get_task(t).main_metric, "error": repr(e),
                              "traceback": traceback.format_exc()}
                log.error("%s failed: %r", cid, e)
            atomic_write_json(results_path, state)
            atomic_write_text(os.path.join(args.out, "results.md"),
                              markdown_table(cells, tasks, methods))
            bar.update(1)

    table = markdown_table(cells, tasks, methods)
    atomic_write_text(os.path.join(args.out, "results.md"), table)
    cli.write_json(args.json, state)
    if args.plots:
        written = plots.make_plots(args.out)
        print("plots: " + ", ".join(written))
    if args.readme:
        write_readme(args.readme, results_path)
        print(f"{args.readme}: glue table rewritten from {results_path}")
    print(table)
    return state


if __name__ == "__main__":
    main()
