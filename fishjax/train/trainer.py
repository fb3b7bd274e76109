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

import dataclasses
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

from fishjax.core.errors import ConfigError, TrainingDiverged
from fishjax.core.io import atomic_write_json, file_sha256, read_json, remove_orphans
from fishjax.core.progress import logs_above, progress_bar
from fishjax.core.tree import PyTree, count_params, tree_bytes
from fishjax.core.version import __version__
from fishjax.data import (
    TaskSpec,
    TokenizedSplit,
    get_task,
    iterate_batches,
    num_batches,
)
from fishjax.data.generation import DEFAULT_PROMPT_FORMAT
from fishjax.data.instructions import Mixture
from fishjax.methods import (
    MethodContext,
    MethodSetup,
    get_method,
    method_options,
)
from fishjax.models import load_model, load_tokenizer, model_family
from fishjax.models.export import export_model_folder
from fishjax.models.hub import peft_base_reference
from fishjax.objectives import Objective, for_task, make_apply_fn, make_loss_fn, stack_rows
from fishjax.train import distributed, dropout
from fishjax.train.checkpoints import (
    FOLDERS,
    Checkpoints,
    remove_checkpoints,
    remove_partial_saves,
)
from fishjax.train.instruct_eval import INSTRUCT_EVAL_FILE, evaluate_mixture
from fishjax.train.metric_writer import MetricWriter
from fishjax.train.model_defaults import resolve_model_defaults
from fishjax.train.optim import make_optimizer
from fishjax.train.sharding import checked_shardings, make_mesh, put_batch, replicated
from fishjax.train.task_data import (
    INSTRUCT_SPLITS_FILE,
    INSTRUCT_TASK,
    instruction_split_record,
    load_raw_splits,
    tokenize_task,
)
from fishjax.train.validation import check_batch_divisible, prepare_workdir, validate_config
from fishjax.train.workdir import (
    CONFIG_FILE,
    check_workdir,
    remove_if_empty,
    truncate_metrics,
    write_config_once,
)
from fishjax.train.workdir_lock import WorkdirLock

log = logging.getLogger("fishjax")
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
INITIAL_EVAL_FILE = "initial_eval.json"


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps done
    trainable: PyTree
    opt_state: PyTree
    rng: jax.Array  # raw key data of config.train.dropout_prng, folded with the step


def _host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def method_context(config: ml_collections.ConfigDict, *, params: PyTree, loss_fn: Callable,
                   train_batches: Callable[..., Iterator[dict]], task: TaskSpec,
                   model_config: Any, rng: jax.Array,
                   objective: Objective | None = None,
                   train_data: TokenizedSplit | None = None, workdir: str | None = None,
                   dev_score: Callable[[PyTree], float] | None = None,
                   model_dir: str | None = None,
                   fisher_loss_fn: Callable[[PyTree, Any], jax.Array] | None = None
                   ) -> MethodContext:
    """The `MethodContext` a run of `config` gives its method: the method's options, and
    the run's facts read from the trainer-owned sections (seed, batch size, learning
    rate, the base optimizer), so that method code never reads them itself."""
    family = model_family(model_config.model_type)
    resolve_model_defaults(config, family)
    return MethodContext(
        method=method_options(config.method, get_method(config.method.name)),
        params=params,
        loss_fn=loss_fn,
        train_batches=train_batches,
        train_data=train_data,
        task=task,
        objective=for_task(task) if objective is None else objective,
        model_config=model_config,
        family=family,
        model_name=config.model.name,
        base_model_ref=peft_base_reference(config.model.name, model_dir),
        seed=config.seed,
        batch_size=config.train.batch_size,
        learning_rate=config.train.learning_rate,
        base_optimizer=lambda steps: make_optimizer(config.train, steps)[0],
        fisher_loss_fn=fisher_loss_fn,
        rng=rng,
        workdir=workdir,
        dev_score=dev_score,
    )


