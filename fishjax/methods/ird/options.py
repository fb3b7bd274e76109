"""The `config.method.ird` block: its fields, their defaults and what each one means.

IRD (method `ird`; our reconstruction of Dong et al., 2024, see fishjax/selection/ird.py):
rounds that keep the samples and the parameter entries with more Fisher information. Its
Fisher passes use method.fisher.mode, batch_size and chunk_size (not num_samples).
"""

from __future__ import annotations

import ml_collections


def defaults() -> ml_collections.ConfigDict:
    """A fresh `config.method.ird` with every default (configs/default.py takes it)."""
    block = ml_collections.ConfigDict()
    # N0: the candidate pool, a seeded (config.seed) random subset of the training set
    # (all of it when smaller).
    block.pool_size = 1024
    # a_s in (0, 1]: each round keeps the ceil(a_s * |S|) samples with the most Fisher mass.
    block.sample_shrink = 0.5
    # a_p in (0, 1]: each round keeps the max(k, ceil(a_p * |P|)) entries with the most Fisher
    # information over the kept samples (k: the mask size from keep_ratio).
    block.param_shrink = 0.5
    # N_min: the sample set never shrinks below this many examples.
    block.min_samples = 32
    # T: at most this many rounds (it stops earlier once |P| = k and |S| = N_min).
    block.max_rounds = 8
    # Samples are ranked by their Fisher mass over `range` (the current parameter range)
    # or `all` (every eligible entry; a variant, computed once, cheaper).
    block.sample_ranking = "range"
    # Explicit sizes instead of geometric shrinking: ((samples, params), ...), one pair per
    # round, non-increasing; an int is a count, a float in (0, 1] a fraction of N0 (samples)
    # or of the eligible entries (params). Its length replaces max_rounds. () = geometric.
    block.schedule = ()
    # Final pair: `last` (the last round's candidate), or `best_dev`: each distinct
    # candidate mask trains for best_dev_steps from the pretrained params (masked AdamW,
    # train.learning_rate with warmup/decay over those steps, dropout off, the same seeded
    # batches for every candidate) and the best dev main metric wins. best_dev selects on
    # the dev set, so the run's reported dev score is optimistic: label it so.
    block.final = "last"
    # best_dev only: training steps per candidate.
    block.best_dev_steps = 50
    return block
