"""The `xpeft` method: options check and setup (the design note opens the package,
`fishjax/methods/xpeft/__init__.py`)."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import jax
import ml_collections
import optax

from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import ConfigError, PeftError
from fishjax.core.tree import PyTree, count_params, merge_trees, split_tree
from fishjax.methods.base import (
    Artifact,
    MethodContext,
    MethodSetup,
    register_artifact_reader,
    register_method,
)
from fishjax.methods.common import (
    artifact_metadata,
    check_regex,
    is_positive_int,
    require,
    split_head,
)
from fishjax.methods.xpeft.bank_file import Bank, load_bank, make_random_bank, rebuild_random_bank
from fishjax.methods.xpeft.profile_file import PROFILE_FILE, load_profile, save_profile
from fishjax.models import ADAPTER_SITES, slot_width
from fishjax.params.peft import PeftSpec, find_targets
from fishjax.params.xpeft import (
    MIXINGS,
    VARIANTS,
    bank_slots,
    check_bank,
    default_k,
    init_scores,
    mix,
    mixing_weights,
    profile_bytes,
    profile_from_scores,
)

log = logging.getLogger("fishjax")

SCORES_KEY, HEAD_KEY = "scores", "head"
HARD_PROFILE_FILE = "profile_hard.safetensors"


def validate_xpeft(x: ml_collections.ConfigDict) -> None:
    """config.method.xpeft."""
    p = "config.method.xpeft"
    require(isinstance(x.pool, str) and bool(x.pool), f"{p}.pool must be 'random' or a bank "
            f"file, got {x.pool!r}")
    if x.pool != "random":
        require(os.path.isfile(x.pool), f"{p}.pool={x.pool!r}: no such bank file")
    for name in ("pool_size", "reduction_factor"):
        require(is_positive_int(x[name]), f"{p}.{name} must be a positive int, got {x[name]!r}")
    for name in ("k", "bottleneck"):
        require(x[name] is None or is_positive_int(x[name]),
                f"{p}.{name} must be None or a positive int, got {x[name]!r}")
    require(isinstance(x.pool_seed, int), f"{p}.pool_seed must be an int, got {x.pool_seed!r}")
    require(x.variant in VARIANTS, f"{p}.variant must be one of {VARIANTS}, got {x.variant!r}")
    require(x.adapter_variant in ADAPTER_SITES, f"{p}.adapter_variant must be one of "
            f"{tuple(ADAPTER_SITES)}, got {x.adapter_variant!r}")
    if x.pool == "random" and x.k is not None:
        require(x.k <= x.pool_size, f"{p}.k={x.k} exceeds pool_size={x.pool_size}")
    require(x.score_learning_rate is None or (isinstance(x.score_learning_rate, int | float)
                                              and math.isfinite(x.score_learning_rate)
                                              and x.score_learning_rate > 0),
            f"{p}.score_learning_rate must be None or > 0, got {x.score_learning_rate!r}")
    require(isinstance(x.score_init_scale, int | float) and x.score_init_scale >= 0,
            f"{p}.score_init_scale must be >= 0, got {x.score_init_scale!r}")
    require(isinstance(x.random_up_scale, int | float) and x.random_up_scale > 0,
            f"{p}.random_up_scale must be > 0, got {x.random_up_scale!r}")
    require(isinstance(x.harden_at_end, bool), f"{p}.harden_at_end must be True or False")
    mixing = x.get("mixing", "mean")
    require(mixing in MIXINGS, f"{p}.mixing must be one of {MIXINGS}, got {mixing!r}")
    require(mixing == "mean" or (x.variant != "soft" and not x.harden_at_end),
            f"{p}.mixing='sum' needs variant 'hard' or 'sigmoid' (a soft profile's softmax "
            "weights are a mean)")
    require(not x.harden_at_end or x.variant == "soft",
            f"{p}.harden_at_end needs variant='soft' (it hardens the learned soft weights)")


def pool_bank(ctx: MethodContext, base: PyTree) -> Bank:
    """The bank of `config.method.xpeft.pool`: a seeded random pool, or a bank file (which
    must come from this base)."""
    x = ctx.method.xpeft
    base_fp = base_fingerprint(base)
    if x.pool != "random":
        bank = load_bank(x.pool)
        if bank.metadata["base_fingerprint"] != base_fp:
            raise PeftError(f"config.method.xpeft.pool={x.pool!r} was trained on base model "
                            f"{bank.metadata.get('base_model', '?')!r}, not on these params")
        check_bank(bank.adapters, base, bank.spec)
        return bank
    sites = ctx.family.adapter_sites
    if x.adapter_variant not in sites:
        raise PeftError(f"the {ctx.family.name} model family has no {x.adapter_variant!r} "
                        "adapter sites: X-PEFT's adapter bank is built for the encoders")
    slots = find_targets(base, "adapter", sites[x.adapter_variant])
    width = slot_width(base, tuple(slots[0].split("/")))
    spec = PeftSpec("adapter", x.bottleneck or max(1, width // x.reduction_factor), slots)
    return make_random_bank(base, spec, x.pool_seed, x.pool_size, float(x.random_up_scale),
                            base_fp=base_fp, base_model=ctx.model_name)


def apply_profile(path: str, base: PyTree, bank: Bank) -> PyTree:
    """Dense params of a profile file: `base` (headless) with the bank's adapters mixed by
    the profile's weights, and the profile's head; refused on another bank or base."""
    profile, _ = load_profile(path, bank.fingerprint, base_fingerprint(base))
    return merge_trees(base, mix(bank.adapters, profile.weights()), profile.head)


def read_profile(path: str, params: PyTree, method_cfg: ml_collections.ConfigDict) -> PyTree:
    """A finished run's profile without its setup (`fishjax.load`): the bank is the run's
    bank file, or its random pool drawn again from the seed the profile records."""
    _, base = split_tree(params, method_cfg.head_regex)
    pool = method_cfg.xpeft.pool
    bank = rebuild_random_bank(load_profile(path)[1], base) if pool == "random" \
        else load_bank(pool)
    return apply_profile(path, base, bank)


# The hardened profile (when the run made one) is what X-PEFT deploys: loaded first.
register_artifact_reader("profile", read_profile)
register_artifact_reader("profile_hard", read_profile, rank=1)


def xpeft_combine(variant: str, k: int | None, mixing: str = "mean"):
    """`combine(trainable, frozen)`: the base, the bank mixed by the scores, the head."""
    def combine(trainable: PyTree, frozen: PyTree) -> PyTree:
        weights = mixing_weights(trainable[SCORES_KEY], variant, k, mixing)
        return merge_trees(frozen["base"], mix(frozen["bank"], weights), trainable[HEAD_KEY])
    return combine


def _scale_scores(ratio: float):
    """Scales the score updates by `ratio` (their learning rate over the run's)."""
    def wrap(tx: optax.GradientTransformation) -> optax.GradientTransformation:
        if ratio == 1.0:
            return tx
        mask = lambda tree: {SCORES_KEY: True,  # noqa: E731
                             HEAD_KEY: jax.tree_util.tree_map(lambda _: False, tree[HEAD_KEY])}
        return optax.chain(tx, optax.masked(optax.scale(ratio), mask))
    return wrap


@register_method("xpeft")
class XPeft:
    name = "xpeft"
    config_blocks = ("xpeft",)

    def validate(self, m: ml_collections.ConfigDict) -> None:
        if "xpeft" not in m:
            raise ConfigError("config.method.xpeft is missing (see configs/default.py)")
        check_regex(m, "head_regex", "config.method")
        validate_xpeft(m.xpeft)

    def setup(self, ctx: MethodContext) -> MethodSetup:
        m, x = ctx.method, ctx.method.xpeft
        head, base = split_head(ctx.params, ctx.method, required=ctx.family.fresh_head)
        bank = pool_bank(ctx, base)
        n, slots = bank.size, bank_slots(bank.adapters)
        mixing = x.get("mixing", "mean")
        k = None
        if x.variant == "hard" or x.harden_at_end:
            k = default_k(n) if x.k is None else int(x.k)
            if k > n:
                raise ConfigError(f"config.method.xpeft.k={k} exceeds the bank's {n} adapters")
        scores = init_scores(len(slots), n, ctx.rng, float(x.score_init_scale))
        trainable = {SCORES_KEY: scores, HEAD_KEY: head}
        frozen = {"base": base, "bank": bank.adapters}
        ratio = (x.score_learning_rate or ctx.learning_rate) / ctx.learning_rate
        head_entries = count_params(head)
        base_fp = base_fingerprint(base)
        info: dict[str, Any] = {
            "xpeft_variant": x.variant, "xpeft_mixing": mixing,
            "pool": x.pool if x.pool != "random" else "random",
            "pool_size": n, "k": k, "slots": len(slots), "bottleneck": bank.spec.size,
            "score_entries": int(scores.size), "head_entries": head_entries,
            "trainable_entries": int(scores.size) + head_entries,
            "profile_bytes": profile_bytes("soft" if x.variant == "soft" and not
                                           x.harden_at_end else "hard", scores.shape),
            "head_bytes": 4 * head_entries, "bank_entries": count_params(bank.adapters),
            "bank_fingerprint": bank.fingerprint}
        meta = artifact_metadata(ctx, {"pool": bank.metadata["sources"], "pool_size": n,
                                       "bottleneck": bank.spec.size,
                                       "adapter_variant": x.adapter_variant})

        def saver(file: str, variant: str):
            def save(kept: PyTree, workdir: str) -> str:
                return save_profile(
                    os.path.join(workdir, file),
                    profile_from_scores(kept[SCORES_KEY], kept[HEAD_KEY], variant, k,
                                        mixing),
                    slots=slots, bank_fp=bank.fingerprint, base_fp=base_fp, metadata=meta)
            return save

        def load(path: str, params: PyTree) -> PyTree:  # the profile on this run's bank
            return apply_profile(path, split_tree(params, m.head_regex)[1], bank)

        artifacts = (Artifact("profile", saver(PROFILE_FILE, x.variant), load),)
        if x.harden_at_end:
            artifacts += (Artifact("profile_hard", saver(HARD_PROFILE_FILE, "hard"), load),)

        log.info("xpeft: %s over a bank of %d adapters (%s), %d slots, K=%s: %d score "
                 "entries (%d bytes per profile) + head %d", x.variant, n,
                 info["pool"], len(slots), k, scores.size, info["profile_bytes"],
                 head_entries)
        hard = xpeft_combine("hard", k)
        return MethodSetup(
            trainable=trainable, frozen=frozen, combine=xpeft_combine(x.variant, k, mixing),
            wrap_optimizer=_scale_scores(ratio), no_decay=rf"^{SCORES_KEY}$",
            artifacts=artifacts, exportable=False, info=info,
            deployed=(lambda kept: hard(kept, frozen)) if x.harden_at_end else None)
