"""Mask-based sparse fine-tuning: `fish`, and the baselines `random_mask` and `bitfit`.

Design note. FISH Mask (Sung, Nair & Raffel, NeurIPS 2021; reference varunnair18/FISH):
score every entry by the diagonal Fisher over `fisher.num_samples` training examples
(seeded shuffle, dropout off), keep one global top-k over every eligible entry (embeddings,
biases, LayerNorm and the pooler all compete; no per-layer quota), train the classifier
head fully, and update only the selected entries with AdamW. Budget: `keep_ratio` of all
parameters; as in the reference the head counts against it (`head_policy="in_budget"`),
or, as an option of ours, it is trained on top of it (`"outside"`).

Deliberate deviations from the reference:
- The mask is applied inside the optimizer (`fishjax.optim.masked_updates`) to gradients
  *and* updates, so AdamW's decoupled weight decay cannot move unselected entries (the
  reference masks gradients only, and its weight decay still shrinks frozen weights).
- Ties in the scores are broken by position (stable sort), not arbitrarily.
- Fisher scores come from vmapped/scanned per-example gradients (`fishjax.fisher`), not
  a Python loop over examples.

Baselines on the same budget and code path: `random_mask` (k entries uniformly at random
among the same eligible entries, seeded) and `bitfit` (every bias, plus the head;
Ben Zaken et al., 2022 — its size is fixed by the model, not by `keep_ratio`).

Training here is dense masked training: params and gradients stay dense, optimizer state
exists only for leaves with a selected entry. The mask is written to
`<workdir>/mask.safetensors` and reused when the run resumes. With
`config.method.sparse_storage=True` the same mask is trained as a sparse increment
(`fishjax.sparse`, as SIFT: gradients and AdamW state for the k selected entries + the
head only, and a `<workdir>/delta.safetensors` at the end); the dense masked path stays
the reference implementation the sparse one is tested against.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from fishjax import masks as masks_lib
from fishjax.fisher import fisher_scores
from fishjax.methods.base import MethodContext, MethodSetup, register_method
from fishjax.methods.full import take_trainable as _take_trainable
from fishjax.optim import masked_updates
from fishjax.tree import PyTree, count_params, match_tree

log = logging.getLogger("fishjax")

MASK_FILE = "mask.safetensors"


def head_and_eligible(params: PyTree, method_cfg) -> tuple[PyTree, PyTree]:
    """(head leaves, eligible leaves) as bool trees: the head is never eligible."""
    head = match_tree(params, method_cfg.head_regex)
    allowed = match_tree(params, method_cfg.eligible_regex)
    eligible = jax.tree_util.tree_map(lambda h, a: a and not h, head, allowed)
    return head, eligible


def _entries(params: PyTree, selected: PyTree) -> int:
    return int(sum(np.size(p) for p, s in zip(jax.tree_util.tree_leaves(params),
                                              jax.tree_util.tree_leaves(selected),
                                              strict=True) if s))


class MaskMethod:
    """Shared flow: build (or reload) a mask, save it, train through `masked_updates`."""

    name = "masked"

    def select(self, ctx: MethodContext, eligible: PyTree, k: int) -> tuple[PyTree, dict]:
        raise NotImplementedError

    def selection_settings(self, ctx: MethodContext) -> dict[str, Any]:
        """Settings that change the selected mask beyond the budget (e.g. Fisher samples):
        a workdir's saved mask is reused only if they match (`load_or_select_mask`)."""
        return {}

    def budget(self, ctx: MethodContext, head_entries: int) -> int:
        m = ctx.config.method
        return masks_lib.budget_k(count_params(ctx.params), m.keep_ratio, head_entries,
                                  m.head_policy)

    def setup(self, ctx: MethodContext) -> MethodSetup:
        m = ctx.config.method
        head, eligible = head_and_eligible(ctx.params, m)
        head_mask = masks_lib.regex_mask(ctx.params, m.head_regex)
        head_entries = _entries(ctx.params, head)

        def select() -> tuple[PyTree, dict]:
            selected, info = self.select(ctx, eligible, self.budget(ctx, head_entries))
            return masks_lib.union(selected, head_mask), info

        mask, info = load_or_select_mask(
            ctx, self.name, {"keep_ratio": m.keep_ratio, "head_policy": m.head_policy,
                             **self.selection_settings(ctx)}, select,
            keep_info=("fisher_examples",))
        # The head is always trained, whatever a loaded file holds (e.g. a SIFT mask).
        mask = masks_lib.union(mask, head_mask)
        stats = masks_lib.density(mask)
        info.update({
            "trainable_entries": stats["selected"],
            "head_entries": head_entries,
            "selected_outside_head": stats["selected"] - head_entries,
            "density": stats["density"],
        })
        log.info("%s mask: %d of %d entries (%.3f%%), head %d", self.name, stats["selected"],
                 stats["size"], 100 * stats["density"], head_entries)
        if m.sparse_storage:  # same mask, trained as a sparse increment (fishjax.sparse)
            from fishjax.methods.sift import delta_metadata
            from fishjax.sparse import sparse_method_setup

            return sparse_method_setup(
                ctx.params, mask, m.head_regex, weight_decay=m.sparse.weight_decay, info=info,
                sharding_rules=ctx.config.mesh.param_rules,
                delta_metadata=delta_metadata(ctx, {
                    "keep_ratio": m.keep_ratio, "head_policy": m.head_policy,
                    "selection": {"rule": f"{self.name} mask", "eligible_regex":
                                  m.eligible_regex, "head_regex": m.head_regex}}))
        return MethodSetup(
            trainable=ctx.params, frozen={}, combine=_take_trainable,
            wrap_optimizer=lambda tx: masked_updates(tx, mask), info=info,
        )