class Trainer:
    """One run: the compiled steps, the state and the loop (`run`)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = workdir
        self.dropout_prng = config.train.get("dropout_prng", "threefry")
        self.mesh = make_mesh(config.mesh.data, config.mesh.model)
        check_batch_divisible(config, self.mesh.shape["data"])
        self.task = get_task(config.task)
        self.objective = for_task(self.task)
        raw = load_raw_splits(config, self.task)

        key = jax.random.PRNGKey(config.seed)
        head_key, dropout_key, method_key = jax.random.split(key, 3)
        self.model = load_model(
            config.model.name, self.objective.head_size, key=head_key, dtype=config.model.dtype,
            hidden_dropout=config.model.hidden_dropout,
            attention_dropout=config.model.attention_dropout,
            pooling=config.model.get("pooling"),
        )
        resolve_model_defaults(config, self.model.family)  # a direct Trainer(config) too
        max_len = self.model.config.max_sequence_length
        if config.data.max_length > max_len:
            raise ConfigError(f"config.data.max_length={config.data.max_length} exceeds the "
                              f"model's {max_len} positions ({config.model.name})")
        self.data = tokenize_task(config, self.task, raw, load_tokenizer(self.model.model_dir))
        self.loss_fn = make_loss_fn(self.model.module, self.objective)
        reduction = config.method.fisher.get("token_reduction", "mean")
        fisher_loss_fn = None if reduction == "mean" else make_loss_fn(
            self.model.module, dataclasses.replace(self.objective, token_reduction=reduction))
        self.apply_fn = make_apply_fn(self.model.module, self.objective)
        self._dense_eval_step = jax.jit(self._eval_outputs(lambda params, _: params))

        self.setup: MethodSetup = get_method(config.method.name).setup(method_context(
            config, params=self.model.params, loss_fn=self.loss_fn,
            train_batches=self._method_batches, train_data=self.data.train, task=self.task,
            objective=self.objective,
            model_config=self.model.config, rng=method_key, workdir=workdir,
            dev_score=self.dev_score, model_dir=self.model.model_dir,
            fisher_loss_fn=fisher_loss_fn))

        t = config.train
        self.steps_per_epoch = num_batches(self.data.train, t.batch_size)
        self.total_steps = t.num_steps or int(math.ceil(t.num_epochs * self.steps_per_epoch))
        self.eval_every = t.eval_every_steps or self.steps_per_epoch
        base_tx, self.schedule = make_optimizer(t, self.total_steps, no_decay=self.setup.no_decay)
        self.tx = self.setup.wrap_optimizer(base_tx)

        rules = tuple(config.mesh.param_rules)
        self.frozen = jax.device_put(self.setup.frozen, checked_shardings(
            self.setup.frozen, self.mesh, rules, f"frozen tree of method {config.method.name}"))
        self.state = self._init_state(
            dropout.initial_key_data(dropout_key, self.dropout_prng), rules)
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
        prng = self.dropout_prng
        opt_params_fn = self.setup.optimizer_params
        schedule = self.schedule

        def train_step(state: TrainState, frozen: PyTree, batch):
            dropout_key = dropout.step_key(state.rng, state.step, prng)

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
        apply_fn, objective = self.apply_fn, self.objective

        def eval_step(trainable: PyTree, frozen: PyTree, batch):
            outputs = apply_fn(combine(trainable, frozen), batch)
            losses = objective.per_example_loss(outputs, batch)
            return objective.predictions(outputs), losses

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
            # Per-token targets (a causal LM) differ in width between length buckets.
            ignored = getattr(self.objective, "ignored_target", None)
            metrics = self.objective.metrics(stack_rows(preds, ignored),
                                             stack_rows(labels, ignored), w)
            metrics["loss"] = float(np.sum(np.concatenate(losses) * w) / max(w.sum(), 1.0))
            prefix = "" if len(self.data.evals) == 1 else f"{split}/"
            results.update({f"{prefix}{k}": float(v) for k, v in metrics.items()})
        return results

    def main_metric_name(self) -> str:
        """The key of `main_score` in an evaluation's metrics."""
        key = self.objective.main_metric
        if len(self.data.evals) > 1:
            key = f"{self.task.eval_splits[0]}/{key}"
        return key

    def main_score(self, metrics: dict[str, float]) -> float:
        """The number that picks the best checkpoint: the first eval split's main metric."""
        return metrics[self.main_metric_name()]

    def save_artifacts(self, trainable: PyTree | None = None) -> dict[str, str] | None:
        """The method's artefact files (mask-method deltas, PEFT files) for `trainable`
        (default: the current state's), written to the workdir; None if it has none."""
        if not self.setup.artifacts:
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
            write_config_once(config, workdir)  # kept if there: it made the results here
            atomic_write_json(os.path.join(workdir, "run_info.json"), self._run_info())
            if self.task.name == INSTRUCT_TASK:
                atomic_write_json(os.path.join(workdir, INSTRUCT_SPLITS_FILE),
                                  instruction_split_record(config))
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
        step = int(self.state.step)
        # The clock of the whole training over every run of this workdir (None: an earlier
        # run's share is unknown): what a resumed run's cost is reported as.
        self._clock = (t0, 0.0 if restored is None else ckpt.train_s_at(step))
        if is_main:
            # Rows a killed run wrote past the restored step are written again below; a
            # fresh start (no checkpoint) drops them all.
            dropped = truncate_metrics(os.path.join(workdir, METRICS_FILE),
                                       step if restored is not None else -1)
            if dropped:
                log.info("dropped %d metrics rows written after step %d by an earlier run",
                         dropped, step)
        writer = MetricWriter(workdir)
        stop_at = self.total_steps if t.stop_after_steps is None else \
            min(self.total_steps, t.stop_after_steps)

        initial = self._initial_eval(step, writer)
        try:
            step, last_eval = self._train_until(stop_at, step, ckpt, writer)
        except TrainingDiverged as e:
            results = {"task": self.task.name, "method": config.method.name,
                       "seed": config.seed, "step": e.step, "total_steps": self.total_steps,
                       "finished": False, "diverged": e.record, "initial_eval": initial,
                       "best": ckpt.best(), "last_checkpoint": ckpt.latest_step(),
                       "method_summary": summary}
            if is_main:
                atomic_write_json(os.path.join(workdir, RESULTS_FILE), results)
            writer.close()
            ckpt.close()
            raise

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
            "train_s_total": None if self._clock[1] is None else self._clock[1] + train_s,
            # the optimizer's state (moments, masks): what a method's memory claim is about
            "optimizer_state_bytes": tree_bytes(self.state.opt_state),
        }
        if finished:
            results.update(self._finish(ckpt, is_main))
        if is_main:
            atomic_write_json(os.path.join(workdir, RESULTS_FILE), results)
        writer.close()
        ckpt.close()
        if finished and is_main and not t.get("keep_checkpoints", True):
            removed = remove_checkpoints(workdir)
            log.info("removed %s (train.keep_checkpoints=False)", ", ".join(removed))
        log.info("done: step %d/%d in %s (setup %s)%s", step, self.total_steps,
                 _fmt_seconds(train_s), _fmt_seconds(setup_s),
                 "" if finished else " -- stopped early (train.stop_after_steps); rerun to resume")
        return results

    def _initial_eval(self, step: int, writer: MetricWriter) -> dict[str, float] | None:
        """The evaluation before training (`train.eval_before_training`): computed at step
        0 and kept in `initial_eval.json`, so that a resumed run reports it too."""
        if not self.config.train.eval_before_training:
            return None
        path = os.path.join(self.workdir, INITIAL_EVAL_FILE)
        if step > 0 and os.path.exists(path):
            return read_json(path)
        if step > 0:  # a workdir from before this file existed
            return None
        initial = self.evaluate()
        writer.write(0, initial, "eval")
        if jax.process_index() == 0:
            atomic_write_json(path, initial)
        log.info("eval before training: %s", _fmt_metrics(initial))
        return initial

    def _train_until(self, stop_at: int, step: int, ckpt: Checkpoints, writer: MetricWriter
                     ) -> tuple[int, dict[str, float] | None]:
        """Trains from `step` to `stop_at`; returns (step reached, last evaluation)."""
        log_every = log_interval(self.config.train.log_every_steps, self.total_steps)
        bar = progress_bar(stop_at, "train", "step", initial=step,
                           enabled=jax.process_index() == 0)
        with bar, logs_above(bar):
            return self._train_loop(stop_at, step, ckpt, writer, bar, log_every)

    def _train_loop(self, stop_at: int, step: int, ckpt: Checkpoints, writer: MetricWriter,
                    bar: Any, log_every: int) -> tuple[int, dict[str, float] | None]:
        t = self.config.train
        last_eval: dict[str, float] | None = None
        window_t, window_steps = time.perf_counter(), 0
        pending: list[dict[str, jax.Array]] = []  # device metrics not yet checked
        window: list[dict[str, np.ndarray]] = []  # checked host metrics not yet logged
        while step < stop_at:
            epoch, start = divmod(step, self.steps_per_epoch)
            for batch in self.epoch_batches(epoch, start):
                pending.append(self.step(batch))
                step += 1
                window_steps += 1
                bar.update(1)
                do_log = step % log_every == 0 or step == stop_at
                do_eval = step % self.eval_every == 0 or step == self.total_steps
                do_save = do_eval or step % t.checkpoint_every_steps == 0 or step == stop_at
                if not (do_log or do_save):
                    continue  # no host sync between boundaries: steps stay queued
                host = jax.device_get(pending)
                pending = []
                # Before anything is logged, evaluated or saved: a non-finite step stops
                # the run, so no checkpoint or best model after it exists.
                check_finite(host, step - len(host) + 1, ckpt.latest_step(), self.config)
                window += host
                if do_log:
                    mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
                    window = []
                    elapsed = time.perf_counter() - window_t
                    rate = window_steps / max(elapsed, 1e-9)
                    mean["steps_per_s"] = rate
                    mean["examples_per_s"] = rate * t.batch_size
                    writer.write(step, mean, "train")
                    log.info("step %d/%d | epoch %d | loss %.4f | lr %.2e | %.2f steps/s | "
                             "ETA %s", step, self.total_steps, epoch, mean["loss"],
                             mean["learning_rate"], rate,
                             _fmt_seconds((self.total_steps - step) / max(rate, 1e-9)))
                    bar.set_postfix(loss=f"{mean['loss']:.4f}", refresh=False)
                    window_t, window_steps = time.perf_counter(), 0
                if do_eval:
                    last_eval = self.evaluate()
                    writer.write(step, last_eval, "eval")
                    improved = ckpt.maybe_save_best(step, self.state.trainable,
                                                    self.main_score(last_eval), last_eval)
                    log.info("eval step %d: %s%s", step, _fmt_metrics(last_eval),
                             " (best so far)" if improved else "")
                if do_save:
                    ckpt.save(step, self.state, self._train_s_total())
                if step >= stop_at:
                    break
        return step, last_eval

    def _train_s_total(self) -> float | None:
        """Seconds of `run` so far plus those of the earlier runs this one resumed."""
        t0, before = self._clock
        return None if before is None else before + time.perf_counter() - t0

    def _finish(self, ckpt: Checkpoints, is_main: bool) -> dict[str, Any]:
        """Export and artefacts of a finished run, from the best evaluation's params."""
        t, out = self.config.train, {}
        kept = None  # the trainable params of the best evaluation (else the last step)
        if t.export or self.setup.artifacts:
            kept = ckpt.restore_best(self.state.trainable)
            out["exported_params"] = {"source": "best", "step": ckpt.best_step()} \
                if kept is not None else {"source": "last", "step": int(self.state.step)}
            kept = self.state.trainable if kept is None else kept
        if t.export and not self.setup.exportable:
            log.warning("method %s has no plain Hugging Face form (e.g. adapters): no export "
                        "folder; see its artifacts", self.config.method.name)
            out["export_dir"] = None
        elif t.export:
            out["export_dir"] = export_model_folder(
                jax.device_get(self.setup.dense_params(kept)), self.model.config,
                os.path.join(self.workdir, "export"), tokenizer_source=self.model.model_dir,
                objective_metadata=self.objective.metadata(),
            ) if is_main else None
        if self.setup.deployed is not None:  # what the method ships differs from the model
            kept = self.state.trainable if kept is None else kept
            out["deployed_eval"] = self.evaluate_params(self.setup.deployed(kept))
            log.info("deployed model (%s): %s", self.config.method.name,
                     _fmt_metrics(out["deployed_eval"]))
        if self.setup.artifacts:  # e.g. a sparse delta file
            out["artifacts"] = self.save_artifacts(kept) if is_main else None
        evaluations = (self.config.get("instruct_eval") or {}).get("splits") or ()
        if self.task.name == INSTRUCT_TASK and evaluations:  # none: the loss alone
            if kept is None:
                kept = ckpt.restore_best(self.state.trainable)
                kept = self.state.trainable if kept is None else kept
            params = (self.setup.deployed(kept) if self.setup.deployed is not None
                      else self.setup.dense_params(kept))
            out["instruct_eval"] = self.evaluate_instructions(params, is_main)
        return out

    def evaluate_instructions(self, params: PyTree, is_main: bool = True
                              ) -> dict[str, dict[str, float]]:
        """Greedy answers and answer log-likelihoods of `params` on the mixture's
        `instruct_eval.splits` (validation, test: the trained tasks' held-back rows,
        heldout: the tasks never trained on); every answer and score is written to
        `instruct_eval.json`, the macro averages returned."""
        e, d = self.config.instruct_eval, self.config.data
        results = evaluate_mixture(
            self.model.module, params, load_tokenizer(self.model.model_dir),
            Mixture.from_config(d.instruct), splits=tuple(e.splits),
            tasks=None if e.get("tasks") is None else tuple(e.tasks),
            prompt_format=d.get("prompt_format") or DEFAULT_PROMPT_FORMAT,
            max_length=d.max_length, max_new_tokens=e.max_new_tokens,
            batch_size=e.batch_size)
        if is_main:
            atomic_write_json(os.path.join(self.workdir, INSTRUCT_EVAL_FILE), results)
        return {split: r["macro"] for split, r in results.items()}

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


