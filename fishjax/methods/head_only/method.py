"""The `head_only` method: options check and setup (the design note opens the package,
`fishjax/methods/head_only/__init__.py`)."""

from __future__ import annotations

import ml_collections

from fishjax.core.tree import merge_trees
from fishjax.methods.base import MethodContext, MethodSetup, register_method
from fishjax.methods.common import check_regex, split_head


@register_method("head_only")
class HeadOnly:
    name = "head_only"
    config_blocks = ()

    def validate(self, m: ml_collections.ConfigDict) -> None:
        check_regex(m, "head_regex", "config.method")

    def setup(self, ctx: MethodContext) -> MethodSetup:
        head, base = split_head(ctx.params, ctx.method)
        return MethodSetup(trainable=head, frozen=base,
                           combine=lambda trainable, frozen: merge_trees(frozen, trainable))
