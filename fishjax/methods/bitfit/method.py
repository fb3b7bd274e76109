"""The `bitfit` method: options check and setup (the design note opens the package,
`fishjax/methods/bitfit/__init__.py`)."""

from __future__ import annotations

import jax
import numpy as np

from fishjax.methods.base import register_method
from fishjax.methods.common import MaskMethod
from fishjax.params.masks import regex_mask


@register_method("bitfit")
class BitFit(MaskMethod):
    name = "bitfit"

    def budget(self, ctx, head_entries):
        return 0  # fixed by the model: every bias

    def selection_settings(self, ctx):
        return {"bitfit_regex": ctx.method.bitfit_regex}

    def select(self, ctx, eligible, k):
        del k
        biases = regex_mask(ctx.params, ctx.method.bitfit_regex)
        return jax.tree_util.tree_map(
            lambda b, e: np.logical_and(b, e), biases,
            jax.tree_util.tree_map(lambda e, p: np.full(np.shape(p), e), eligible, ctx.params),
        ), {}
