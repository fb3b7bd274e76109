"""`random_mask`: k entries chosen uniformly at random (seeded), FISH's budget and code path.

The baseline that says whether FISH's ranking matters: the same eligible entries, budget
(`keep_ratio`, head policy), head and training as `fish`, only the entries are drawn at
random with the method's own PRNG key (same seed, same mask).
"""

from __future__ import annotations

from fishjax.methods.base import register_method
from fishjax.methods.common import MaskMethod
from fishjax.selection.topk import random_mask


@register_method("random_mask")
class RandomMask(MaskMethod):
    name = "random_mask"

    def select(self, ctx, eligible, k):
        return random_mask(ctx.params, k, ctx.rng, eligible), {}
