"""The `random_mask` method: options check and setup (the design note opens the package,
`fishjax/methods/random_mask/__init__.py`)."""

from __future__ import annotations

from fishjax.methods.base import register_method
from fishjax.methods.common import MaskMethod
from fishjax.selection.topk import random_mask


@register_method("random_mask")
class RandomMask(MaskMethod):
    name = "random_mask"

    def select(self, ctx, eligible, k):
        return random_mask(ctx.params, k, ctx.rng, eligible), {}
