"""`ird`: a FISH mask from an iteratively refined (sample set, parameter set) pair.

Design note. IRD (Dong, Xue, Zheng & He, 2024, "Data-oriented Dynamic Fine-tuning
Parameter Selection Strategy for FISH Mask based Efficient Fine-tuning") replaces FISH's
random, equally weighted Fisher samples by rounds that keep the samples and the
parameters with larger Fisher information. No public code exists and the paper's
algorithm box was not available: the selection is OUR RECONSTRUCTION, documented with
every choice and its exact cost in `fishjax/selection/ird.py` (`run_ird`).

Everything else is the `fish` method (`fishjax.methods.common.MaskMethod`): the same
eligible entries (the head is never ranked and is trained fully), the same budget
(`keep_ratio`, `head_policy`, `budget_k`), the mask saved to `<workdir>/mask.safetensors`
and reloaded on resume (IRD does not run again then), masked AdamW training.

Options: `config.method.ird` (pool, shrink factors, floor, rounds, ranking variant,
schedule, final rule); the Fisher passes reuse `config.method.fisher.mode`,
`batch_size` and `chunk_size` (`fisher.num_samples` is not used: the pool size is
`ird.pool_size`). The pool is drawn with `config.seed`. Deviations from FISH's flow: the
samples come from `ctx.train_data` by index (a seeded pool, bucketed batches of exactly
the kept ids), not from the first examples of a shuffled epoch.

`final="best_dev"` (explicitly labelled; default `"last"`): every distinct candidate mask
(plus the head) trains for `ird.best_dev_steps` steps from the pretrained params
(`fishjax.selection.short_run`: masked AdamW at `train.learning_rate` with the run's
warmup/decay shape over those steps, dropout off, the trainer's batches epoch after epoch,
the same for each candidate) and is scored by the dev set's main metric; the best wins
(ties: the earliest). This selects on dev: the dev score reported for the run is
optimistically biased, and the summary says so (`ird_final`).

The per-round trace (sizes, Fisher mass kept, backward passes, kept labels and lengths,
largest-mass examples, overlap with FISH's mask on the same pool) is written atomically
to `<workdir>/ird_trace.json`.
"""

from fishjax.methods.ird import method  # noqa: F401  (registers the method)
