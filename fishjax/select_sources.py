"""`select_sources(config, workdir)`: multi-source selection end to end, and its CLI.

  python -m fishjax.select_sources --config=configs/select_sources.py --workdir=/tmp/ms \\
      --config.data.dir=../shared/data/glue/MRPC
  python -m fishjax.select_sources --config=configs/select_sources.py:sst2 --workdir=/tmp/ms2

The method is `fishjax.selection.multisource` (design note there: Li et al., 2024); this
module runs it on a task. Each step writes its result to the workdir and is skipped when
that file is already there, so a rerun resumes (and a changed `config.sources` or method is
refused: start a new workdir; the estimate settings, `ESTIMATE_SETTINGS`, may change, since
steps 5 and 6 are computed again on every run):

1. `pool.json`: the sources, named sets of rows of the pooled training split (the target
   task's, then `config.data.mix`'s other tasks' rows). Kind "groups": the target task's
   rows minus a seeded `sources.target_fraction` held out as the target examples, cut into
   `sources.groups` seeded groups of near-equal size, `sources.noisy` of them with every
   label flipped. Kind "shards": `sources.shards` entries "task:count:rows:flip", shards
   drawn from each task's rows (the target held out from the target task's first), a
   seeded `flip` share of each shard's labels flipped. Kind "tasks" (task `instruct`): one
   source per task of the instruction mixture (`config.data.instruct.tasks`), a seeded
   `sources.rows_per_source` of its training rows; `sources.target_rows` of the
   `sources.target_task`'s rows held out as the target examples (the rest of that task is
   a source like the others); the `sources.corrupted` tasks' targets shuffled across their
   rows (`fishjax.data.row_split`: every corrupted row takes the next one's target, all
   corrupted rows of a run in one rotation, so at a boundary between two corrupted tasks a
   row takes the other task's target). The runs before the final fine-tune skip the
   mixture's generation evaluation (`instruct_eval`): they are scored on the target rows.
2. `meta/`: the meta-initialisation phi*: `config.method` (LoRA) trained by the ordinary
   trainer on every source for `sources.meta_epochs` (a row split, `fishjax.data.row_split`).
   Every run validates on the target rows; `sources.checkpoint` says whether it keeps its
   best evaluation's params ("best": each epoch evaluated) or its last ("last": evaluated
   once, at the end).
3. `features.safetensors`: for every source and target example, f* (log-odds of its label
   as trained, flipped for noisy rows, at phi*) and g~ = P^T grad f (the LoRA tree, and the
   head with `sources.features_with_head`; P seeded by `sources.seed`, dimension
   `sources.project_dim`): one pass of the per-example engine.
4. `calibration.json`: c, the mean |phi_S - phi*| / |phi*| over `sources.calibration_runs`
   true fine-tunes from phi* (`sources.finetune_epochs`) on random subsets, then frozen; or
   `sources.scale` if set. The runs' true target losses are recorded too.
5. `estimates.json`: `sources.num_subsets` subsets of `sources.subset_fraction` of the
   sources, each subset's first-order target loss and accuracy (one compiled call).
6. `ranking.json`: per rule (random ensemble, ridge surrogate, forward selection as the
   reference does it and greedy, gradient similarity) every source's score (higher is
   better; by `sources.score_metric`) and the sources kept (`sources.keep_fraction` of
   them; the one-pass forward selection keeps what it keeps); with noisy sources, each
   rule's AUROC at telling them from the rest. `selection.json`: the sources
   `sources.rule` keeps.
7. `final-<digest of the sources>/` (if `sources.final_finetune`): the base model
   fine-tuned once on the chosen sources (`config.method`, `config.train`), evaluated on
   dev and on the target rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import ConfigError, exit_status
from fishjax.core.io import atomic_write_json, file_sha256, read_json
from fishjax.core.progress import show_logs
from fishjax.core.safetensors_io import read_tagged, write_tagged
from fishjax.core.tree import PyTree, flatten_paths, split_tree
from fishjax.data import DataError, get_task, index_batches
from fishjax.data.instructions import Mixture
from fishjax.data.metrics import auroc, spearman
from fishjax.data.mixture import mix_blocks, parse_mix
from fishjax.data.row_split import (
    VALIDATION,
    RowSplit,
    load_row_split,
    make_row_split,
    save_row_split,
)
from fishjax.methods.common import parse_chunk_size
from fishjax.methods.peft.method import peft_combine
from fishjax.methods.peft.peft_file import PEFT_FILE, load_peft_file
from fishjax.models import load_model, load_tokenizer
from fishjax.objectives import for_task, make_feature_fn
from fishjax.selection import multisource as ms
from fishjax.train.cli import parse_flags
from fishjax.train.task_data import INSTRUCT_TASK, load_raw_splits, tokenize_task
from fishjax.train.trainer import finished_results, train_and_evaluate
from fishjax.train.validation import prepare_workdir, validate_config

log = logging.getLogger("fishjax")


def _save_json(path: str, obj: dict[str, Any]) -> None:
    """A selection file (settings, pool, calibration, estimates, ranking, selection,
    summary): sealed, so a changed byte is refused when it is read back."""
    atomic_write_json(path, obj, sealed=True)


def read_selection_file(path: str) -> Any:
    """A JSON file a selection run wrote (pool.json, ranking.json, ...), its seal checked
    and its seal entries dropped; ConfigError if it is damaged."""
    return read_json(path, ConfigError, "selection")

KINDS = ("groups", "shards", "tasks")
RULES = ("ensemble", "ridge", "forward", "forward_greedy", "gradient_similarity")
SCORE_METRICS = ("loss", "accuracy")
# config.sources.checkpoint: a run keeps its best evaluation's params or its last ones
CHECKPOINTS = ("best", "last")
LAST_ONLY = 2**31 - 1  # eval_every_steps of a "last" run: it evaluates only at its end
# config.sources fields read only by the estimates and rankings (step 5 on): a workdir's
# trained parts (pool, meta-initialisation, features, calibration) serve any values of them.
ESTIMATE_SETTINGS = ("C", "offsets", "solver_iters", "num_subsets", "rule", "keep_fraction",
                     "score_metric", "final_finetune")
FEATURES_KEY = "fishjax_features"
# Recorded in features.safetensors: which labels the rows were featurised with. Files
# without it came from the code that used the clean labels of noisy rows (refused).
FEATURE_LABELS = "as trained: noisy rows flipped"

# -- the pool of sources -----------------------------------------------------------------


@dataclasses.dataclass
class SourcePool:
    """Named sources (rows of the pooled training split), the target rows, the noisy
    sources and, per noisy source, its flipped rows (None: every row of a noisy source)."""

    sources: dict[str, list[int]]
    target: list[int]
    noisy: list[str]
    flips: dict[str, list[int]] | None = None

    @property
    def names(self) -> list[str]:
        """The sources in name order: a source's index (in subsets, features) is its place
        here, the same whether the pool was just made or read back from pool.json."""
        return sorted(self.sources)

    def flipped(self) -> set[int]:
        if self.flips is not None:
            return {r for rows in self.flips.values() for r in rows}
        return {r for name in self.noisy for r in self.sources[name]}

    def row_split(self, names: list[str]) -> RowSplit:
        """Train on the rows of `names` (noisy ones flipped), validate on the target."""
        train = sorted(r for n in names for r in self.sources[n])
        flipped = self.flipped()
        return make_row_split(train, [r for r in train if r in flipped], self.target,
                              source=f"sources {names}")

    def feature_split(self, num_rows: int) -> RowSplit:
        """Every row of the pooled training set (so row ids stay ids), the noisy sources'
        rows flipped: the labels the features are taken with."""
        return make_row_split(range(num_rows), sorted(self.flipped()),
                              source="features of every pooled row")

    def source_of(self) -> tuple[np.ndarray, np.ndarray]:
        """(every source row, in source order; the index of its source)."""
        rows = np.concatenate([np.asarray(self.sources[n], np.int64) for n in self.names])
        which = np.concatenate([np.full(len(self.sources[n]), k) for k, n in
                                enumerate(self.names)])
        return rows, which


def make_group_pool(num_rows: int, groups: int, noisy: int, target_fraction: float,
                    seed: int) -> SourcePool:
    """The target's training set cut into seeded groups, `noisy` of them label-flipped."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_rows)
    n_target = int(round(target_fraction * num_rows))
    if n_target < 1 or num_rows - n_target < groups:
        raise ConfigError(f"config.sources: {num_rows} training rows cannot give "
                          f"{n_target} target rows and {groups} groups")
    target = sorted(int(i) for i in order[:n_target])
    parts = np.array_split(order[n_target:], groups)
    sources = {f"g{k:02d}": sorted(int(i) for i in part) for k, part in enumerate(parts)}
    names = list(sources)
    bad = sorted(names[i] for i in rng.choice(groups, size=noisy, replace=False))
    return SourcePool(sources=sources, target=target, noisy=bad)


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """`count` shards of `rows` rows each of `task`'s block, `flip` of each shard's labels
    flipped (seeded): one `config.sources.shards` entry, "task:count:rows:flip"."""

    task: str
    count: int
    rows: int
    flip: float

    @classmethod
    def parse(cls, text: str) -> ShardSpec:
        parts = str(text).split(":")
        try:
            task, count, rows, flip = parts[0], int(parts[1]), int(parts[2]), float(parts[3])
            if len(parts) != 4 or count < 1 or rows < 1 or not 0.0 <= flip <= 1.0:
                raise ValueError
        except (ValueError, IndexError):
            raise ConfigError(f"config.sources.shards entry {text!r} must be "
                              "'task:count:rows:flip' (count, rows >= 1; flip in [0, 1]), "
                              "e.g. 'sst2:4:200:0.5'") from None
        return cls(get_task(task).name, count, rows, flip)

    def names(self, start: int) -> list[str]:
        tag = f"-flip{round(100 * self.flip)}" if self.flip else ""
        return [f"{self.task}{tag}-{start + k:02d}" for k in range(self.count)]


