"""The `peft` methods: options check and setup (the design note opens the package,
`fishjax/methods/peft/__init__.py`)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import ConfigError, PeftError
from fishjax.core.tree import (
    PyTree,
    count_params,
    count_true,
    flatten_paths,
    merge_trees,
)
from fishjax.methods.base import (
    Artifact,
    MethodContext,
    MethodSetup,
    register,
    register_artifact_reader,
)
from fishjax.methods.common import (
    artifact_metadata,
    check_regex,
    fisher_loss_settings,
    fisher_scores_from_config,
    is_positive_int,
    load_or_select_mask,
    require,
    split_head,
    training_stream,
    validate_fisher,
)
from fishjax.methods.peft.peft_file import (
    PEFT_DIR,
    PEFT_FILE,
    apply_peft_file,
    export_peft_folder,
    load_peft_file,
    save_peft_file,
)
from fishjax.models import ADAPTER_SITES, slot_width
from fishjax.params.masked import masked_updates
from fishjax.params.peft import (
    PeftSpec,
    apply_peft,
    check_tree,
    entry_count,
    find_targets,
    init_peft,
    peft_shapes,
    tensor_types,
    type_counts,
)
from fishjax.selection.short_run import short_run
from fishjax.selection.topk import SELECTIONS, select_entries

log = logging.getLogger("fishjax")

PEFT_KEY, HEAD_KEY = "peft", "head"
BUDGETS = ("global", "per_type")
TIE_BREAKS = ("random", "position")
# method name -> (PEFT kind, FISH inside)
PEFT_METHODS = {
    "lora": ("lora", False),
    "lora_fish": ("lora", True),
    "dora": ("dora", False),
    "dora_fish": ("dora", True),
    "adapter": ("adapter", False),
    "adapter_fish": ("adapter", True),
}


def validate_peft(p: ml_collections.ConfigDict) -> None:
    """config.method.peft."""
    for name in ("rank", "adapter_reduction_factor", "search_factor", "warmup_steps"):
        require(is_positive_int(p[name]),
                f"config.method.peft.{name} must be a positive int, got {p[name]!r}")
    if p.adapter_size is not None:
        require(is_positive_int(p.adapter_size),
                f"config.method.peft.adapter_size must be a positive int, got "
                f"{p.adapter_size!r}")
    require(p.alpha > 0, f"config.method.peft.alpha must be > 0, got {p.alpha}")
    for name, allowed in (("adapter_variant", tuple(ADAPTER_SITES)), ("selection", SELECTIONS),
                          ("budget", BUDGETS), ("tie_break", TIE_BREAKS)):
        require(p[name] in allowed,
                f"config.method.peft.{name} must be one of {allowed}, got {p[name]!r}")
    require(isinstance(p.fisher_after_warmup, bool),
            f"config.method.peft.fisher_after_warmup must be True or False, got "
            f"{p.fisher_after_warmup!r}")
    check_regex(p, "lora_targets", "config.method.peft")


def target_spec(base: PyTree, kind: str, p: ml_collections.ConfigDict,
                adapter_sites: Mapping[str, str] = ADAPTER_SITES) -> PeftSpec:
    """The vanilla method's module at the target size, from `config.method.peft`;
    `adapter_sites`: the model's adapter placements (`fishjax.models.architecture`)."""
    if kind == "adapter":
        if not adapter_sites:
            raise PeftError("this model family has no bottleneck-adapter sites (adapters are "
                            "built for the encoders; use lora or dora)")
        if p.adapter_variant not in adapter_sites:
            raise PeftError(f"config.method.peft.adapter_variant must be one of "
                            f"{tuple(adapter_sites)}, got {p.adapter_variant!r}")
        targets = find_targets(base, "adapter", adapter_sites[p.adapter_variant])
        hidden = slot_width(base, tuple(targets[0].split("/")))
        size = p.adapter_size or max(1, hidden // int(p.adapter_reduction_factor))
        return PeftSpec("adapter", int(size), targets)
    return PeftSpec(kind, int(p.rank), find_targets(base, kind, p.lora_targets),
                    scaling=float(p.alpha) / int(p.rank))


def peft_combine(spec: PeftSpec) -> Callable[[PyTree, PyTree], PyTree]:
    """`combine(trainable, frozen)` for `{"peft": tree, "head": head}` over the frozen base."""
    def combine(trainable: PyTree, frozen: PyTree) -> PyTree:
        # A model without a task head (a causal LM) has an empty head, which tree splits
        # and merges drop.
        return merge_trees(apply_peft(frozen, trainable[PEFT_KEY], spec),
                           trainable.get(HEAD_KEY, {}))
    return combine


def peft_fisher_scores(ctx: MethodContext, trainable: PyTree, frozen: PyTree,
                       combine: Callable) -> tuple[PyTree, dict[str, Any]]:
    """Diagonal Fisher of every PEFT entry (head and base frozen): (scores tree, info)."""
    params = {"trainable": trainable, "frozen": frozen}
    off = lambda t: jax.tree_util.tree_map(lambda _: False, t)
    eligible = {"trainable": {PEFT_KEY: jax.tree_util.tree_map(lambda _: True,
                                                               trainable[PEFT_KEY]),
                              HEAD_KEY: off(trainable[HEAD_KEY])}, "frozen": off(frozen)}

    def loss(prm, batch):
        return ctx.fisher_loss(combine(prm["trainable"], prm["frozen"]), batch)

    res = fisher_scores_from_config(ctx, params, eligible, loss_fn=loss)
    scores = jax.tree_util.tree_map(np.asarray, res.scores["trainable"][PEFT_KEY])
    return scores, {"fisher_mode": ctx.method.fisher.mode, "fisher_examples": res.num_examples,
                    "fisher_seconds": res.seconds}


def dense_warmup(ctx: MethodContext, trainable: PyTree, frozen: PyTree, combine: Callable,
                 steps: int) -> tuple[PyTree, float]:
    """`steps` Adam steps on every trainable entry (dropout off, the trainer's learning
    rate and batches, epoch after epoch): (tree, last loss)."""
    try:
        trainable, losses = short_run(
            lambda tr, batch, fz: ctx.loss_fn(combine(tr, fz), batch), trainable,
            training_stream(ctx), optax.adam(ctx.learning_rate), steps, frozen=frozen,
            desc="fisher warm-up")
    except ValueError as e:
        raise PeftError(f"Fisher warm-up: {e}") from None
    return trainable, losses[-1]


def selection_split(mask: PyTree, scores: PyTree | None = None) -> dict[str, dict[str, int]]:
    """Per tensor type: entries at search size, selected, and selected with score 0."""
    types = flatten_paths(tensor_types(mask))
    m = flatten_paths(mask)
    s = flatten_paths(scores) if scores is not None else {}
    out: dict[str, dict[str, int]] = {}
    for p, t in types.items():
        row = out.setdefault(t, {"size": 0, "selected": 0, "selected_at_zero": 0})
        row["size"] += int(np.size(m[p]))
        row["selected"] += int(np.count_nonzero(m[p]))
        if p in s:
            row["selected_at_zero"] += int(np.count_nonzero(m[p] & (np.asarray(s[p]) == 0)))
    return dict(sorted(out.items()))


def warn_zero_init_trap(split: dict[str, dict[str, int]], name: str) -> list[str]:
    """Logs a loud warning for each tensor type without a positively scored selected
    entry; returns those types."""
    trapped = [t for t, r in split.items() if r["selected"] - r["selected_at_zero"] == 0]
    for t in trapped:
        r = split[t]
        log.warning(
            "%s: ZERO-INIT TRAP: %s got %d of %d entries, %s. Its Fisher scores are 0 "
            "because the zero-initialised partner (lora_B / adapter up-projection) blocks "
            "its gradient at init, so FISH selects around it. Use "
            "config.method.peft.fisher_after_warmup=True (budget='per_type' only gives it "
            "a quota, filled by tie-breaking among zero scores).",
            name, t, r["selected"], r["size"],
            "none" if r["selected"] == 0 else "all of them only by tie-breaking at score 0")
    return trapped


def _trainable_from_file(path: str, base: PyTree, head: PyTree, spec: PeftSpec) -> dict:
    """`{"peft": tree, "head": head}` of a PEFT file, checked against this run: the same
    base model, spec and head leaves (e.g. a meta-initialisation to fine-tune further)."""
    tree, file_head, file_spec, meta = load_peft_file(path)
    if meta["base_fingerprint"] != base_fingerprint(base):
        raise PeftError(f"config.method.peft.init_from={path!r} was trained on another base "
                        f"model ({meta.get('base_model', '?')!r})")
    if file_spec != spec:
        raise PeftError(f"config.method.peft.init_from={path!r} holds a {file_spec.to_dict()} "
                        f"tree; this run builds {spec.to_dict()}")
    shapes = lambda t: {p: np.shape(x) for p, x in flatten_paths(t).items()}  # noqa: E731
    if shapes(file_head) != shapes(head):
        raise PeftError(f"config.method.peft.init_from={path!r}: its head does not fit this "
                        "task's head (another number of labels?)")
    check_tree(base, tree, spec)
    return {PEFT_KEY: tree, HEAD_KEY: file_head}


class PeftMethod:
    """Vanilla PEFT (`fish=False`) or FISH-Tuning (`fish=True`) of one kind."""

    def __init__(self, name: str, kind: str, fish: bool):
        self.name, self.kind, self.fish = name, kind, fish
        # The *_fish methods' Fisher pass reads method.fisher; vanilla PEFT does not.
        self.config_blocks = ("peft", "fisher") if fish else ("peft",)

    @property
    def description(self) -> str:
        """One line for `train.py --list=methods`."""
        kind = {"lora": "LoRA", "dora": "DoRA", "adapter": "bottleneck adapters"}[self.kind]
        return f"FISH-Tuning: a Fisher mask inside {kind}" if self.fish else \
            f"{kind} (vanilla PEFT, config.method.peft)"

    def validate(self, m: ml_collections.ConfigDict) -> None:
        if "peft" not in m:
            raise ConfigError("config.method.peft is missing (see configs/default.py)")
        validate_peft(m.peft)
        check_regex(m, "head_regex", "config.method")
        if m.mask_file is not None:
            require(os.path.isfile(m.mask_file),
                    f"config.method.mask_file={m.mask_file!r} does not exist")
        if self.fish and m.peft.selection != "random":
            validate_fisher(m.fisher)
        init_from = m.peft.get("init_from")
        if init_from is not None:
            require(os.path.isfile(init_from),
                    f"config.method.peft.init_from={init_from!r} does not exist")
            require(not self.fish, "config.method.peft.init_from starts a vanilla PEFT method "
                    f"from a saved tree; {self.name} selects its own entries")

    def setup(self, ctx: MethodContext) -> MethodSetup:
        p = ctx.method.peft
        head, base = split_head(ctx.params, ctx.method, required=ctx.family.fresh_head)
        spec = target_spec(base, self.kind, p,
                           ctx.family.adapter_sites)
        init_key, select_key = jax.random.split(ctx.rng)
        k = entry_count(base, spec)
        head_entries = count_params(head)
        info: dict[str, Any] = {"peft_kind": self.kind, "peft_size": spec.size,
                                "peft_targets": len(spec.targets), "peft_entries": k,
                                "head_entries": head_entries,
                                "trainable_entries": k + head_entries}
        if self.kind == "adapter":
            info["adapter_variant"] = p.adapter_variant
        run_spec = spec.resized(spec.size * int(p.search_factor)) if self.fish else spec
        if p.get("init_from"):
            trainable = _trainable_from_file(p.init_from, base, head, run_spec)
            info["init_from"] = os.path.abspath(p.init_from)
        else:
            trainable = {PEFT_KEY: init_peft(base, run_spec, init_key), HEAD_KEY: head}
        combine = peft_combine(run_spec)
        wrap = None
        if self.fish:
            mask, sel_info = self._mask(ctx, trainable, base, combine, spec, run_spec,
                                        select_key)
            info.update(sel_info)
            wrap = lambda tx: masked_updates(tx, mask)  # noqa: E731
        log.info("%s: %s size %d on %d targets: %d PEFT entries + head %d", self.name,
                 self.kind, spec.size, len(spec.targets), k, head_entries)
        return MethodSetup(
            trainable=trainable, frozen=base, combine=combine,
            wrap_optimizer=wrap or (lambda tx: tx),
            artifacts=self._artifacts(ctx, run_spec, base, info),
            exportable=self.kind != "adapter", info=info)

    def _mask(self, ctx, trainable, base, combine, spec, search, key):
        """The FISH mask over the trainable tree (head always selected) and its info."""
        p = ctx.method.peft
        tree = trainable[PEFT_KEY]
        target_types = type_counts(peft_shapes(base, spec))
        budgets = ({"all": sum(target_types.values())} if p.budget == "global"
                   else target_types)
        groups = None if p.budget == "global" else tensor_types(tree)
        scored = p.selection != "random"
        settings = {"peft": search.to_dict(), "k": sum(target_types.values()),
                    "selection": p.selection, "budget": p.budget, "tie_break": p.tie_break,
                    # a random selection scores nothing: no warm-up to record
                    "fisher_after_warmup": bool(p.fisher_after_warmup) and scored,
                    "warmup_steps": int(p.warmup_steps) if p.fisher_after_warmup and scored
                    else 0}
        if p.selection != "random":  # the Fisher pass decides the mask too
            f = ctx.method.fisher
            settings.update(fisher_mode=f.mode, fisher_num_samples=f.num_samples,
                            **fisher_loss_settings(f))

        def select():
            scores, sel_info = None, {}
            if p.selection != "random":
                scored = trainable
                if p.fisher_after_warmup:
                    scored, loss = dense_warmup(ctx, trainable, base, combine,
                                                int(p.warmup_steps))
                    sel_info["warmup_final_loss"] = loss
                scores, fisher_info = peft_fisher_scores(ctx, scored, base, combine)
                sel_info.update(fisher_info)
            else:
                scores = jax.tree_util.tree_map(lambda x: np.zeros(np.shape(x), np.float32),
                                                tree)
            chosen = select_entries(scores, budgets, groups, p.selection, key, p.tie_break)
            split = selection_split(chosen, scores if p.selection != "random" else None)
            sel_info["selection_split"] = split
            head_mask = jax.tree_util.tree_map(lambda x: np.ones(np.shape(x), bool),
                                               trainable[HEAD_KEY])
            return {PEFT_KEY: chosen, HEAD_KEY: head_mask}, sel_info

        mask, info = load_or_select_mask(
            ctx, self.name, settings, select, like=trainable,
            keep_info=("selection_split", "fisher_examples"))
        mask[HEAD_KEY] = jax.tree_util.tree_map(lambda x: np.ones(np.shape(x), bool),
                                                trainable[HEAD_KEY])
        split = info.get("selection_split") or selection_split(mask[PEFT_KEY])
        selected = count_true(mask[PEFT_KEY])
        if selected != settings["k"]:
            raise PeftError(f"{self.name}: mask selects {selected} PEFT entries, expected "
                            f"K={settings['k']}")
        trapped = (warn_zero_init_trap(split, self.name) if p.selection == "fisher" else [])
        log.info("%s: selected K=%d of %d PEFT entries at size %d (target %d), head %d "
                 "outside K; split %s", self.name, selected, count_params(tree), search.size,
                 spec.size, count_params(trainable[HEAD_KEY]),
                 {t: r["selected"] for t, r in split.items()})
        return mask, {**{k: v for k, v in settings.items() if k != "peft"},
                      "search_size": search.size, "search_entries": count_params(tree),
                      "selection_split": split, "zero_init_trap": trapped,
                      **{k: v for k, v in info.items() if k != "selection_split"}}

    def _artifacts(self, ctx, spec: PeftSpec, base: PyTree, info: dict[str, Any]
                   ) -> tuple[Artifact, ...]:
        meta = artifact_metadata(ctx, {k: v for k, v in info.items()
                                       if k in ("peft_size", "peft_entries", "selection",
                                                "budget", "search_size")})

        def save_file(kept: PyTree, workdir: str) -> str:
            return save_peft_file(os.path.join(workdir, PEFT_FILE), kept[PEFT_KEY],
                                  kept[HEAD_KEY], spec, base, metadata=meta)

        def save_folder(kept: PyTree, workdir: str) -> str:  # read by the `peft` package
            return export_peft_folder(os.path.join(workdir, PEFT_DIR), kept[PEFT_KEY],
                                      kept[HEAD_KEY], spec, ctx.model_config,
                                      base_model=ctx.base_model_ref,
                                      base_fp=base_fingerprint(base))

        out = (Artifact("peft", save_file, apply_peft_file),)
        # The `peft` package's model reads the Hugging Face head (the pooler): no folder
        # for a classifier that reads another pooling.
        if spec.kind != "adapter" and getattr(ctx.model_config, "pooling", "pooler") == "pooler":
            out += (Artifact("peft_adapter", save_folder),)
        return out


# A finished run's PEFT file, read back without its setup (`fishjax.load`).
register_artifact_reader("peft", lambda path, params, method_cfg: apply_peft_file(path, params))

for _name, (_kind, _fish) in PEFT_METHODS.items():
    register(_name, functools.partial(PeftMethod, _name, _kind, _fish))
