"""Choosing what to train: per-example Fisher passes, exact-k selection, IRD's rounds,
SIFT's gradient selection, and short trial runs. Pure functions over parameter pytrees
and a `loss_fn(params, batch)`; nothing here reads a config or knows a model class."""
