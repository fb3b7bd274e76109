"""The `config.method.sift` block: its fields, their defaults and what each one means.

SIFT (Song et al., ICML 2024): a fixed sparse set chosen once by |gradient|.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def defaults() -> ml_collections.ConfigDict:
    """A fresh `config.method.sift` with every default (configs/default.py takes it)."""
    block = ml_collections.ConfigDict()
    # Fraction of each eligible tensor trained: k_W = floor(rate * n_W) + 1 entries. The
    # paper used 0.008 on RoBERTa-large for GLUE. The README's GLUE table runs 0.0318 with
    # head_regex ^classifier/ (FISH's 0.5% count; benchmarks/grid/glue.py METHOD_OVERRIDES).
    block.rate = 0.01
    # Tensors that may get sparse entries (regex over /-joined paths). None: the model
    # family's, the attention's query/key/value/output kernels and biases (embeddings,
    # norms and the FFN/MLP stay frozen; fishjax/models/registry.py).
    block.eligible_regex = placeholder(str)
    # Leaves trained densely. None: the family's head with the pooler feeding it (its
    # registry's dense_head_regex; BERT: ^(pooler|classifier)/, RoBERTa: the classifier).
    block.head_regex = placeholder(str)
    # "per_tensor": top k_W of each eligible tensor (the reference); "global": the same
    # total k in one ranking over every eligible entry.
    block.budget = "per_tensor"
    # Selection scores: "first_batch" (|gradient| of the first training batch, dropout
    # off, as the reference), "first_n_batches" (|gradient accumulated over the first
    # `num_batches` batches|) or "fisher" (diagonal Fisher with the method.fisher settings).
    block.grad_source = "first_batch"
    # Batches for grad_source="first_n_batches".
    block.num_batches = 4
    return block