def check_finite(host_metrics: list[dict[str, Any]], first_step: int,
                 last_checkpoint: int | None, config: ml_collections.ConfigDict) -> None:
    """Raises TrainingDiverged at the first step whose loss or gradient norm is not finite.

    `host_metrics[i]` holds the metrics of step `first_step + i` (1-based step numbers).
    """
    for i, m in enumerate(host_metrics):
        loss, gnorm = float(m["loss"]), float(m["grad_norm"])
        if math.isfinite(loss) and math.isfinite(gnorm):
            continue
        step = first_step + i
        kept = "no checkpoint was kept" if last_checkpoint is None else \
            f"the last finite checkpoint is checkpoints/{last_checkpoint}"
        raise TrainingDiverged(
            f"training diverged at step {step}: loss={loss}, grad_norm={gnorm}. The run "
            f"stopped; {kept}, and nothing after step {step - 1} was saved, kept as best or "
            f"exported. Lower train.learning_rate (now {config.train.learning_rate}) or "
            f"train.max_grad_norm, and start in a new workdir",
            step=step, record={"step": step, "loss": loss, "grad_norm": gnorm,
                               "last_checkpoint": last_checkpoint})


def closing_summary(results: dict[str, Any], workdir: str, metric: str) -> str:
    """The lines a run ends with: where it stopped, its best score and every output path."""
    lines = [f"run summary ({workdir}):"]
    best = results.get("best")
    if best is not None and best.get("score") is not None:
        lines.append(f"  best {metric}: {best['score']:.4f} at step {best['step']}")
    final = results.get("final_eval")
    if final and metric in final:
        lines.append(f"  final {metric}: {final[metric]:.4f} at step {results['step']}")
    outputs = {"results": os.path.join(workdir, RESULTS_FILE),
               "metrics": os.path.join(workdir, METRICS_FILE),
               "config": os.path.join(workdir, "config.json"),
               "export": results.get("export_dir")}
    for name, path in (results.get("artifacts") or {}).items():
        outputs[name] = path
    lines += [f"  {name}: {path}" for name, path in outputs.items() if path]
    if not results.get("finished"):
        lines.append("  not finished: rerun the same command to resume")
    return "\n".join(lines)


