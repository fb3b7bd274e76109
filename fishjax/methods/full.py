"""`full`: dense fine-tuning of every parameter, the baseline every method is compared with."""

from __future__ import annotations

from fishjax.methods.base import MethodContext, MethodSetup, register_method


def take_trainable(trainable, frozen):
    """`combine` for methods that train the dense params themselves."""
    del frozen
    return trainable


@register_method("full")
class Full:
    name = "full"

    def setup(self, ctx: MethodContext) -> MethodSetup:
        return MethodSetup(trainable=ctx.params, frozen={}, combine=take_trainable)
