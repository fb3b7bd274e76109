"""The `fish` method: options check and setup (the design note opens the package,
`fishjax/methods/fish/__init__.py`)."""

from __future__ import annotations

from fishjax.methods.base import register_method
from fishjax.methods.common import (
    MaskMethod,
    fisher_loss_settings,
    fisher_scores_from_config,
    validate_fisher,
)
from fishjax.selection.topk import top_k_mask


@register_method("fish")
class Fish(MaskMethod):
    name = "fish"
    config_blocks = ("sparse", "fisher")

    def validate(self, m):
        super().validate(m)
        validate_fisher(m.fisher)

    def selection_settings(self, ctx):
        f = ctx.method.fisher
        # the batch size sets which examples the first num_samples are (bucketed batches)
        return {"fisher_mode": f.mode, "fisher_num_samples": f.num_samples,
                "fisher_batch_size": f.batch_size, **fisher_loss_settings(f)}

    def select(self, ctx, eligible, k):
        res = fisher_scores_from_config(ctx, ctx.params, eligible)
        return top_k_mask(res.scores, k, eligible), {
            "fisher_mode": ctx.method.fisher.mode, "fisher_examples": res.num_examples,
            "fisher_seconds": res.seconds, "fisher_backward_passes": res.backward_passes}