def log_interval(log_every_steps: int, total_steps: int) -> int:
    """Steps between train log lines: `train.log_every_steps`, but at least ten lines in a
    run (a 30-step run with the default 20 would log once, at its end)."""
    return max(1, min(int(log_every_steps), -(-total_steps // 10)))


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s"


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def finished_results(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
    """The results of a finished run of `config` in `workdir`, or None when there is none
    to reuse (no run, not finished, or an unreadable `results.json`: rerunning
    `train_and_evaluate` rewrites it). A run of another config is a WorkdirError."""
    check_workdir(config, workdir)
    path = os.path.join(workdir, RESULTS_FILE)
    try:
        results = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): the run will be evaluated again", path, e)
        return None
    return results if isinstance(results, dict) and results.get("finished") else None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> dict[str, Any]:
    """Fine-tunes `config.model.name` on `config.task` with `config.method`; see module doc.

    Returns the final results (also written to `<workdir>/results.json`): final and best
    eval metrics, steps, wall time and the method's summary. A workdir holding a run of
    this config resumes it; one holding a run of another config is an error
    (`WorkdirError`), unless `overwrite`, which moves the old run to `<workdir>.old-<time>`.
    Raises `TrainingDiverged` when a step's loss or gradient norm is not finite.
    """
    validate_config(config)
    distributed.initialize(config.distributed)
    is_main = jax.process_index() == 0
    created = not os.path.isdir(workdir)
    workdir = prepare_workdir(workdir)
    # Only process 0 writes fishjax's files; it holds the workdir for the whole run.
    lock = WorkdirLock(workdir) if is_main else None
    if lock:
        lock.acquire()
    try:
        aside = check_workdir(config, workdir, overwrite=overwrite and is_main)
        if aside and lock:  # the old run moved aside, with our lock file: lock the new one
            lock.moved(aside)
            workdir = prepare_workdir(workdir)
            lock.acquire()
        fresh = False
        if is_main:
            for path in remove_orphans(workdir):  # temp files of a killed earlier run
                log.info("removed %s (left by an interrupted write)", path)
            # Before the method may write files here (a mask): they belong to this config.
            fresh = write_config_once(config, workdir)
        done = None if fresh else finished_results(config, workdir)
        if done is not None and not os.path.isdir(os.path.join(workdir, FOLDERS[0])):
            # train.keep_checkpoints=False deleted them: nothing to resume or re-export
            log.info("%s holds this run, finished (its checkpoints were removed): its results "
                     "are reported, nothing is trained again", workdir)
            return done
        t0 = time.perf_counter()
        try:
            trainer = Trainer(config, workdir)
        except BaseException:
            if fresh:  # config.json only beside results it made
                os.unlink(os.path.join(workdir, CONFIG_FILE))
                created = True  # and no empty workdir
            raise
        created = False
        return trainer.run(setup_s=time.perf_counter() - t0)
    except (KeyboardInterrupt, OSError):  # Ctrl-C / SIGTERM, a full disk: no litter
        if is_main:
            for path in remove_orphans(workdir) + remove_partial_saves(workdir):
                log.info("removed %s (an interrupted write)", path)
        raise
    finally:
        if lock:
            lock.release()
        if created:
            remove_if_empty(workdir)