def make_shard_pool(blocks: dict[str, tuple[int, int]], main: str, specs: list[ShardSpec],
                    target_fraction: float, seed: int) -> SourcePool:
    """Sources cut from the pooled training split's task blocks ({task: (start, stop)} row
    ranges; `main` is the target task): a seeded `target_fraction` of the main block held
    out as the target, then each spec's shards drawn without replacement from its task's
    block, a seeded `flip` share of each shard's rows flipped."""
    rng = np.random.default_rng(seed)
    free = {task: rng.permutation(np.arange(*span)) for task, span in blocks.items()}
    n_target = int(round(target_fraction * len(free[main])))
    target, free[main] = sorted(int(i) for i in free[main][:n_target]), free[main][n_target:]
    sources: dict[str, list[int]] = {}
    flips: dict[str, list[int]] = {}
    for spec in specs:
        if spec.task not in blocks:
            raise ConfigError(f"config.sources.shards: task {spec.task!r} has no rows in the "
                              f"pooled training split (its tasks: {sorted(blocks)}; add it "
                              "to config.data.mix)")
        start = sum(1 for n in sources if n.startswith(spec.task + "-"))
        for name in spec.names(start):
            if len(free[spec.task]) < spec.rows:
                raise ConfigError(f"config.sources.shards: {spec.task!r} has {len(free[spec.task])}"
                                  f" rows left for shard {name} of {spec.rows} (after the target "
                                  "and the shards before it): fewer or smaller shards")
            take, free[spec.task] = free[spec.task][:spec.rows], free[spec.task][spec.rows:]
            sources[name] = sorted(int(i) for i in take)
            if spec.flip:
                n_flip = int(round(spec.flip * spec.rows))
                flips[name] = sorted(int(i) for i in rng.choice(take, n_flip, replace=False))
    return SourcePool(sources=sources, target=target, noisy=sorted(flips), flips=flips)


