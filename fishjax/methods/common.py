"""The shared core of the methods: what more than one method does, done once.

- option checks (`require`, `check_regex`, `validate_mask_options`, `validate_fisher`,
  `validate_sparse`), each naming `config.method.<field>`;
- the head / eligible split (`head_and_eligible`);
- the one Fisher call from `config.method.fisher` (`fisher_scores_from_config`,
  `fisher_pass_options`);
- load-or-select of a method's mask, with the workdir's mask file reused only when it was
  made with the same settings (`load_or_select_mask`);
- the metadata a delta or PEFT file records about its run (`artifact_metadata`);
- the two ways a mask is trained: dense masked AdamW (`masked_setup`) and a sparse
  increment (`sparse_setup`), and `MaskMethod`, the flow of every mask method (`fish`,
  `random_mask`, `bitfit`, `ird`);
- the trainer's own epochs for short runs (`training_stream`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from fishjax.artifacts.delta_file import DELTA_FILE, apply_delta_file, save_delta
from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.artifacts.mask_file import MASK_FILE, load_mask, save_mask
from fishjax.core.errors import ConfigError, MaskError, SparseError
from fishjax.core.tree import (
    PyTree,
    count_params,
    flatten_paths,
    match_tree,
    split_tree,
    union,
)
from fishjax.data import cycle_epochs
from fishjax.methods.base import (
    Artifact,
    Batch,
    MethodContext,
    MethodSetup,
    register_artifact_reader,
)
from fishjax.objectives.causal_lm import TOKEN_REDUCTIONS
from fishjax.params import sparse as sparse_lib
from fishjax.params.masked import masked_updates
from fishjax.params.masks import density, regex_mask
from fishjax.selection.budgets import HEAD_POLICIES, ROUNDINGS, budget_k
from fishjax.selection.fisher import ENGINES, MODES, FisherPass, fisher_scores

log = logging.getLogger("fishjax")


# -- option checks ---------------------------------------------------------------------


def require(cond: bool, message: str) -> None:
    """Raises ConfigError(message) unless `cond`."""
    if not cond:
        raise ConfigError(message)


def check_regex(section: ml_collections.ConfigDict, name: str, prefix: str) -> None:
    """`section[name]` compiles as a regex; else a ConfigError naming `prefix.name`."""
    try:
        re.compile(section[name])
    except (re.error, TypeError) as e:
        raise ConfigError(f"{prefix}.{name}={section[name]!r} is not a regex: {e}") from None


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_chunk_size(value: Any) -> int | str:
    """`method.fisher.chunk_size` is "auto" or an int (given as text on the command line)."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value != "auto":
        raise ConfigError(f"config.method.fisher.chunk_size must be 'auto' or an int, "
                          f"got {value!r}")
    return value


def validate_fisher(f: ml_collections.ConfigDict) -> None:
    """config.method.fisher: the settings of every Fisher pass."""
    require(f.mode in MODES, f"config.method.fisher.mode must be one of {MODES}, got {f.mode!r}")
    require(f.num_samples > 0 and f.batch_size > 0,
            "config.method.fisher.num_samples and batch_size must be positive")
    require(str(f.chunk_size) == "auto" or (str(f.chunk_size).isdigit() and int(f.chunk_size) > 0
                                            and f.batch_size % int(f.chunk_size) == 0),
            f"config.method.fisher.chunk_size must be 'auto' or a positive divisor of "
            f"fisher.batch_size={f.batch_size}, got {f.chunk_size!r}")
    require(f.engine in ENGINES, f"config.method.fisher.engine must be one of {ENGINES}, "
            f"got {f.engine!r}")
    require(f.get("token_reduction", "mean") in TOKEN_REDUCTIONS,
            f"config.method.fisher.token_reduction must be one of {TOKEN_REDUCTIONS}, got "
            f"{f.get('token_reduction')!r}")


def fisher_loss_settings(f: ml_collections.ConfigDict) -> dict[str, str]:
    """What a selection records of the Fisher loss: nothing for the default (so masks
    saved before the option existed stay valid), the token reduction otherwise."""
    reduction = f.get("token_reduction", "mean")
    return {} if reduction == "mean" else {"fisher_token_reduction": reduction}


def validate_sparse(m: ml_collections.ConfigDict) -> None:
    """config.method.sparse_storage and config.method.sparse (training as an increment)."""
    require(isinstance(m.get("sparse_storage", False), bool),
            f"config.method.sparse_storage must be True or False, got "
            f"{m.get('sparse_storage')!r}")
    if "sparse" in m:
        wd = m.sparse.weight_decay
        require(wd in sparse_lib.WEIGHT_DECAY_MODES, f"config.method.sparse.weight_decay must "
                f"be one of {sparse_lib.WEIGHT_DECAY_MODES}, got {wd!r}")


