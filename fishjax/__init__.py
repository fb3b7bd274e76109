"""fishjax: data-aware sparse fine-tuning of pretrained transformers in JAX/Flax.

The pure functions work on any parameter pytree and a `loss_fn(params, batch) -> scalar`
(no model classes needed):

  >>> import fishjax
  >>> scores = fishjax.fisher_scores(loss_fn, params, batches).scores  # per-example Fisher
  >>> mask = fishjax.top_k_mask(scores, k=fishjax.budget_k(n_params, 0.005))
  >>> tx = fishjax.masked_updates(optax.adamw(1e-3), mask)             # train only the mask

Also here: sparse increments (`SparseDelta`, `sparse_from_mask`, `apply_delta`), IRD
(`run_ird`, `IRDOptions`), PEFT trees (`PeftSpec`, `find_targets`, `init_peft`,
`apply_peft`), the task loss of a Flax module under an objective (`make_loss_fn`,
`fishjax.objectives`), the trainer
(`train_and_evaluate`) and a finished run's model (`load(workdir).predict(texts)`).
Everything else lives in the subpackages (README "Layout").
"""

from fishjax.core.errors import FishjaxError
from fishjax.core.version import __version__
from fishjax.finished_run import FinishedRun, load
from fishjax.objectives import make_loss_fn
from fishjax.params.masked import masked_updates
from fishjax.params.peft import PeftSpec, apply_peft, find_targets, init_peft
from fishjax.params.sparse import SparseDelta, apply_delta
from fishjax.params.sparse import from_mask as sparse_from_mask
from fishjax.selection.budgets import budget_k
from fishjax.selection.fisher import fisher_pass, fisher_scores
from fishjax.selection.ird import IRDOptions, run_ird
from fishjax.selection.topk import random_mask, top_k_mask
from fishjax.train.trainer import train_and_evaluate

__all__ = [
    "FinishedRun",
    "FishjaxError",
    "IRDOptions",
    "PeftSpec",
    "SparseDelta",
    "__version__",
    "apply_delta",
    "apply_peft",
    "budget_k",
    "find_targets",
    "fisher_pass",
    "fisher_scores",
    "init_peft",
    "load",
    "make_loss_fn",
    "masked_updates",
    "random_mask",
    "run_ird",
    "sparse_from_mask",
    "top_k_mask",
    "train_and_evaluate",
]
