"""`fishjax.load(workdir)`: a finished run as a model that predicts on raw text.

  >>> run = fishjax.load("/tmp/fishjax-quickstart")
  >>> run.method, run.base, run.metrics["accuracy"]
  >>> run.predict(["a warm, funny film", "dull and far too long"])  # label ids
  >>> [run.task.label_names[i] for i in run.predict(["a warm, funny film"])]

The run's `config.json` says which model, task and method made it; `results.json` what it
wrote. The params the run ships are rebuilt from the first of:
1. the method's artefact file (`results["artifacts"]`: a sparse delta, a PEFT file, an
   X-PEFT profile, the hardened one where the run made one), applied to the base model and
   checked against its fingerprint (`fishjax.methods.artifact_reader`);
2. the exported Hugging Face folder (`export/`);
3. the best checkpoint (`best/`), for methods that train the whole params tree
   (full, and the mask methods fish, random_mask, bitfit, ird without sparse storage).
Nothing is trained or scored again: `metrics` are the dev metrics the run recorded for
exactly these params (the deployed model's where it differs from the trained one).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import CheckpointError, FishjaxError
from fishjax.core.io import read_json
from fishjax.core.tree import PyTree, flatten_paths, split_tree
from fishjax.data import TaskSpec, get_task, index_batches, text_split, tokenize_split
from fishjax.methods import artifact_reader
from fishjax.models import LoadedModel, load_model, load_tokenizer
from fishjax.objectives import Objective, for_task, make_apply_fn
from fishjax.train.checkpoints import FOLDERS, Checkpoints
from fishjax.train.trainer import RESULTS_FILE
from fishjax.train.workdir import CONFIG_FILE


class LoadError(FishjaxError):
    """A workdir that holds no finished run, or none whose model can be rebuilt."""


@dataclasses.dataclass
class FinishedRun:
    """A finished run's model: what it is (method, base, task, metrics) and `predict`."""

    workdir: str
    method: str  # config.method.name
    base: str  # the base model as the config names it (alias, folder or hub id)
    base_fingerprint: str  # sha256 of the base model's params (head excluded)
    task: TaskSpec  # label names: task.label_names
    metrics: dict[str, float]  # the dev metrics the run recorded for these params
    source: str  # the file or folder the params were rebuilt from
    params: PyTree  # the dense params the run ships
    config: ml_collections.ConfigDict  # the run's resolved config
    model: LoadedModel  # the base model (module, tokenizer folder, family)
    objective: Objective
    _forward: Any = dataclasses.field(default=None, repr=False)
    _tokenizer: Any = dataclasses.field(default=None, repr=False)

    def outputs(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                batch_size: int = 64) -> np.ndarray:
        """The model's outputs (classification: a score per label) on raw texts, tokenized
        as the run was (its max_length and length buckets); `pairs`: the second segment of
        each example for pair tasks (RTE, MRPC, ...)."""
        if (pairs is None) != (len(self.task.text_fields) == 1):
            want = "a second segment per text (pairs=[...])" if pairs is None else "no pairs"
            raise LoadError(f"task {self.task.name!r} reads {self.task.text_fields}: give "
                            f"{want}")
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model.model_dir)
            apply_fn = make_apply_fn(self.model.module, self.objective)
            self._forward = jax.jit(apply_fn)
        data = self.config.data
        ds = tokenize_split(text_split(texts, pairs), self._tokenizer,
                            max_length=data.max_length, buckets=tuple(data.buckets))
        out: np.ndarray | None = None
        for batch in index_batches(ds, np.arange(len(ds)), batch_size):
            ids = batch.pop("example_ids")
            rows = np.asarray(self._forward(self.params, batch))
            if out is None:
                out = np.zeros((len(ds), *rows.shape[1:]), rows.dtype)
            out[ids[ids >= 0]] = rows[ids >= 0]
        return out

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                batch_size: int = 64) -> np.ndarray:
        """Predictions on raw texts: label ids (names: `task.label_names`), or scores for
        a regression task (STS-B)."""
        return np.asarray(self.objective.predictions(
            self.outputs(texts, pairs, batch_size=batch_size)))

    def describe(self) -> str:
        """One line: method, base, task and the recorded main metric."""
        main = self.task.main_metric
        score = self.metrics.get(main)
        shown = f"{main} {score:.4f}" if isinstance(score, float) else "no metrics"
        return (f"{self.method} on {self.base} ({self.base_fingerprint[:12]}), task "
                f"{self.task.name}: dev {shown}; params from {self.source}")


