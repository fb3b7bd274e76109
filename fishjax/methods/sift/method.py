"""The `sift` method: options check and setup (the design note opens the package,
`fishjax/methods/sift/__init__.py`)."""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from fishjax.core.errors import ConfigError
from fishjax.core.tree import PyTree, leaf_paths, match_tree
from fishjax.methods.base import MethodContext, MethodSetup, register_method
from fishjax.methods.common import (
    artifact_metadata,
    check_regex,
    fisher_loss_settings,
    fisher_scores_from_config,
    load_or_select_mask,
    require,
    sparse_setup,
    validate_fisher,
    validate_sparse,
)
from fishjax.selection.sift import BUDGETS, gradient_scores, select_sparse

log = logging.getLogger("fishjax")

GRAD_SOURCES = ("first_batch", "first_n_batches", "fisher")


@register_method("sift")
class Sift:
    name = "sift"
    config_blocks = ("sift", "sparse", "fisher")  # fisher: grad_source="fisher"

    def validate(self, m: ml_collections.ConfigDict) -> None:
        validate_sparse(m)
        require("sift" in m, "config.method.sift is missing (see configs/default.py)")
        s = m.sift
        require(0.0 < s.rate <= 1.0, f"config.method.sift.rate must be in (0, 1], got {s.rate}")
        require(s.budget in BUDGETS,
                f"config.method.sift.budget must be one of {BUDGETS}, got {s.budget!r}")
        require(s.grad_source in GRAD_SOURCES, f"config.method.sift.grad_source must be one of "
                f"{GRAD_SOURCES}, got {s.grad_source!r}")
        require(int(s.num_batches) >= 1,
                f"config.method.sift.num_batches must be >= 1, got {s.num_batches}")
        for name in ("eligible_regex", "head_regex"):
            check_regex(s, name, "config.method.sift")
        if s.grad_source == "fisher":
            validate_fisher(m.fisher)

    def scores(self, ctx: MethodContext, eligible: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """|selection gradient| (or Fisher scores) for eligible leaves, 0 elsewhere."""
        s = ctx.method.sift
        t0 = time.perf_counter()
        if s.grad_source == "fisher":
            res = fisher_scores_from_config(ctx, ctx.params, eligible)
            return jax.tree_util.tree_map(np.asarray, res.scores), {
                "grad_source": "fisher", "fisher_examples": res.num_examples,
                "selection_seconds": res.seconds}
        n = 1 if s.grad_source == "first_batch" else int(s.num_batches)
        # The trainer's epoch-0 batches, in its order: training then starts on them at step 0.
        batches = ctx.train_batches(ctx.batch_size, seed=ctx.seed)
        scores, used = gradient_scores(ctx.loss_fn, ctx.params, batches, eligible, n)
        return scores, {"grad_source": s.grad_source, "selection_batches": used,
                        "selection_seconds": time.perf_counter() - t0}

    def setup(self, ctx: MethodContext) -> MethodSetup:
        m, s = ctx.method, ctx.method.sift
        head = match_tree(ctx.params, s.head_regex)
        allowed = match_tree(ctx.params, s.eligible_regex)
        eligible = jax.tree_util.tree_map(lambda h, a: a and not h, head, allowed)
        if not any(jax.tree_util.tree_leaves(eligible)):
            raise ConfigError(f"config.method.sift.eligible_regex={s.eligible_regex!r} matches "
                              "no parameter outside the head")

        def select() -> tuple[PyTree, dict]:
            scores, sel_info = self.scores(ctx, eligible)
            return select_sparse(scores, eligible, s.rate, s.budget), sel_info

        mask, sel_info = load_or_select_mask(
            ctx, self.name,
            {"rate": s.rate, "budget": s.budget, "eligible_regex": s.eligible_regex,
             "head_regex": s.head_regex, "grad_source": s.grad_source,
             # what the selection read: its batches, or the Fisher pass's examples
             **({"fisher_mode": m.fisher.mode, "fisher_num_samples": m.fisher.num_samples,
                 "fisher_batch_size": m.fisher.batch_size, **fisher_loss_settings(m.fisher)}
                if s.grad_source == "fisher" else
                {"num_batches": 1 if s.grad_source == "first_batch" else int(s.num_batches),
                 "batch_size": ctx.batch_size})},
            select, keep_info=("grad_source", "selection_batches"))
        info: dict[str, Any] = {"sift_rate": s.rate, "sift_budget": s.budget, **sel_info}
        per_leaf = {p: int(np.count_nonzero(x)) for p, x in
                    zip(leaf_paths(mask), jax.tree_util.tree_leaves(mask), strict=True)
                    if np.any(x)}
        setup = sparse_setup(
            ctx.params, mask, head, weight_decay=m.sparse.weight_decay, info=info,
            delta_metadata=artifact_metadata(ctx, {
                "rate": s.rate, "selection": {
                    "rule": f"top-|{s.grad_source}| {s.budget}", "grad_source":
                    info.get("grad_source", s.grad_source), "budget": s.budget,
                    "eligible_regex": s.eligible_regex, "head_regex": s.head_regex,
                    "num_batches": info.get("selection_batches")}}))
        log.info("sift: %d entries in %d tensors (rate %g, %s) + head %d entries",
                 setup.info["sparse_entries"], len(per_leaf), s.rate, s.budget,
                 setup.info["head_entries"])
        return setup