@register_method("fish")
class Fish(MaskMethod):
    name = "fish"

    def selection_settings(self, ctx):
        f = ctx.config.method.fisher
        return {"fisher_mode": f.mode, "fisher_num_samples": f.num_samples}

    def select(self, ctx, eligible, k):
        f = ctx.config.method.fisher
        res = fisher_scores(
            ctx.loss_fn, ctx.params, ctx.train_batches(f.batch_size, shuffle_seed=ctx.config.seed),
            eligible=eligible, mode=f.mode, num_labels=ctx.num_labels,
            num_samples=f.num_samples, chunk_size=_chunk(f.chunk_size),
        )
        log.info("fisher: %d examples in %.1fs (%.2f ex/s)", res.num_examples, res.seconds,
                 res.num_examples / max(res.seconds, 1e-9))
        return masks_lib.top_k_mask(res.scores, k, eligible), {
            "fisher_mode": f.mode, "fisher_examples": res.num_examples,
            "fisher_seconds": res.seconds, "fisher_backward_passes": res.backward_passes}


@register_method("random_mask")
class RandomMask(MaskMethod):
    name = "random_mask"

    def select(self, ctx, eligible, k):
        return masks_lib.random_mask(ctx.params, k, ctx.rng, eligible), {}


@register_method("bitfit")
class BitFit(MaskMethod):
    name = "bitfit"

    def budget(self, ctx, head_entries):
        return 0  # fixed by the model: every bias

    def select(self, ctx, eligible, k):
        del k
        biases = masks_lib.regex_mask(ctx.params, ctx.config.method.bitfit_regex)
        return jax.tree_util.tree_map(
            lambda b, e: np.logical_and(b, e), biases,
            jax.tree_util.tree_map(lambda e, p: np.full(np.shape(p), e), eligible, ctx.params),
        ), {}


def load_or_select_mask(
    ctx: MethodContext, method: str, settings: dict[str, Any],
    select: Callable[[], tuple[PyTree, dict[str, Any]]], keep_info: tuple[str, ...] = (),
    like: PyTree | None = None,
) -> tuple[PyTree, dict[str, Any]]:
    """A method's mask: `method.mask_file` if set; else the workdir's `mask.safetensors`
    (a resumed run) if it was made by the same method, seed and `settings`; else
    `select()`, saved to the workdir with its settings. Returns (mask, info).

    `like`: the tree the mask is shaped like (default: the params; e.g. a PEFT method's
    trainable tree)."""
    m = ctx.config.method
    mask_path = os.path.join(ctx.workdir, MASK_FILE) if ctx.workdir else None
    source = m.mask_file or (mask_path if mask_path and os.path.exists(mask_path) else None)
    want = {"method": method, "seed": ctx.config.seed, **settings}
    if source:
        mask, meta = masks_lib.load_mask(source, ctx.params if like is None else like)
        _check_mask_matches(meta, want, explicit=bool(m.mask_file))
        return mask, {"mask_loaded_from": source, **{k: meta[k] for k in keep_info if k in meta}}
    mask, info = select()
    if mask_path and jax.process_index() == 0:
        masks_lib.save_mask(mask_path, mask, metadata={
            **want, "model": ctx.config.model.name, "task": ctx.config.task,
            **{k: v for k, v in info.items() if not _is_measurement(k)}})
    return mask, info


def _is_measurement(key: str) -> bool:
    """Run measurements (seconds, a warm-up's loss) stay out of mask files, so that a mask
    file's bytes are a function of the selection alone (same seed, same bytes); they are
    in the run's results.json."""
    return key.endswith("_seconds") or key == "warmup_final_loss"


def _check_mask_matches(meta: dict, want: dict[str, Any], explicit: bool) -> None:
    """A workdir's own mask must come from the same method and settings as this run.

    Rerunning a workdir with another method, budget or seed would otherwise silently train
    the old mask. An explicit `method.mask_file` may come from anywhere (that is its
    point); a mismatch is only logged.
    """
    diff = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
    if not diff:
        return
    text = ", ".join(f"{k}: file {a!r} vs config {b!r}" for k, (a, b) in diff.items())
    if explicit:
        log.warning("method.mask_file was made with other settings (%s)", text)
        return
    raise masks_lib.MaskError(
        f"the workdir's {MASK_FILE} was made with other settings ({text}); use a new "
        "workdir, or delete the file to select again")


def _chunk(value: Any) -> int | str:
    """`method.fisher.chunk_size` is "auto" or an int (given as text on the command line)."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value != "auto":
        raise ValueError(f"config.method.fisher.chunk_size must be 'auto' or an int, "
                         f"got {value!r}")
    return value