def _read(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    if not os.path.isdir(workdir):
        raise LoadError(f"{workdir} is not a folder")
    config_path = os.path.join(workdir, CONFIG_FILE)
    results_path = os.path.join(workdir, RESULTS_FILE)
    if not os.path.exists(config_path):
        raise LoadError(f"{workdir} holds no run ({CONFIG_FILE} is missing)")
    config = ml_collections.ConfigDict(read_json(config_path, LoadError, "run config"))
    results = read_json(results_path, LoadError, "results") \
        if os.path.exists(results_path) else {}
    if not results.get("finished"):
        raise LoadError(f"{workdir} holds an unfinished run: rerun its command to finish it "
                        "(it resumes), then load it")
    return config, results


def _from_artifact(results: dict[str, Any], params: PyTree,
                   config: ml_collections.ConfigDict) -> tuple[PyTree, str] | None:
    files = [(reader.rank, name, path) for name, path in (results.get("artifacts") or {}).items()
             if (reader := artifact_reader(name)) is not None and path]
    if not files:
        return None
    _, name, path = max(files)
    if not os.path.exists(path):
        raise LoadError(f"the run's {name} file {path} is missing")
    return artifact_reader(name).read(path, params, config.method), path


def _from_best_checkpoint(workdir: str, params: PyTree) -> tuple[PyTree, str] | None:
    if not os.path.isdir(os.path.join(workdir, FOLDERS[1])):
        return None
    ckpt = Checkpoints(workdir)
    try:
        kept = ckpt.restore_best(params)
    except CheckpointError:
        raise LoadError(f"{workdir}: its method keeps no whole model in best/ (only what it "
                        "trains) and the run wrote no artefact file or export/ to load; rerun "
                        "it with train.export=True in a new workdir") from None
    finally:
        ckpt.close()
    return (None if kept is None else
            (jax.device_get(kept), os.path.join(workdir, FOLDERS[1], str(ckpt.best_step()))))


def _recorded_metrics(results: dict[str, Any], best_checkpoint: bool) -> dict[str, float]:
    """The dev metrics of the loaded params: the deployed model's, else the best
    evaluation's (artefacts and exports are written from it when there is one)."""
    if results.get("deployed_eval"):
        return dict(results["deployed_eval"])
    kept = (results.get("exported_params") or {}).get("source")
    if (best_checkpoint or kept == "best") and results.get("best"):
        return dict(results["best"]["metrics"])
    return dict(results.get("final_eval") or {})


def load(workdir: str) -> FinishedRun:
    """The model a finished run ships, ready to `predict` on raw text (module docstring).

    Raises LoadError (one line) for a folder without a finished run, and the file's own
    error for a damaged or foreign artefact (another base model, a changed byte)."""
    workdir = os.path.abspath(workdir)
    config, results = _read(workdir)
    task = get_task(config.task)
    objective = for_task(task)
    head_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)[0]  # as the trainer
    model = load_model(config.model.name, objective.head_size, key=head_key,
                       dtype=config.model.dtype, pooling=config.model.get("pooling"))
    found = _from_artifact(results, model.params, config)
    export_dir = results.get("export_dir")
    if found is None and export_dir and os.path.isdir(export_dir):
        exported = load_model(export_dir, objective.head_size, key=head_key,
                              dtype=config.model.dtype)
        found = exported.params, export_dir
    best_checkpoint = found is None
    if best_checkpoint:
        found = _from_best_checkpoint(workdir, model.params)
    if found is None:
        raise LoadError(f"{workdir}: the run kept no model to load (no artefact file, no "
                        "export/, no best/); rerun it with train.export=True in a new workdir")
    params, source = found
    _, base = split_tree(model.params, config.method.head_regex or model.head_regex)
    if not set(flatten_paths(model.params)) <= set(flatten_paths(params)):  # (+ adapters)
        raise LoadError(f"{source} does not hold the parameters of {config.model.name}")
    return FinishedRun(
        workdir=workdir, method=config.method.name, base=config.model.name,
        base_fingerprint=base_fingerprint(base), task=task,
        metrics=_recorded_metrics(results, best_checkpoint), source=source, params=params,
        config=config, model=model, objective=objective)

