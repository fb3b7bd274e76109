"""The `config.method.xpeft` block: its fields, their defaults and what each one means.

X-PEFT (method `xpeft`, fishjax/methods/xpeft/; every default ours): per-profile masks over
a frozen bank of N adapters; only the scores and the head (method.head_regex) train.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def defaults() -> ml_collections.ConfigDict:
    """A fresh `config.method.xpeft` with every default (configs/default.py takes it)."""
    block = ml_collections.ConfigDict()
    # "random" (a seeded pool of untrained adapters) or the path of a bank file of trained
    # adapters (python -m fishjax.methods.xpeft.bank_file --out BANK runs/*/peft.safetensors).
    block.pool = "random"
    # Random pool: N, its seed (shared by every profile, not the run's seed), the
    # bottleneck (None: hidden // reduction_factor), and a factor on the up-projections'
    # U(+-1/sqrt(bottleneck)) draw (both projections are non-zero).
    block.pool_size = 32
    block.pool_seed = 0
    block.bottleneck = placeholder(int)
    block.reduction_factor = 16
    block.random_up_scale = 1.0
    # Where the pool's adapters sit: "pfeiffer" (after each FFN) or "houlsby".
    block.adapter_variant = "pfeiffer"
    # "soft" (softmax mixing), "hard" (the mean of the top K, straight-through) or
    # "sigmoid" (the mean of the adapters with a positive score, straight-through).
    block.variant = "hard"
    # Hard: adapters selected per layer and side (None: ceil(N / 2)).
    block.k = placeholder(int)
    # Hard and sigmoid: the selected adapters' "mean" (weights 1/K) or "sum" (weights 1);
    # soft profiles mix by their softmax (a mean). fishjax/params/xpeft.py has the why.
    block.mixing = "mean"
    # Scores' peak learning rate (None: train.learning_rate; same schedule shape, no weight
    # decay) and their init U(+-score_init_scale), seeded by the run's seed.
    block.score_learning_rate = placeholder(float)
    block.score_init_scale = 0.01
    # Soft only: ship the top K of the learned weights as a hard profile too, and report
    # that hard profile's dev score (results["deployed_eval"]).
    block.harden_at_end = False
    return block
