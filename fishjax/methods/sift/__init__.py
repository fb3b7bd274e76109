"""`sift`: Sparse Increment Fine-Tuning, trained as a sparse increment W = W0 + scatter(I, delta).

Design note. SIFT (Song, Li, Zhang, Zhao & Du, "Sparse is Enough in Fine-tuning Pre-trained
Large Language Models", ICML 2024; reference code song-wx/SIFT) observes that the gradient
of a pretrained model is concentrated in few components, and trains a fixed sparse set of
weight entries chosen once, before training:

- Selection: a dense gradient of the task loss on the first training batch; in each
  eligible tensor W the k_W = floor(rate * n_W) + 1 entries of largest |gradient| (a
  per-tensor budget). On GLUE the eligible tensors are the attention query/key/value/output
  weights and biases; embeddings, LayerNorm and the FFN stay frozen, and the head (BERT:
  pooler + classifier) is trained densely. Their GLUE rate was 0.008 on RoBERTa-large.
- Storage: per tensor, int32 indices and a value vector (the increment), so only the
  values and the head get gradients and optimizer state.

Here the increment is a `fishjax.params.sparse.SparseDelta` added inside the loss
(`fishjax.params.sparse.apply_delta`: a scatter-add whose gradient is a gather), so `jax.grad`
returns length-k vectors and AdamW keeps state for k + head entries only. Options
(`config.method.sift`): `rate`, `eligible_regex`, `head_regex`, `budget` ("per_tensor", as
the reference, or "global": one ranking over all eligible entries with the same total k),
`grad_source` ("first_batch", as the reference; "first_n_batches": the gradient
accumulated over the first `num_batches` batches; "fisher": the diagonal Fisher of
`fishjax.selection.fisher.fisher_scores` with the `method.fisher` settings, as FISH Mask).
The selection itself is `fishjax.selection.sift`.

Deliberate deviations from the reference, which updates through PyTorch backward hooks:
- No one-step lag, and the last update is applied: the step computes the gradient of the
  values and AdamW updates them in the same step; the next forward pass uses them.
- The selection batch is not wasted: the selection gradient is computed with dropout off
  on the first training batch(es) (the same batches, in the same order, as the trainer's
  epoch 0), and training then starts normally at step 0, so those batches are trained on
  like any other (the reference throws the selection step's update away).
- Weight decay is a choice (`config.method.sparse.weight_decay`): "off" (default) is the
  reference's effective behaviour (its AdamW never decays the increment); "weights" decays
  the effective weights W0[I] + delta, exactly as dense masked AdamW would.
- Ties are broken deterministically: within a tensor the entry first in row-major order
  wins (stable sort of |gradient|). This matters for the key-projection bias, whose
  gradient is zero up to rounding (softmax ignores a per-query shift): its selected
  entries are a deterministic function of the gradient that XLA computes, i.e. the same
  for the same program on the same backend, and the lowest indices when it is exactly 0.

The selected entries are saved as `<workdir>/mask.safetensors` (reused on resume, or via
`config.method.mask_file`), and at the end of a finished run the increment of the best
evaluation (+ the dense head) as `<workdir>/delta.safetensors`
(`fishjax.artifacts.delta_file`).
"""

from fishjax.methods.sift import method  # noqa: F401  (registers the method)