def make_task_pool(blocks: dict[str, tuple[int, int]], target_task: str, target_rows: int,
                   rows_per_source: int | None, corrupted: list[str], seed: int) -> SourcePool:
    """One source per task of an instruction mixture ({task: (start, stop)}: its rows in the
    pooled training split): a seeded `target_rows` of `target_task`'s rows held out as the
    target, then a seeded `rows_per_source` of each task's (remaining) rows (None: all);
    every row of a `corrupted` task flipped (its targets shuffled)."""
    rng = np.random.default_rng(seed)
    sources: dict[str, list[int]] = {}
    target: list[int] = []
    for task, span in blocks.items():
        free = rng.permutation(np.arange(*span))
        if task == target_task:
            target, free = sorted(int(i) for i in free[:target_rows]), free[target_rows:]
        need = 2 if rows_per_source is None else rows_per_source
        if len(free) < need:
            held = f" after the {target_rows} target rows" if task == target_task else ""
            raise ConfigError(f"config.sources: task {task!r} has {len(free)} training rows"
                              f"{held}, fewer than rows_per_source={rows_per_source} (or 2)")
        take = free if rows_per_source is None else free[:rows_per_source]
        sources[task] = sorted(int(i) for i in take)
    if len(target) < target_rows:
        raise ConfigError(f"config.sources.target_task {target_task!r} has no "
                          f"{target_rows} training rows to hold out")
    return SourcePool(sources=sources, target=target, noisy=sorted(corrupted),
                      flips={t: sources[t] for t in sorted(corrupted)})


# -- configs of the runs ---------------------------------------------------------------------


def source_count(config: ml_collections.ConfigDict) -> int:
    """How many sources config.sources makes (its shard entries parsed and checked)."""
    s = config.sources
    if s.kind == "groups":
        return int(s.groups)
    if s.kind == "tasks":
        return len(Mixture.from_config(config.data.get("instruct")).tasks)
    return sum(ShardSpec.parse(e).count for e in s.get("shards") or ())


