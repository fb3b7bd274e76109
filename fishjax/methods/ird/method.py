"""The `ird` method: options check and setup (the design note opens the package,
`fishjax/methods/ird/__init__.py`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax

from fishjax.core.errors import ConfigError, IRDError
from fishjax.core.io import atomic_write_json
from fishjax.core.tree import PyTree, union
from fishjax.methods.base import MethodContext, register_method
from fishjax.methods.common import (
    MaskMethod,
    fisher_loss_settings,
    fisher_pass_options,
    require,
    training_stream,
    validate_fisher,
)
from fishjax.params.masked import masked_updates
from fishjax.params.masks import regex_mask
from fishjax.selection.ird import IRDOptions, run_ird
from fishjax.selection.short_run import short_run

log = logging.getLogger("fishjax")

TRACE_FILE = "ird_trace.json"


@register_method("ird")
class IRD(MaskMethod):
    name = "ird"
    config_blocks = ("sparse", "fisher", "ird")

    def validate(self, m):
        super().validate(m)
        validate_fisher(m.fisher)
        require("ird" in m, "config.method.ird is missing (options of method `ird`)")
        try:
            IRDOptions.from_config(m.ird)
        except IRDError as e:
            raise ConfigError(f"config.method.ird.{e.field}: {e}") from None

    def selection_settings(self, ctx: MethodContext) -> dict:
        options = dataclasses.asdict(IRDOptions.from_config(ctx.method.ird))
        return {"fisher_mode": ctx.method.fisher.mode,
                "fisher_batch_size": ctx.method.fisher.batch_size,
                **fisher_loss_settings(ctx.method.fisher),
                "ird_options": json.dumps(options, sort_keys=True, default=list)}

    def select(self, ctx: MethodContext, eligible: PyTree, k: int) -> tuple[PyTree, dict]:
        m = ctx.method
        options = IRDOptions.from_config(m.ird)
        res = run_ird(
            ctx.fisher_loss, ctx.params, ctx.train_data, eligible=eligible, k=k,
            options=options, seed=ctx.seed, batch_size=m.fisher.batch_size,
            candidate_score=dev_trial(ctx, options.best_dev_steps)
            if options.final == "best_dev" else None,
            **fisher_pass_options(ctx),
        )
        trace = res.trace
        if ctx.workdir and jax.process_index() == 0:
            atomic_write_json(os.path.join(ctx.workdir, TRACE_FILE), trace)
        log.info("ird: %d rounds (%s), %d samples kept, %d backward passes (FISH on the same "
                 "pool: %d), %.1fs", len(trace["rounds"]), trace["stop_reason"],
                 len(res.samples), res.backward_passes,
                 trace["fish_backward_passes_same_pool"], res.seconds)
        return res.mask, {
            "fisher_mode": m.fisher.mode,
            "fisher_examples": trace["pool"]["n"],
            "fisher_seconds": res.seconds,
            "fisher_backward_passes": res.backward_passes,
            "ird_rounds": len(trace["rounds"]),
            "ird_stop_reason": trace["stop_reason"],
            "ird_samples_kept": int(len(res.samples)),
            "ird_sample_ranking": m.ird.sample_ranking,
            "ird_final": options.final if options.final == "last" else
            "best_dev (selected on dev: the dev score is optimistic)",
            "ird_final_round": trace["final"]["round"],
            "ird_trace": TRACE_FILE,
        }


def dev_trial(ctx: MethodContext, steps: int):
    """`candidate_score(mask)`: the dev main metric after `steps` of masked AdamW training.

    Every candidate starts from the same params (pretrained encoder + the run's head), sees
    the same batches (the trainer's, epoch after epoch) and the trainer's optimizer over
    `steps` steps; the head is always trained.
    """
    if ctx.dev_score is None:
        raise IRDError("final='best_dev' needs a dev set (the method context has no "
                       "dev_score)", "final")
    head = regex_mask(ctx.params, ctx.method.head_regex)
    base_tx = ctx.base_optimizer(steps)

    def score(mask: PyTree) -> float:
        tx = masked_updates(base_tx, union(mask, head))
        params, _ = short_run(ctx.loss_fn, ctx.params, training_stream(ctx), tx, steps,
                              desc="ird trial")
        return ctx.dev_score(params)

    return score
