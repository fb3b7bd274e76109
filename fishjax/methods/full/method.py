"""The `full` method: options check and setup (the design note opens the package,
`fishjax/methods/full/__init__.py`)."""

from __future__ import annotations

from fishjax.methods.base import MethodContext, MethodSetup, register_method
from fishjax.methods.common import take_trainable


@register_method("full")
class Full:
    name = "full"
    config_blocks = ()

    def validate(self, method_cfg) -> None:
        del method_cfg  # no options

    def setup(self, ctx: MethodContext) -> MethodSetup:
        return MethodSetup(trainable=ctx.params, frozen={}, combine=take_trainable)