def validate_sources(config: ml_collections.ConfigDict) -> None:
    """config.sources (and that the method can be meta-initialised: vanilla LoRA)."""
    if "sources" not in config:
        raise ConfigError("config.sources is missing (see configs/select_sources.py)")
    s = config.sources

    def need(cond: bool, message: str) -> None:
        if not cond:
            raise ConfigError(f"config.sources.{message}")

    need(s.kind in KINDS, f"kind must be one of {KINDS}, got {s.kind!r}")
    if s.kind == "tasks":
        _validate_task_sources(config)
    if s.kind == "groups":
        need(isinstance(s.groups, int) and s.groups >= 2, f"groups must be an int >= 2, got "
             f"{s.groups!r}")
        need(isinstance(s.noisy, int) and 0 <= s.noisy < s.groups,
             f"noisy must be in 0..groups-1, got {s.noisy!r}")
    need(s.kind == "tasks" or 0.0 < s.target_fraction < 1.0, "target_fraction must be in "
         f"(0, 1), got {s.target_fraction}")
    for name in ("project_dim", "num_subsets", "solver_iters"):
        need(isinstance(s[name], int) and s[name] >= 1, f"{name} must be a positive int, got "
             f"{s[name]!r}")
    need(isinstance(s.calibration_runs, int) and s.calibration_runs >= 0,
         f"calibration_runs must be >= 0, got {s.calibration_runs!r}")
    need(s.scale is not None or s.calibration_runs >= 1,
         "calibration_runs must be >= 1 when scale is None (c must come from somewhere)")
    need(s.scale is None or (math.isfinite(s.scale) and s.scale > 0),
         f"scale must be None or > 0, got {s.scale!r}")
    for name in ("subset_fraction", "keep_fraction"):
        need(0.0 < s[name] <= 1.0, f"{name} must be in (0, 1], got {s[name]}")
    count = source_count(config)
    need(count >= 2, f"shards must give 2 or more sources, got {count}")
    size = int(round(s.subset_fraction * count))  # checked now, not after meta-training
    need(1 <= size <= count, f"subset_fraction {s.subset_fraction} of {count} "
         f"sources gives {size} per subset (need 1..{count})")
    need(math.isfinite(s.C) and s.C > 0, f"C must be > 0, got {s.C!r}")
    need(s.rule in RULES, f"rule must be one of {RULES}, got {s.rule!r}")
    need(s.score_metric in SCORE_METRICS, f"score_metric must be one of {SCORE_METRICS}, "
         f"got {s.score_metric!r}")
    need(s.get("checkpoint", "best") in CHECKPOINTS, f"checkpoint must be one of "
         f"{CHECKPOINTS}, got {s.get('checkpoint')!r}")
    for name in ("meta_epochs", "finetune_epochs"):
        need(s[name] > 0, f"{name} must be > 0, got {s[name]}")
    for name in ("offsets", "final_finetune", "features_with_head"):
        need(isinstance(s[name], bool), f"{name} must be True or False, got {s[name]!r}")
    if config.method.name != "lora":
        raise ConfigError(f"config.method.name={config.method.name!r}: the meta-initialisation "
                          "and the fine-tunes from it are LoRA runs (method 'lora')")
    if for_task(get_task(config.task)).feature_output_name is None:
        raise ConfigError("multi-source selection needs a task whose objective has a feature "
                          "output (classification: log-odds)")
    validate_config(config)


def _validate_task_sources(config: ml_collections.ConfigDict) -> None:
    """Kind "tasks": the instruction mixture's tasks are the sources."""
    s = config.sources
    if get_task(config.task).name != INSTRUCT_TASK:
        raise ConfigError(f"config.sources.kind='tasks' needs task {INSTRUCT_TASK!r} (the "
                          f"mixture's tasks are the sources), got {config.task!r}")
    try:
        mixture = Mixture.from_config(config.data.get("instruct"))
    except DataError as e:
        raise ConfigError(str(e)) from None
    if s.get("target_task") not in mixture.tasks:
        raise ConfigError(f"config.sources.target_task={s.get('target_task')!r} must be one "
                          "of config.data.instruct.tasks")
    corrupted = list(s.get("corrupted") or ())
    bad = sorted(set(corrupted) - set(mixture.tasks))
    if bad or s.target_task in corrupted:
        raise ConfigError(f"config.sources.corrupted: {bad or [s.target_task]} must be tasks "
                          "of config.data.instruct.tasks other than the target task")
    if not isinstance(s.get("target_rows"), int) or s.target_rows < 1:
        raise ConfigError(f"config.sources.target_rows must be an int >= 1, got "
                          f"{s.get('target_rows')!r}")
    rows = s.get("rows_per_source")
    if rows is not None and (not isinstance(rows, int) or rows < 2):
        raise ConfigError(f"config.sources.rows_per_source must be None or an int >= 2, got "
                          f"{rows!r}")
    if mixture.validation_per_task:
        raise ConfigError("config.sources.kind='tasks': the runs validate on the target rows; "
                          "set config.data.instruct.validation_per_task=0")


def _run_config(config: ml_collections.ConfigDict, rows_file: str, epochs: float, *,
                init_from: str | None = None, seed: int | None = None,
                instruct_eval: bool = False):
    """A run's config: `config` on the rows of `rows_file`, for `epochs`, its adapter
    starting from `init_from`; the mixture's generation evaluation only if
    `instruct_eval` (the runs that only need the target rows' loss skip it)."""
    c = config.copy_and_resolve_references()
    if not instruct_eval and c.get("instruct_eval"):
        c.instruct_eval.splits = ()
    c.data.row_split = rows_file
    c.train.num_epochs = float(epochs)
    c.train.num_steps = None
    c.train.export = False
    if c.sources.get("checkpoint", "best") == "last":  # one evaluation, at the end
        c.train.eval_every_steps = LAST_ONLY
    c.method.peft.init_from = init_from
    if seed is not None:
        c.seed = seed
    return c


def _trainable(peft_file: str) -> dict:
    tree, head, _, _ = load_peft_file(peft_file)
    return {"peft": tree, "head": head}


def featured(trainable: dict, with_head: bool) -> dict:
    """The part of a run's trainable tree whose gradients are the features, whose norm is
    |phi*| and whose change the calibration measures: the adapter (the reference's choice),
    and the classifier head with `sources.features_with_head`."""
    return trainable if with_head else {"peft": trainable["peft"]}


def _norm(tree: PyTree) -> float:
    return float(math.sqrt(sum(float(np.sum(np.square(np.asarray(x, np.float64))))
                               for x in flatten_paths(tree).values())))