def validate_mask_options(m: ml_collections.ConfigDict) -> None:
    """The options every mask method shares: budget, head, eligible leaves, mask file."""
    require(0.0 < m.keep_ratio <= 1.0,
            f"config.method.keep_ratio must be in (0, 1], got {m.keep_ratio}")
    require(m.head_policy in HEAD_POLICIES,
            f"config.method.head_policy must be one of {HEAD_POLICIES}, got {m.head_policy!r}")
    require(m.budget_rounding in ROUNDINGS, f"config.method.budget_rounding must be one of "
            f"{ROUNDINGS}, got {m.budget_rounding!r}")
    for name in ("head_regex", "eligible_regex", "bitfit_regex"):
        check_regex(m, name, "config.method")
    if m.mask_file is not None:
        require(os.path.isfile(m.mask_file),
                f"config.method.mask_file={m.mask_file!r} does not exist")
    validate_sparse(m)


# -- leaves and Fisher ---------------------------------------------------------------------


def head_and_eligible(params: PyTree, method_cfg: ml_collections.ConfigDict
                      ) -> tuple[PyTree, PyTree]:
    """(head leaves, eligible leaves) as bool trees: the head is never eligible."""
    head = match_tree(params, method_cfg.head_regex)
    allowed = match_tree(params, method_cfg.eligible_regex)
    eligible = jax.tree_util.tree_map(lambda h, a: a and not h, head, allowed)
    return head, eligible


def split_head(params: PyTree, method_cfg: ml_collections.ConfigDict, *,
               required: bool = True) -> tuple[PyTree, PyTree]:
    """(head, rest) of `params` by `config.method.head_regex`. With `required` (a family
    whose head is drawn fresh, or a method that trains nothing else) a regex matching no
    leaf is a ConfigError: the head would stay at its random init, or nothing would train.
    A causal LM has no task head: pass `required=ctx.family.fresh_head`."""
    head, rest = split_tree(params, method_cfg.head_regex)
    if required and not flatten_paths(head):
        raise ConfigError(f"config.method.head_regex={method_cfg.head_regex!r} matches no "
                          "parameter: the task head would stay at its random init (or, on a "
                          "model without a task head such as a causal LM, nothing trains)")
    return head, rest


def leaf_entries(params: PyTree, selected: PyTree) -> int:
    """Entries of the leaves a bool-per-leaf tree selects."""
    return int(sum(np.size(p) for p, s in zip(jax.tree_util.tree_leaves(params),
                                              jax.tree_util.tree_leaves(selected),
                                              strict=True) if s))


def fisher_pass_options(ctx: MethodContext) -> dict[str, Any]:
    """The `config.method.fisher` settings every Fisher pass of the run uses."""
    f = ctx.method.fisher
    return {"mode": f.mode, "objective": ctx.objective,
            "chunk_size": parse_chunk_size(f.chunk_size),
            "engine": f.engine}


def fisher_scores_from_config(ctx: MethodContext, params: PyTree, eligible: PyTree | str,
                              loss_fn: Callable[[PyTree, Batch], Any] | None = None
                              ) -> FisherPass:
    """Diagonal Fisher of `params` (default loss: the run's Fisher loss) over `fisher.num_samples`
    training examples in the trainer's epoch-0 order, `fisher.batch_size` per batch."""
    f = ctx.method.fisher
    res = fisher_scores(loss_fn or ctx.fisher_loss, params,
                        ctx.train_batches(f.batch_size, seed=ctx.seed),
                        eligible=eligible, num_samples=f.num_samples, **fisher_pass_options(ctx))
    log.info("fisher: %d examples in %.1fs (%.2f ex/s)", res.num_examples, res.seconds,
             res.num_examples / max(res.seconds, 1e-9))
    return res


def training_stream(ctx: MethodContext) -> Iterator[Batch]:
    """The trainer's batches, epoch after epoch (its batch size, seed and epoch order), for
    short runs that may need more than one pass."""
    return cycle_epochs(lambda e: ctx.train_batches(ctx.batch_size, seed=ctx.seed, epoch=e))


# -- masks on disk ---------------------------------------------------------------------------


