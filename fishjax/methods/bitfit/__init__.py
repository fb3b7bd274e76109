"""`bitfit`: every bias plus the head (BitFit, Ben Zaken et al., 2022), on FISH's code path.

Design note. Its size is fixed by the model (every leaf matching `method.bitfit_regex` among
the eligible ones), not by `keep_ratio`; training is `fish`'s (masked AdamW or, with
`sparse_storage`, a sparse increment). As in the paper, the task head trains with the
biases. What differs is only the shared training recipe: the run's AdamW schedule and
`train.learning_rate`, chosen as for every other method here.
"""

from fishjax.methods.bitfit import method  # noqa: F401  (registers the method)