def _difference_norm(a: PyTree, b: PyTree) -> float:
    fa, fb = flatten_paths(a), flatten_paths(b)
    return float(math.sqrt(sum(float(np.sum(np.square(np.asarray(fa[p], np.float64)
                                                        - np.asarray(fb[p], np.float64))))
                               for p in fa)))


@dataclasses.dataclass
class ModelParts:
    output: Any  # output(params, batch) -> [B] log-odds
    params: dict  # {"trainable": {"peft", "head"} at phi*, "frozen": the base}
    eligible: dict  # the differentiated leaves: the trainable ones
    train: Any  # the tokenized training split (every pooled row)
    projection: ms.Projection
    phi_norm: float
    batch_size: int
    chunk_size: int | str

    def outputs(self, params: dict, ids: np.ndarray) -> np.ndarray:
        """The output at `params` of the training rows `ids`, in the order of `ids` (the
        batches go by length bucket, so their rows are put back in place by example id)."""
        ids = np.asarray(ids, np.int64)
        output = jax.jit(self.output)
        got, values = [], []
        for batch in index_batches(self.train, np.unique(ids), self.batch_size):
            rows = batch.pop("example_ids")
            got.append(rows[rows >= 0])
            values.append(np.asarray(output(params, batch))[rows >= 0])
        got, values = np.concatenate(got), np.concatenate(values)
        return values[np.argsort(got)][np.searchsorted(np.sort(got), ids)]