def _is_measurement(key: str) -> bool:
    """Run measurements (seconds, a warm-up's loss) stay out of mask files, so that a mask
    file's bytes are a function of the selection alone (same seed, same bytes); they are
    in the run's results.json."""
    return key.endswith("_seconds") or key == "warmup_final_loss"


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
    m = ctx.method
    mask_path = os.path.join(ctx.workdir, MASK_FILE) if ctx.workdir else None
    source = m.mask_file or (mask_path if mask_path and os.path.exists(mask_path) else None)
    want = {"method": method, "seed": ctx.seed, **settings}
    # The base without the family's head (a fresh random init per seed; the family's
    # regex, not the config's, so that the fingerprint is one per base model).
    base_fp = base_fingerprint(split_tree(ctx.params, ctx.family.head_regex)[1])
    if source:
        mask, meta = load_mask(source, ctx.params if like is None else like)
        _check_mask_matches(meta, want, explicit=bool(m.mask_file))
        _check_mask_base(source, meta, base_fp)
        return mask, {"mask_loaded_from": source, **{k: meta[k] for k in keep_info if k in meta}}
    mask, info = select()
    if mask_path and jax.process_index() == 0:
        save_mask(mask_path, mask, metadata={
            **want, "model": ctx.model_name, "task": ctx.task.name,
            "base_fingerprint": base_fp,
            **{k: v for k, v in info.items() if not _is_measurement(k)}})
    return mask, info


def _check_mask_base(path: str, meta: dict, base_fp: str) -> None:
    """A mask selected on one base model is refused on another, even with equal shapes
    (the Fisher ranks that base's weights). Masks written before fingerprints were
    recorded cannot be checked: a warning says so."""
    recorded = meta.get("base_fingerprint")
    if recorded is None:
        log.warning("mask %s records no base-model fingerprint (written by an older fishjax): "
                    "it cannot be checked against this base", path)
    elif recorded != base_fp:
        raise MaskError(
            f"mask {path!r} was selected on another base model ({meta.get('model', '?')}, "
            f"fingerprint {recorded[:12]}; this base {base_fp[:12]}): a Fisher mask ranks one "
            "base's weights; select a mask on this base (a new workdir without "
            "method.mask_file)")


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
    raise MaskError(
        f"the workdir's {MASK_FILE} was made with other settings ({text}); use a new "
        "workdir, or delete the file to select again")


def artifact_metadata(ctx: MethodContext, extra: dict[str, Any]) -> dict[str, Any]:
    """What a delta or PEFT file records about its run (base model, the objective's
    metadata, method, seed)."""
    pooling = getattr(ctx.model_config, "pooling", "pooler")
    return {"base_model": ctx.model_name, **ctx.objective.metadata(),
            "method": ctx.method.name, "task": ctx.task.name, "seed": ctx.seed,
            **({} if pooling == "pooler" else {"pooling": pooling}), **extra}


# -- training a mask -------------------------------------------------------------------------


def take_trainable(trainable: PyTree, frozen: PyTree) -> PyTree:
    """`combine` for methods that train the dense params themselves."""
    del frozen
    return trainable


def masked_setup(params: PyTree, mask: PyTree, info: dict[str, Any]) -> MethodSetup:
    """Dense masked training: the params train, AdamW wrapped by `masked_updates(mask)`."""
    return MethodSetup(trainable=params, frozen={}, combine=take_trainable,
                       wrap_optimizer=lambda tx: masked_updates(tx, mask), info=info)


# A finished run's delta file, read back without its setup (`fishjax.load`).
register_artifact_reader("delta", lambda path, params, method_cfg: apply_delta_file(path, params))


