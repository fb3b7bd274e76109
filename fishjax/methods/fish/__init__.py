"""`fish`: FISH Mask, a global top-k of the diagonal Fisher information, trained masked.

Design note. FISH Mask (Sung, Nair & Raffel, "Training Neural Networks with Fixed Sparse
Masks", NeurIPS 2021; reference varunnair18/FISH): score every entry by the diagonal
Fisher over `fisher.num_samples` training examples (seeded shuffle, dropout off), keep one
global top-k over every eligible entry (embeddings, biases, LayerNorm and the pooler all
compete; no per-layer quota), train the classifier head fully, and update only the
selected entries with AdamW. Budget: `keep_ratio` of all parameters; as in the reference
the head counts against it (`head_policy="in_budget"`), or, as an option of ours, it is
trained on top of it (`"outside"`).

Deliberate deviations from the reference:
- The mask is applied inside the optimizer (`fishjax.params.masked.masked_updates`) to
  gradients *and* updates, so AdamW's decoupled weight decay cannot move unselected
  entries (the reference masks gradients only, and its weight decay still shrinks frozen
  weights).
- Ties in the scores are broken by position (stable sort), not arbitrarily.
- Fisher scores come from vmapped/scanned per-example gradients
  (`fishjax.selection.fisher`), not a Python loop over examples.

Training is dense masked training (params and gradients stay dense, optimizer state only
for leaves with a selected entry), or with `config.method.sparse_storage=True` a sparse
increment (`fishjax.params.sparse`: gradients and AdamW state for the k entries + the head
only, and `<workdir>/delta.safetensors` at the end); the dense masked path stays the
reference the sparse one is tested against. The mask is `<workdir>/mask.safetensors`,
reused when the run resumes (`fishjax.methods.common.MaskMethod`).
"""

from fishjax.methods.fish import method  # noqa: F401  (registers the method)