class SourceSelection:
    """One selection run in one workdir (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        validate_sources(config)
        self.config = config
        self.s = config.sources
        self.workdir = prepare_workdir(workdir)
        self._check_settings()
        self.task = get_task(config.task)
        self.objective = for_task(self.task)
        self._projection_memo: ms.Projection | None = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def _check_settings(self) -> None:
        """A workdir serves one setting: config.sources, method, task and seed as first run,
        except the settings of the estimates and rankings (`ESTIMATE_SETTINGS`), which are
        computed again from the stored features on every run."""
        sources = {k: v for k, v in self.s.to_dict().items() if k not in ESTIMATE_SETTINGS}
        want = {"sources": sources, "method": self.config.method.to_dict(),
                "task": self.config.task, "seed": self.config.seed,
                "model": self.config.model.name, "data": self.config.data.to_dict()}
        want = json.loads(json.dumps(want, default=str))
        path = self.path("settings.json")
        if os.path.exists(path):
            have = read_selection_file(path)
            if "sources" in have:  # files from before ESTIMATE_SETTINGS: compare the rest
                have["sources"] = {k: v for k, v in have["sources"].items()
                                   if k not in ESTIMATE_SETTINGS}
                # files from before sources.checkpoint: their runs kept the best evaluation
                have["sources"].setdefault("checkpoint", "best")
            diff = sorted(k for k in want if have.get(k) != want[k])
            if diff and self._trained_anything():
                raise ConfigError(f"{self.workdir} was made with other settings ({diff}); use "
                                  "a new workdir")
            if not diff:
                return
            # An earlier run here stopped before any training finished (e.g. a setting
            # refused late): nothing of it is worth keeping, so a corrected rerun starts over.
            log.warning("%s: the earlier run here finished no training; starting over with "
                        "the new settings (%s)", self.workdir, ", ".join(diff))
            shutil.rmtree(self.path("splits"), ignore_errors=True)
            if os.path.exists(self.path("pool.json")):
                os.unlink(self.path("pool.json"))
        _save_json(path, want)

    def _trained_anything(self) -> bool:
        """Whether a training run of this selection finished (the meta-initialisation)."""
        return os.path.exists(self.path("meta", PEFT_FILE))

    # -- 1. pool ---------------------------------------------------------------------------

    def pool(self) -> SourcePool:
        path = self.path("pool.json")
        if os.path.exists(path):
            d = read_selection_file(path)
            return SourcePool(sources=d["sources"], target=d["target"], noisy=d["noisy"],
                              flips=d.get("flips"))
        if self.s.kind == "groups":
            pool = make_group_pool(self._num_rows(), self.s.groups, self.s.noisy,
                                   self.s.target_fraction, self.s.seed)
        elif self.s.kind == "tasks":
            pool = make_task_pool(self._task_blocks(), self.s.target_task, self.s.target_rows,
                                  self.s.get("rows_per_source"), list(self.s.corrupted),
                                  self.s.seed)
        else:
            pool = make_shard_pool(self._blocks(), self.task.name,
                                   [ShardSpec.parse(e) for e in self.s.shards],
                                   self.s.target_fraction, self.s.seed)
        _save_json(path, dataclasses.asdict(pool))
        log.info("sources: %d groups of ~%d rows (%d noisy: %s), %d target rows",
                 len(pool.sources), len(next(iter(pool.sources.values()))), len(pool.noisy),
                 pool.noisy, len(pool.target))
        return pool

    def _blocks(self) -> dict[str, tuple[int, int]]:
        """Each task's row range in the pooled training split (the target task's own rows,
        then config.data.mix's blocks)."""
        config = self.config.copy_and_resolve_references()
        config.data.row_split, mix = None, parse_mix(config.data.get("mix"), self.task)
        config.data.mix = ()
        start = len(load_raw_splits(config, self.task)[self.task.train_split])
        blocks = {self.task.name: (0, start)}
        for entry, block in zip(mix, mix_blocks(mix), strict=True):
            if entry.task.name in blocks:
                raise ConfigError(f"config.data.mix names {entry.task.name!r} twice (or the "
                                  "target task): one block per task for shards")
            blocks[entry.task.name] = (start, start + len(block))
            start += len(block)
        return blocks

    def _task_blocks(self) -> dict[str, tuple[int, int]]:
        """Each instruction task's row range in the pooled training split (the mixture's
        training rows, task after task)."""
        mixture = Mixture.from_config(self.config.data.instruct)
        splits, blocks, start = mixture.splits(), {}, 0
        for task in mixture.tasks:
            blocks[task] = (start, start + len(splits[task]["train"]))
            start = blocks[task][1]
        return blocks

    def _num_rows(self) -> int:
        """Rows of the pooled training set (the task's training split as config.data loads
        it, before any row split)."""
        config = self.config.copy_and_resolve_references()
        config.data.row_split = None
        return len(load_raw_splits(config, self.task)[self.task.train_split])

    def finetune(self, name: str, sources: list[str], epochs: float, *,
                 from_meta: bool, seed: int | None = None,
                 instruct_eval: bool = False) -> dict[str, Any]:
        """A run of `config.method` on `sources` (resumed if its workdir is finished; the
        instruction mixture's generation evaluation only with `instruct_eval`)."""
        pool = self.pool()
        split = pool.row_split(sources)
        path, workdir = self.path("splits", f"{name}.json"), self.path(name)
        # The run's config names its row split file, not the rows: a run made on other
        # sources under this name must not be taken for this one.
        if (os.path.exists(path) and os.path.isdir(workdir)
                and load_row_split(path).to_dict() != split.to_dict()):
            raise ConfigError(f"{workdir} was trained on other sources than {sources}; "
                              "use another run name (or delete it)")
        rows = save_row_split(path, split)
        init = self.path("meta", PEFT_FILE) if from_meta else None
        config = _run_config(self.config, rows, epochs, init_from=init, seed=seed,
                             instruct_eval=instruct_eval)
        res = finished_results(config, workdir) or train_and_evaluate(config, workdir)
        return {"name": name, "sources": sources, "workdir": workdir,
                "final_eval": res["final_eval"], "train_s": res["train_s"],
                # over every run of the workdir (None: from before that was recorded)
                "train_s_total": res.get("train_s_total"),
                "instruct_eval": res.get("instruct_eval"),
                "peft_file": os.path.join(workdir, PEFT_FILE)}

    # -- 2. meta-initialisation ----------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return self.finetune("meta", self.pool().names, self.s.meta_epochs, from_meta=False)

    # -- 3. features ---------------------------------------------------------------------------

    def model_parts(self) -> ModelParts:
        """The model at phi*: the output function, the params (meta LoRA tree and head,
        the frozen base), which leaves are differentiated, the tokenized data, P."""
        pool = self.pool()
        meta = self.meta()
        trainable = _trainable(meta["peft_file"])
        _, _, spec, meta_info = load_peft_file(meta["peft_file"])
        key = jax.random.PRNGKey(self.s.seed)
        projection = self._projection(trainable)
        on = featured(trainable, self.s.features_with_head)
        # Every pooled row, in row order (feature ids are row ids), each labelled as the
        # runs train on it: a noisy source's rows flipped. (Without the flips every source
        # looked clean to the estimator: the old MRPC figures came from that bug.)
        config = self.config.copy_and_resolve_references()
        config.data.row_split = save_row_split(self.path("splits", "features.json"),
                                               pool.feature_split(self._num_rows()))
        model = load_model(config.model.name, self.objective.head_size, key=key,
                           dtype=config.model.dtype, pooling=config.model.get("pooling"))
        data = tokenize_task(config, self.task, load_raw_splits(config, self.task),
                             load_tokenizer(model.model_dir))
        _, base = split_tree(model.params, config.method.head_regex or model.head_regex)
        if base_fingerprint(base) != meta_info["base_fingerprint"]:
            raise ConfigError("the meta-initialisation was trained on another base model")
        return ModelParts(
            output=_on_peft_params(make_feature_fn(model.module, self.objective),
                                   peft_combine(spec)),
            params={"trainable": trainable, "frozen": base},
            eligible={"trainable": {k: jax.tree_util.tree_map(lambda _, k=k: k in on, v)
                                    for k, v in trainable.items()},
                      "frozen": jax.tree_util.tree_map(lambda _: False, base)},
            train=data.train, projection=projection, phi_norm=_norm(on),
            batch_size=int(config.method.fisher.batch_size),
            chunk_size=parse_chunk_size(config.method.fisher.chunk_size))

    def _projection(self, trainable: dict) -> ms.Projection:
        """P for the featured leaves (paths as the gradient tree has them); made once per
        selection (it depends only on the leaves' shapes and the settings, and held whole
        it is up to `max_projection_mb`: the steps share one)."""
        if self._projection_memo is None:
            self._projection_memo = ms.make_projection(
                {"trainable": featured(trainable, self.s.features_with_head)},
                self.s.project_dim, jax.random.PRNGKey(self.s.seed),
                int(self.s.max_projection_mb) << 20)
        return self._projection_memo

    def features(self) -> tuple[ms.Features, ms.Features, float, ms.Projection]:
        """(source features, target features, |phi*|, the projection)."""
        pool = self.pool()
        meta = self.meta()
        path = self.path("features.safetensors")
        if os.path.exists(path):
            trainable = _trainable(meta["peft_file"])
            projection = self._projection(trainable)
            tensors, meta_file = read_tagged(path, FEATURES_KEY, ConfigError, "features")
            if meta_file.get("labels") != FEATURE_LABELS:
                raise ConfigError(f"{path} was computed by an older fishjax, with the noisy "
                                  "sources' rows under their clean labels; delete it to "
                                  "recompute")
            if meta_file["meta_sha256"] != file_sha256(meta["peft_file"]):
                raise ConfigError(f"{path} was computed at another meta-initialisation; "
                                  "delete it to recompute")
            src = ms.Features(tensors["source_ids"], tensors["source_f"], tensors["source_g"],
                              meta_file["seconds"])
            tgt = ms.Features(tensors["target_ids"], tensors["target_f"], tensors["target_g"],
                              0.0)
            return src, tgt, _norm(featured(trainable, self.s.features_with_head)), projection
        parts = self.model_parts()
        rows, _ = pool.source_of()
        out = {}
        for part, ids in (("source", np.sort(rows)), ("target", np.asarray(pool.target))):
            feats = ms.gradient_features(parts.output, parts.params,
                                         index_batches(parts.train, ids, parts.batch_size),
                                         parts.projection, eligible=parts.eligible,
                                         chunk_size=parts.chunk_size)
            out[part] = feats
            log.info("features (%s): %d examples in %.1fs", part, len(feats.ids), feats.seconds)
        tensors = {f"{p}_{k}": getattr(out[p], k) for p in out for k in ("ids", "f", "g")}
        write_tagged(path, tensors, FEATURES_KEY, {
            "meta_sha256": file_sha256(meta["peft_file"]), "labels": FEATURE_LABELS,
            "project_dim": self.s.project_dim,
            "seed": self.s.seed, "phi_norm": parts.phi_norm,
            "seconds": out["source"].seconds + out["target"].seconds})
        return out["source"], out["target"], parts.phi_norm, parts.projection

    # -- 4. calibration ------------------------------------------------------------------------

    def calibration(self) -> dict[str, Any]:
        path = self.path("calibration.json")
        if os.path.exists(path):
            return read_selection_file(path)
        pool = self.pool()
        with_head = self.s.features_with_head
        phi_star = featured(_trainable(self.meta()["peft_file"]), with_head)
        runs = []
        subsets = ms.sample_subsets(len(pool.names), self.s.calibration_runs,
                                    self.s.subset_fraction, self.s.seed + 1)
        for i, row in enumerate(subsets):
            names = [pool.names[k] for k in np.flatnonzero(row)]
            run = self.finetune(f"calibration/{i}", names, self.s.finetune_epochs,
                                from_meta=True)
            ratio = _difference_norm(featured(_trainable(run["peft_file"]), with_head),
                                     phi_star) / _norm(phi_star)
            runs.append({**run, "ratio": ratio})
        c = float(np.mean([r["ratio"] for r in runs])) if runs else None
        out = {"scale": self.s.scale if self.s.scale is not None else c,
               "calibrated": self.s.scale is None, "runs": runs}
        _save_json(path, out)
        return out

    # -- 5. and 6. estimates and rankings ----------------------------------------------------

    def estimate(self) -> dict[str, Any]:
        pool = self.pool()
        src, tgt, phi_norm, projection = self.features()
        scale = self.calibration()["scale"]
        rows, which = pool.source_of()
        order = np.argsort(rows)
        src_of = which[order]  # features are in ascending row order
        k = len(pool.names)
        subsets = ms.sample_subsets(k, self.s.num_subsets, self.s.subset_fraction,
                                    self.s.seed + 2)
        t0 = time.perf_counter()
        grams = ms.source_grams(jax.numpy.asarray(src.g), src_of, k)
        run = lambda a: ms.estimate_subsets(  # noqa: E731
            src, src_of, tgt, a, projection.gram, scale * phi_norm, c=self.s.C,
            offsets=self.s.offsets, iters=self.s.solver_iters, grams=grams)
        est = run(subsets)
        seconds = time.perf_counter() - t0
        keep = ms.keep_count(k, self.s.keep_fraction)
        metric = subset_metric(est, self.s.score_metric)  # higher is better
        score_of = lambda a: subset_metric(_padded(run, a, k), self.s.score_metric)  # noqa: E731
        greedy = ms.forward_selection(lambda a: -score_of(a), k, keep)
        one_pass = ms.forward_one_pass(score_of, k)
        scores = {  # every rule: a higher score is a better source
            "ensemble": ms.ensemble_scores(subsets, metric),
            "ridge": ms.ridge_scores(subsets, metric),
            "forward": np.asarray([float(i in one_pass) for i in range(k)]),
            "forward_greedy": np.asarray([-float(greedy.index(i)) if i in greedy else -keep
                                          for i in range(k)]),
            "gradient_similarity": ms.gradient_similarity(src, src_of, tgt, k),
        }
        ranking = {rule: self._rank(pool, sc, one_pass if rule == "forward" else
                                    ms.top_sources(sc, keep, lower_is_better=False))
                   for rule, sc in scores.items()}
        _save_json(self.path("estimates.json"), {
            "subsets": [[pool.names[i] for i in np.flatnonzero(r)] for r in subsets],
            "target_loss": est.target_loss.tolist(),
            "target_accuracy": est.target_accuracy.tolist(),
            "solver_last_step_max": float(np.max(est.last_step)),
            "seconds": seconds, "scale": scale, "phi_norm": phi_norm})
        _save_json(self.path("ranking.json"), ranking)
        selection = {"rule": self.s.rule, "sources": ranking[self.s.rule]["kept"],
                     "keep": keep, "of": k}
        _save_json(self.path("selection.json"), selection)
        log.info("estimated %d subsets in %.2fs; %s keeps %s", len(subsets), seconds,
                 self.s.rule, selection["sources"])
        return {"selection": selection, "ranking": ranking, "estimate_s": seconds}

    def _rank(self, pool: SourcePool, scores: np.ndarray, kept: list[int]) -> dict[str, Any]:
        """A rule's ranking.json entry: its scores, the sources it keeps and, with noisy
        sources, its AUROC at telling them from the rest (a noisy source should score low)
        and how many it keeps."""
        entry = {"scores": {n: float(v) for n, v in zip(pool.names, scores, strict=True)},
                 "kept": [pool.names[i] for i in kept]}
        if pool.noisy:
            noisy = np.asarray([n in pool.noisy for n in pool.names])
            entry["noisy_auroc"] = auroc(-np.asarray(scores, np.float64), noisy)
            entry["noisy_kept"] = sum(pool.names[i] in pool.noisy for i in kept)
        return entry

    # -- 7. final fine-tune --------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = self.estimate()
        if self.s.final_finetune:
            out["final"] = self.finetune(run_name("final", out["selection"]["sources"]),
                                         out["selection"]["sources"],
                                         self.config.train.num_epochs, from_meta=False,
                                         instruct_eval=True)
        out["wall_s"] = time.perf_counter() - t0
        _save_json(self.path("summary.json"), out)
        return out