def sparse_setup(
    params: PyTree,
    mask: PyTree,
    head: PyTree | str | None,
    *,
    weight_decay: str = "off",
    info: dict[str, Any] | None = None,
    delta_metadata: dict[str, Any] | None = None,
) -> MethodSetup:
    """A `MethodSetup` training the True entries of `mask` as an increment (+ dense head).

    `weight_decay`: "off" (no decay on the increment) or "weights" (decoupled decay of
    `W0[I] + delta`, identical to dense masked AdamW); see `fishjax.params.sparse`.
    `delta_metadata` (base_model, the objective's metadata, ...): if given, the trainer writes the
    increment of the kept (best) trainable tree and the head to `<workdir>/delta.safetensors`
    at the end of a finished run (`fishjax.artifacts.delta_file.save_delta`).

    Example:
      >>> setup = sparse_setup(ctx.params, mask, r"^(pooler|classifier)/")
      >>> params = setup.combine(setup.trainable, setup.frozen)  # == ctx.params at init
    """
    if weight_decay not in sparse_lib.WEIGHT_DECAY_MODES:
        raise SparseError(f"weight_decay must be one of {sparse_lib.WEIGHT_DECAY_MODES}, got "
                          f"{weight_decay!r}")
    trainable, frozen = sparse_lib.split_for_training(params, mask, head)
    artifacts = ()
    if delta_metadata is not None:
        meta = dict(delta_metadata, weight_decay=weight_decay)

        def save(kept: PyTree, workdir: str) -> str:
            return save_delta(os.path.join(workdir, DELTA_FILE),
                              sparse_lib.delta_of(kept, frozen), kept[sparse_lib.HEAD_KEY],
                              frozen[sparse_lib.BASE_KEY], metadata=meta)

        artifacts = (Artifact("delta", save, apply_delta_file),)

    k = sparse_lib.count(frozen[sparse_lib.INDICES_KEY])
    head_entries = int(sum(np.size(x) for x in
                           flatten_paths(trainable[sparse_lib.HEAD_KEY]).values()))
    return MethodSetup(
        trainable=trainable,
        frozen=frozen,
        combine=sparse_lib.combine,
        optimizer_params=sparse_lib.effective_weights if weight_decay == "weights" else None,
        no_decay=sparse_lib.NO_DECAY_REGEX if weight_decay == "off" else None,
        artifacts=artifacts,
        info={**(info or {}), "sparse_storage": True, "sparse_entries": k,
              "head_entries": head_entries, "trainable_entries": k + head_entries,
              "sparse_weight_decay": weight_decay},
    )


class MaskMethod:
    """The flow of every mask method: build (or reload) a mask, save it, train it densely
    masked or, with `method.sparse_storage`, as a sparse increment.

    Subclasses give `select(ctx, eligible, k) -> (mask, info)` and, if the mask depends on
    more than the budget, `selection_settings(ctx)`; `validate` covers the shared options.
    """

    name = "masked"
    config_blocks: tuple[str, ...] = ("sparse",)  # sparse_storage trains an increment

    def validate(self, m: ml_collections.ConfigDict) -> None:
        validate_mask_options(m)

    def select(self, ctx: MethodContext, eligible: PyTree, k: int) -> tuple[PyTree, dict]:
        raise NotImplementedError

    def selection_settings(self, ctx: MethodContext) -> dict[str, Any]:
        """Settings that change the selected mask beyond the budget (e.g. Fisher samples):
        a workdir's saved mask is reused only if they match (`load_or_select_mask`)."""
        return {}

    def budget(self, ctx: MethodContext, head_entries: int) -> int:
        m = ctx.method
        return budget_k(count_params(ctx.params), m.keep_ratio, head_entries, m.head_policy,
                        m.budget_rounding)

    def setup(self, ctx: MethodContext) -> MethodSetup:
        m = ctx.method
        head, eligible = head_and_eligible(ctx.params, m)
        head_mask = regex_mask(ctx.params, m.head_regex)
        head_entries = leaf_entries(ctx.params, head)

        def select() -> tuple[PyTree, dict]:
            selected, info = self.select(ctx, eligible, self.budget(ctx, head_entries))
            return union(selected, head_mask), info

        mask, info = load_or_select_mask(
            ctx, self.name, {"keep_ratio": m.keep_ratio, "head_policy": m.head_policy,
                             "head_regex": m.head_regex, "eligible_regex": m.eligible_regex,
                             "budget_rounding": m.budget_rounding,
                             **self.selection_settings(ctx)},
            select, keep_info=("fisher_examples",))
        # The head is always trained, whatever a loaded file holds (e.g. a SIFT mask).
        mask = union(mask, head_mask)
        stats = density(mask)
        info.update({
            "trainable_entries": stats["selected"],
            "head_entries": head_entries,
            "selected_outside_head": stats["selected"] - head_entries,
            "density": stats["density"],
        })
        log.info("%s mask: %d of %d entries (%.3f%%), head %d", self.name, stats["selected"],
                 stats["size"], 100 * stats["density"], head_entries)
        if m.sparse_storage:  # same mask, trained as a sparse increment (fishjax.params.sparse)
            return sparse_setup(
                ctx.params, mask, m.head_regex, weight_decay=m.sparse.weight_decay, info=info,
                delta_metadata=artifact_metadata(ctx, {
                    "keep_ratio": m.keep_ratio, "head_policy": m.head_policy,
                    "selection": {"rule": f"{self.name} mask", "eligible_regex":
                                  m.eligible_regex, "head_regex": m.head_regex}}))
        return masked_setup(ctx.params, mask, info)
