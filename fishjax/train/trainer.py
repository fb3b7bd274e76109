"""`train_and_evaluate(config, workdir)`: the one training loop every method shares.

Flow: validate the config -> build the mesh -> load and check the data -> load the model
-> tokenize (cached) -> the method decides what trains (`MethodSetup`) -> AdamW wrapped by
the method -> resume from the latest checkpoint if any -> train with periodic eval,
checkpoints and logs -> export the best model as a Hugging Face folder.

`Trainer` owns the run: its state, compiled steps, data and the loop (`Trainer.run`);
nothing outside it touches its state. The step is a pure function
`train_step(state, frozen, batch) -> (state, metrics)`, jitted once with the state donated.
Batch shapes come only from the length buckets, so it compiles at most once per bucket.
Dropout keys are `fold_in(seed key, step)`, and the data order of epoch e is a function of
(seed, e), so a resumed run replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from fishjax.artifacts.hf_export import export_hf_folder
from fishjax.core.errors import ConfigError
from fishjax.core.io import atomic_write_json, atomic_write_text, file_sha256
from fishjax.core.tree import PyTree, count_params
from fishjax.core.version import __version__
from fishjax.data import (
    TaskSpec,
    TokenizedSplit,
    compute_metrics,
    get_task,
    iterate_batches,
    num_batches,
)
from fishjax.methods import MethodContext, MethodSetup, get_method
from fishjax.models import EncoderConfig, load_model, load_tokenizer, objectives
from fishjax.train.checkpoints import Checkpoints
from fishjax.train.metric_writer import MetricWriter
from fishjax.train.optim import make_optimizer
from fishjax.train.sharding import checked_shardings, make_mesh, put_batch, replicated
from fishjax.train.task_data import load_raw_splits, tokenize_task
from fishjax.train.validation import check_batch_divisible, prepare_workdir, validate_config

log = logging.getLogger("fishjax")


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps done
    trainable: PyTree
    opt_state: PyTree
    rng: jax.Array  # uint32[2]: base key, folded with the step for dropout


def _host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def method_context(config: ml_collections.ConfigDict, *, params: PyTree, loss_fn: Callable,
                   train_batches: Callable[..., Iterator[dict]], task: TaskSpec,
                   model_config: EncoderConfig, rng: jax.Array,
                   train_data: TokenizedSplit | None = None, workdir: str | None = None,
                   dev_score: Callable[[PyTree], float] | None = None) -> MethodContext:
    """The `MethodContext` a run of `config` gives its method: the method's options, and
    the run's facts read from the trainer-owned sections (seed, batch size, learning
    rate, the base optimizer), so that method code never reads them itself."""
    return MethodContext(
        method=config.method,
        params=params,
        loss_fn=loss_fn,
        train_batches=train_batches,
        train_data=train_data,
        task=task,
        model_config=model_config,
        model_name=config.model.name,
        seed=config.seed,
        batch_size=config.train.batch_size,
        learning_rate=config.train.learning_rate,
        base_optimizer=lambda steps: make_optimizer(config.train, steps)[0],
        rng=rng,
        workdir=workdir,
        dev_score=dev_score,
    )


class Trainer:
    """One run: the compiled steps, the state and the loop (`run`)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = workdir
        self.mesh = make_mesh(config.mesh.data, config.mesh.model)
        check_batch_divisible(config, self.mesh.shape["data"])
        self.task = get_task(config.task)
        raw = load_raw_splits(config, self.task)

        key = jax.random.PRNGKey(config.seed)
        head_key, dropout_key, method_key = jax.random.split(key, 3)
        self.model = load_model(
            config.model.name, self.task.num_labels, key=head_key, dtype=config.model.dtype,
            hidden_dropout=config.model.hidden_dropout,
            attention_dropout=config.model.attention_dropout,
        )
        max_len = self.model.config.max_sequence_length
        if config.data.max_length > max_len:
            raise ConfigError(f"config.data.max_length={config.data.max_length} exceeds the "
                              f"model's {max_len} positions ({config.model.name})")
        self.data = tokenize_task(config, self.task, raw, load_tokenizer(self.model.model_dir))
        self.loss_fn = objectives.make_loss_fn(self.model.module, self.task.is_regression)
        self.apply_fn = objectives.make_apply_fn(self.model.module)
        self._dense_eval_step = jax.jit(self._eval_outputs(lambda params, _: params))

        self.setup: MethodSetup = get_method(config.method.name).setup(method_context(
            config, params=self.model.params, loss_fn=self.loss_fn,
            train_batches=self._method_batches, train_data=self.data.train, task=self.task,
            model_config=self.model.config, rng=method_key, workdir=workdir,
            dev_score=self.dev_score))

        t = config.train
        self.steps_per_epoch = num_batches(self.data.train, t.batch_size)
        self.total_steps = t.num_steps or int(math.ceil(t.num_epochs * self.steps_per_epoch))
        self.eval_every = t.eval_every_steps or self.steps_per_epoch
        base_tx, self.schedule = make_optimizer(t, self.total_steps, no_decay=self.setup.no_decay)
        self.tx = self.setup.wrap_optimizer(base_tx)

        rules = tuple(config.mesh.param_rules)
        self.frozen = jax.device_put(self.setup.frozen, checked_shardings(
            self.setup.frozen, self.mesh, rules, f"frozen tree of method {config.method.name}"))
        self.state = self._init_state(dropout_key, rules)
        self._compile_steps()

    # -- construction -------------------------------------------------------------------

    def _method_batches(self, batch_size: int, *, seed: int | None, epoch: int = 0):
        return iterate_batches(self.data.train, batch_size, seed=seed or 0, epoch=epoch,
                               shuffle=seed is not None)

    def _init_state(self, dropout_key: jax.Array, rules) -> TrainState:
        # Eager, not jitted: a jitted init would bake a masked optimizer's (parameter-sized)
        # masks into the compiled program as constants.
        state = TrainState(step=jnp.zeros((), jnp.int32), trainable=self.setup.trainable,
                           opt_state=self.tx.init(self.setup.trainable), rng=dropout_key)
        self.state_sharding = checked_shardings(
            state, self.mesh, rules, f"train state of method {self.config.method.name}")
        return jax.device_put(state, self.state_sharding)

    def _compile_steps(self) -> None:
        combine, tx, loss_fn = self.setup.combine, self.tx, self.loss_fn
        opt_params_fn = self.setup.optimizer_params
        schedule = self.schedule

        def train_step(state: TrainState, frozen: PyTree, batch):
            dropout_key = jax.random.fold_in(state.rng, state.step)

            def loss_of(trainable):
                return loss_fn(combine(trainable, frozen), batch, dropout_key)

            loss, grads = jax.value_and_grad(loss_of)(state.trainable)
            opt_params = state.trainable if opt_params_fn is None else \
                opt_params_fn(state.trainable, frozen)
            updates, opt_state = tx.update(grads, state.opt_state, opt_params)
            trainable = optax.apply_updates(state.trainable, updates)
            metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                       "learning_rate": schedule(state.step)}
            new_state = state.replace(step=state.step + 1, trainable=trainable,
                                      opt_state=opt_state)
            return new_state, metrics

        rep = replicated(self.mesh)
        self.train_step = jax.jit(
            train_step, donate_argnums=0,
            out_shardings=(self.state_sharding, rep),
        )
        self.eval_step = jax.jit(self._eval_outputs(combine))

    def _eval_outputs(self, combine: Callable[[PyTree, PyTree], PyTree]):
        """`(trainable, frozen, batch) -> (predictions, per-example losses)`, unjitted."""
        apply_fn, is_regression = self.apply_fn, self.task.is_regression

        def eval_step(trainable: PyTree, frozen: PyTree, batch):
            logits = apply_fn(combine(trainable, frozen), batch)
            losses = objectives.per_example_loss(logits, batch["labels"], is_regression)
            return objectives.predictions(logits, is_regression), losses

        return eval_step

    # -- one step, one evaluation ---------------------------------------------------------

    def place(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """A host batch placed on the mesh (each process supplying its own rows)."""
        return put_batch(batch, self.mesh)

    def step(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """One optimizer step on a batch (host arrays, or already `place`d); returns its
        metrics."""
        if not all(isinstance(x, jax.Array) for x in batch.values()):
            batch = self.place(batch)
        self.state, metrics = self.train_step(self.state, self.frozen, batch)
        return metrics

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The host batches of training epoch `epoch` (the run's seeded order), from batch
        `start` on."""
        return iterate_batches(self.data.train, self.config.train.batch_size,
                               seed=self.config.seed, epoch=epoch, shuffle=True, start=start)

    def evaluate(self) -> dict[str, float]:
        """Task metrics (and mean loss) on every eval split, keys prefixed by split name."""
        return self._evaluate(lambda batch: self.eval_step(self.state.trainable, self.frozen,
                                                           batch))

    def dev_score(self, params: PyTree) -> float:
        """The main metric (`main_score`) of a dense params tree (e.g. a method's trial)."""
        return self.main_score(self.evaluate_params(params))

    def evaluate_params(self, params: PyTree) -> dict[str, float]:
        """`evaluate` for a dense params tree (what the model reads)."""
        return self._evaluate(lambda batch: self._dense_eval_step(params, None, batch))

    def _evaluate(self, outputs: Callable[[dict], tuple[jax.Array, jax.Array]]
                  ) -> dict[str, float]:
        bs = self.config.train.eval_batch_size
        results: dict[str, float] = {}
        for split, ds in self.data.evals.items():
            preds, labels, weights, losses = [], [], [], []
            for batch in iterate_batches(ds, bs, seed=0, epoch=0, shuffle=False):
                p, lo = outputs(self.place(batch))
                preds.append(_host(p))
                losses.append(_host(lo))
                labels.append(batch["labels"])
                weights.append(batch["weights"])
            w = np.concatenate(weights)
            metrics = compute_metrics(self.task, np.concatenate(preds), np.concatenate(labels), w)
            metrics["loss"] = float(np.sum(np.concatenate(losses) * w) / max(w.sum(), 1.0))
            prefix = "" if len(self.data.evals) == 1 else f"{split}/"
            results.update({f"{prefix}{k}": float(v) for k, v in metrics.items()})
        return results

    def main_score(self, metrics: dict[str, float]) -> float:
        """The number that picks the best checkpoint: the first eval split's main metric."""
        key = self.task.main_metric
        if len(self.data.evals) > 1:
            key = f"{self.task.eval_splits[0]}/{key}"
        return metrics[key]

    def save_artifacts(self, trainable: PyTree | None = None) -> dict[str, str] | None:
        """The method's artefact files (mask-method deltas, PEFT files) for `trainable`
        (default: the current state's), written to the workdir; None if it has none."""
        if self.setup.save_artifacts is None:
            return None
        kept = self.state.trainable if trainable is None else trainable
        return self.setup.save_artifacts(jax.device_get(kept), self.workdir)

    # -- the run ----------------------------------------------------------------------------

    def run(self, setup_s: float = 0.0) -> dict[str, Any]:
        """Resumes from the latest checkpoint if any, trains to the end (or to
        `train.stop_after_steps`) with periodic eval, checkpoints and logs, then exports the
        best model and the method's artefacts; returns (and writes) `results.json`."""
        config, t, workdir = self.config, self.config.train, self.workdir
        t0 = time.perf_counter()
        is_main = jax.process_index() == 0
        if is_main:
            atomic_write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(
                indent=2, sort_keys=True) + "\n")
            atomic_write_json(os.path.join(workdir, "run_info.json"), self._run_info())
        summary = self.setup.summary()
        log.info("task=%s method=%s model=%s | %d train examples, %d steps/epoch, %d steps | "
                 "trainable %d of %d entries", self.task.name, config.method.name,
                 config.model.name, len(self.data.train.lengths), self.steps_per_epoch,
                 self.total_steps, summary["trainable_entries"], count_params(self.model.params))

        ckpt = Checkpoints(workdir)
        restored = ckpt.restore_latest(self.state)
        if restored is not None:
            self.state = restored
            log.info("resumed from step %d", int(restored.step))
        writer = MetricWriter(workdir)
        step = int(self.state.step)
        stop_at = self.total_steps if t.stop_after_steps is None else \
            min(self.total_steps, t.stop_after_steps)

        initial: dict[str, float] | None = None
        if t.eval_before_training and step == 0:
            initial = self.evaluate()
            writer.write(0, initial, "eval")
            log.info("eval before training: %s", _fmt_metrics(initial))
        step, last_eval = self._train_until(stop_at, step, ckpt, writer)

        train_s = time.perf_counter() - t0
        finished = step >= self.total_steps
        if finished and last_eval is None:  # rerun of a finished workdir: report, don't retrain
            last_eval = self.evaluate()
        results: dict[str, Any] = {
            "task": self.task.name,
            "method": config.method.name,
            "seed": config.seed,
            "step": step,
            "total_steps": self.total_steps,
            "finished": finished,
            "initial_eval": initial,
            "final_eval": last_eval,
            "best": ckpt.best(),
            "method_summary": summary,
            "setup_s": setup_s,
            "train_s": train_s,
        }
        if finished:
            results.update(self._finish(ckpt, is_main))
        if is_main:
            atomic_write_json(os.path.join(workdir, "results.json"), results)
        writer.close()
        ckpt.close()
        log.info("done: step %d/%d in %s (setup %s)%s", step, self.total_steps,
                 _fmt_seconds(train_s), _fmt_seconds(setup_s),
                 "" if finished else " -- stopped early (train.stop_after_steps); rerun to resume")
        return results

    def _train_until(self, stop_at: int, step: int, ckpt: Checkpoints, writer: MetricWriter
                     ) -> tuple[int, dict[str, float] | None]:
        """Trains from `step` to `stop_at`; returns (step reached, last evaluation)."""
        t = self.config.train
        last_eval: dict[str, float] | None = None
        window_t, window_steps = time.perf_counter(), 0
        pending: list[dict[str, jax.Array]] = []
        while step < stop_at:
            epoch, start = divmod(step, self.steps_per_epoch)
            for batch in self.epoch_batches(epoch, start):
                pending.append(self.step(batch))
                step += 1
                window_steps += 1
                if step % t.log_every_steps == 0 or step == stop_at:
                    host = jax.device_get(pending)
                    mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                    pending = []
                    elapsed = time.perf_counter() - window_t
                    rate = window_steps / max(elapsed, 1e-9)
                    mean["steps_per_s"] = rate
                    mean["examples_per_s"] = rate * t.batch_size
                    writer.write(step, mean, "train")
                    log.info("step %d/%d | epoch %d | loss %.4f | lr %.2e | %.2f steps/s | "
                             "ETA %s", step, self.total_steps, epoch, mean["loss"],
                             mean["learning_rate"], rate,
                             _fmt_seconds((self.total_steps - step) / max(rate, 1e-9)))
                    window_t, window_steps = time.perf_counter(), 0
                do_eval = step % self.eval_every == 0 or step == self.total_steps
                if do_eval:
                    last_eval = self.evaluate()
                    writer.write(step, last_eval, "eval")
                    improved = ckpt.maybe_save_best(step, self.state.trainable,
                                                    self.main_score(last_eval), last_eval)
                    log.info("eval step %d: %s%s", step, _fmt_metrics(last_eval),
                             " (best so far)" if improved else "")
                if do_eval or step % t.checkpoint_every_steps == 0 or step == stop_at:
                    ckpt.save(step, self.state)
                if step >= stop_at:
                    break
        return step, last_eval

    def _finish(self, ckpt: Checkpoints, is_main: bool) -> dict[str, Any]:
        """Export and artefacts of a finished run, from the best evaluation's params."""
        t, out = self.config.train, {}
        kept = None  # the trainable params of the best evaluation (else the last step)
        if t.export or self.setup.save_artifacts is not None:
            kept = ckpt.restore_best(self.state.trainable)
            kept = self.state.trainable if kept is None else kept
        if t.export and not self.setup.exportable:
            log.warning("method %s has no plain Hugging Face form (e.g. adapters): no export "
                        "folder; see its artifacts", self.config.method.name)
            out["export_dir"] = None
        elif t.export:
            labels = self.task.label_names
            out["export_dir"] = export_hf_folder(
                jax.device_get(self.setup.dense_params(kept)), self.model.config,
                self.task.num_labels, os.path.join(self.workdir, "export"),
                id2label=None if labels is None else dict(enumerate(labels)),
                tokenizer_dir=self.model.model_dir,
            ) if is_main else None
        if self.setup.deployed is not None:  # what the method ships differs from the model
            kept = self.state.trainable if kept is None else kept
            out["deployed_eval"] = self.evaluate_params(self.setup.deployed(kept))
            log.info("deployed model (%s): %s", self.config.method.name,
                     _fmt_metrics(out["deployed_eval"]))
        if self.setup.save_artifacts is not None:  # e.g. a sparse delta file
            out["artifacts"] = self.save_artifacts(kept) if is_main else None
        return out

    def _run_info(self) -> dict[str, Any]:
        config = self.config
        return {
            "seed": config.seed,
            "task": self.task.name,
            "method": config.method.name,
            "model": {"name": config.model.name, "dir": self.model.model_dir,
                      "load_report": self.model.load_report},
            "method_summary": self.setup.summary(),
            "total_params": count_params(self.model.params),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "train_examples": int(len(self.data.train.lengths)),
            "row_split": None if not config.data.get("row_split") else {
                "path": os.path.abspath(config.data.row_split),
                "sha256": file_sha256(config.data.row_split)},
            "eval_examples": {k: int(len(v.lengths)) for k, v in self.data.evals.items()},
            "versions": package_versions(),
            "python": platform.python_version(),
            "devices": [str(d) for d in jax.devices()],
            "process_count": jax.process_count(),
            "mesh": dict(self.mesh.shape),
        }


def package_versions() -> dict[str, str | None]:
    """Installed versions of fishjax and the packages that change its results."""
    versions: dict[str, str | None] = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "transformers",
                "tokenizers", "datasets", "safetensors", "numpy", "ml_collections"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    versions["fishjax"] = __version__
    return versions


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s"


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tunes `config.model.name` on `config.task` with `config.method`; see module doc.

    Returns the final results (also written to `<workdir>/results.json`): final and best
    eval metrics, steps, wall time and the method's summary.
    """
    validate_config(config)
    if config.distributed:
        jax.distributed.initialize()
    workdir = prepare_workdir(workdir)
    t0 = time.perf_counter()
    trainer = Trainer(config, workdir)
    return trainer.run(setup_s=time.perf_counter() - t0)