def run_name(prefix: str, sources) -> str:
    """The name of a run whose sources follow the estimates (the final fine-tune, the
    benchmark's selected arms): `prefix` and a digest of the sources, so a changed
    selection trains anew instead of meeting the run of another one."""
    return f"{prefix}-{hashlib.sha256(','.join(sorted(sources)).encode()).hexdigest()[:8]}"


def _padded(run, subsets: np.ndarray, rows: int) -> ms.Estimates:
    """`run(subsets)` with the subsets padded to `rows` (one compiled shape), cut back."""
    pad = np.concatenate([subsets, np.repeat(subsets[:1], rows - len(subsets), axis=0)])
    est = run(pad)
    return dataclasses.replace(est, **{f.name: getattr(est, f.name)[:len(subsets)]
                                       for f in dataclasses.fields(est)})


def subset_metric(est: ms.Estimates, metric: str) -> np.ndarray:
    """Per subset, the estimated target score a rule ranks by, higher is better: the
    accuracy (the reference's choice: the task metric) or minus the loss."""
    return np.asarray(est.target_accuracy if metric == "accuracy" else -est.target_loss,
                      np.float64)


def _on_peft_params(feature_fn, combine):
    """`output(params, batch)` for params {"trainable": {"peft", "head"}, "frozen": base}."""
    def output(params, batch):
        return feature_fn(combine(params["trainable"], params["frozen"]), batch)
    return output


