"""`head_only`: trains only the task head (`method.head_regex`), the rest frozen.

The floor every sparse method must beat (a linear probe when the head is the classifier).
The trainable tree is the head alone, so gradients and optimizer state exist for it only;
the encoder's backward pass is not computed.
"""

from __future__ import annotations

import ml_collections

from fishjax.core.errors import ConfigError
from fishjax.core.tree import flatten_paths, merge_trees, split_tree
from fishjax.methods.base import MethodContext, MethodSetup, register_method
from fishjax.methods.common import check_regex


@register_method("head_only")
class HeadOnly:
    name = "head_only"
    config_blocks = ()

    def validate(self, m: ml_collections.ConfigDict) -> None:
        check_regex(m, "head_regex", "config.method")

    def setup(self, ctx: MethodContext) -> MethodSetup:
        head, base = split_tree(ctx.params, ctx.method.head_regex)
        if not flatten_paths(head):
            raise ConfigError(f"config.method.head_regex={ctx.method.head_regex!r} matches no "
                              "parameter")
        return MethodSetup(trainable=head, frozen=base,
                           combine=lambda trainable, frozen: merge_trees(frozen, trainable))
