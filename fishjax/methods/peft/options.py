"""The `config.method.peft` block: its fields, their defaults and what each one means.

PEFT methods and FISH-Tuning (fishjax/methods/peft/): lora, dora, adapter (vanilla, at the
target size) and lora_fish, dora_fish, adapter_fish (built at search_factor x the target
size, the top K Fisher-scored entries trained, K = the vanilla count). The head
(method.head_regex) is trained densely, outside K.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def defaults() -> ml_collections.ConfigDict:
    """A fresh `config.method.peft` with every default (configs/default.py takes it)."""
    block = ml_collections.ConfigDict()
    # LoRA/DoRA: the kernels that get a low-rank update (regex over /-joined leaf paths).
    # None: the model family's (encoders: attention query and value; decoders: q_proj and
    # v_proj; fishjax/models/registry.py).
    block.lora_targets = placeholder(str)
    # LoRA/DoRA target rank r and alpha: the update is (alpha / r) * A @ B (this scale is
    # kept at the search rank).
    block.rank = 8
    block.alpha = 16.0
    # Adapters: "houlsby" (after attention and after the FFN) or "pfeiffer" (after the FFN).
    block.adapter_variant = "houlsby"
    # Adapter bottleneck: adapter_size if set, else hidden_size // adapter_reduction_factor.
    block.adapter_reduction_factor = 16
    block.adapter_size = placeholder(int)
    # *_fish: search size = search_factor x target size (rank 2r, bottleneck 2b).
    block.search_factor = 2
    # *_fish: "fisher" (top-K Fisher), "random" (K at random, seeded) or "reversed" (the
    # K lowest Fisher scores): the latter two are baselines.
    block.selection = "fisher"
    # *_fish: "global" (one ranking over every PEFT entry) or "per_type" (each tensor type,
    # e.g. lora_A / lora_B, gets its count at the target size).
    block.budget = "global"
    # *_fish: ties (e.g. the exact zeros of lora_A at init) broken "random"ly (seeded) or
    # by "position" (first in tree order, as FISH Mask).
    block.tie_break = "random"
    # *_fish: score after warmup_steps dense steps of the search-size module + head (then
    # train from the initial values): escapes the zero-init trap (B = 0 gives A zero Fisher,
    # so scoring at init trains B only). False scores at init, as the FISH-Tuning paper.
    block.fisher_after_warmup = True
    block.warmup_steps = 50
    # Vanilla lora/dora/adapter: start from this peft.safetensors (its tree and head; same
    # base, spec and labels) instead of a fresh init, e.g. a meta-initialisation.
    block.init_from = placeholder(str)
    return block
