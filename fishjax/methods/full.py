"""`full`: dense fine-tuning of every parameter, the baseline every method is compared with."""

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