def target_metric(final_eval: dict[str, float], name: str) -> float:
    """A run's `name` metric on the target rows: its "validation/" entry, or the plain one
    when the target rows are the run's only eval split (an instruction mixture's runs)."""
    key = f"{VALIDATION}/{name}"
    return float(final_eval[key] if key in final_eval else final_eval[name])


def true_vs_estimated(true_losses: list[float], estimated: list[float]) -> dict[str, float]:
    """Relative RSS and Spearman correlation of estimated against true target losses."""
    t, e = np.asarray(true_losses, np.float64), np.asarray(estimated, np.float64)
    return {"relative_rss": float(np.sum((e - t) ** 2) / np.sum(t ** 2)),
            "spearman": spearman(e, t), "n": int(t.size)}


def select_sources(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs every step (see the module docstring); returns the summary."""
    return SourceSelection(config, workdir).run()


def cli() -> None:
    """`python -m fishjax.select_sources --config=... --workdir=...` (flags defined here, so
    importing this module defines none)."""
    config = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                             lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Directory for the selection's files.")
    debug = flags.DEFINE_bool("debug", False, "Show the traceback of input errors.")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes
        show_logs()  # fishjax's progress: plain timed lines on stderr

        def run() -> None:
            out = select_sources(config.value, workdir.value)
            print(json.dumps(out["selection"], indent=2))
            print(f"results in {os.path.abspath(workdir.value)}: selection.json, "
                  "ranking.json, estimates.json, summary.json (read_selection_file reads "
                  "them)")

        return exit_status(run, debug.value)

    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    cli()
