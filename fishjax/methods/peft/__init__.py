"""PEFT methods and FISH-Tuning: `lora`, `dora`, `adapter` and `lora_fish`, `dora_fish`,
`adapter_fish`.

Design note. FISH-Tuning (Xue, Dong, Tu & He, 2025, "FISH-Tuning: Enhancing PEFT Methods
with Fisher Information") applies FISH Mask selection (Sung et al., 2021) to the
parameters a PEFT method adds: build the module at a larger *search* size, score its
entries by the diagonal Fisher, train only the top K, with K the trainable count of the
vanilla method at the *target* size. No public code exists: every default below is ours.

The PEFT modules (`fishjax.params.peft`): LoRA (Hu et al., 2022), DoRA (Liu et al., 2024),
bottleneck adapters after attention and FFN (Houlsby et al., 2019) or after the FFN only
(Pfeiffer et al., 2021). The frozen tree is the base params without the head; the
trainable tree is `{"peft": PEFT tree, "head": head leaves}` (head: `method.head_regex`,
trained densely by every PEFT method, outside K; peft's `modules_to_save`), and
`combine` = `apply_peft` inside the jitted loss (LoRA/DoRA merge into the kernels; the
encoder reads adapter subtrees itself). Options live in `config.method.peft`.

Our defaults and deliberate deviations:
- LoRA targets: the attention query and value kernels (as the LoRA paper and peft's BERT
  defaults); rank 8, alpha 16. Scaling s = alpha / r_target at every size: a search-size
  module (rank 2r) keeps the target's per-entry scale (the PEFT export writes
  lora_alpha = s * r so PEFT's alpha / r is the same s).
- No LoRA dropout: it acts on the layer input, which a weight transform cannot express
  (the model's own dropout stays on; peft's default lora_dropout is 0 too).
- A and adapter down-kernels ~ U(+-1/sqrt(in)) (peft's kaiming-uniform), B, up-kernels
  and adapter biases 0; DoRA magnitude = ||W0||_c; so step-0 outputs are unchanged.
- Adapters: placed in each adapter slot the model offers (`fishjax.models.architectures`:
  the AddNorm blocks, after dense + dropout, before the residual add and LayerNorm:
  Houlsby's position; we use it for Pfeiffer as well, without Pfeiffer's extra
  LayerNorm/residual arrangement); activation = the encoder's `hidden_act`;
  bottleneck = hidden // reduction_factor (16) unless `adapter_size` is set; LayerNorms
  stay frozen (Houlsby also trained them).
- FISH inside: search size = `search_factor` (2) x the target size; K = `entry_count` at
  the target size; Fisher scores of the PEFT entries (loss as a function of the PEFT
  tree with the base frozen, `fishjax.selection.fisher.fisher_scores`, `method.fisher`
  settings); exact top-K (`fishjax.selection.topk.select_entries`), `budget="global"` (one
  ranking over every PEFT entry) or `"per_type"` (each tensor type: lora_A, lora_B,
  lora_magnitude, down/up kernel/bias, gets its count at the target size). Never a score
  threshold. Training is dense masked (`fishjax.params.masked.masked_updates`): unselected
  entries keep their init values (frozen random A entries are part of the function, like
  W0).
- The zero-init trap: with B = 0 every gradient w.r.t. A is exactly 0 (likewise adapter
  down-projections with up = 0), so Fisher at init ranks only B (and the magnitudes), and
  at rank 2r with square kernels K = |B| exactly: "train B, freeze A". The selection split
  per tensor type (and how many of each were picked at score 0) is logged and saved; a
  type left with no positively scored entry triggers a loud warning. The default is
  therefore `fisher_after_warmup=True` (a deviation from the paper, which scores at init;
  `False` restores that): `warmup_steps` dense steps of the search-size tree + head, Adam at
  train.learning_rate, dropout off, on the trainer's batches epoch after epoch; score there;
  then training restarts from the initial tree, so the warm-up only informs the
  selection). Other remedies: `budget="per_type"`, and `tie_break="random"` (default:
  ties, i.e. the exact zeros, broken by a seeded permutation; `"position"`: first in tree
  order, as FISH Mask).
- Baselines (`selection`): "fisher", "random" (K uniformly at random at the search size,
  seeded) and "reversed" (the K lowest Fisher scores), all at the same K and budget rule.
- Artefacts: `<workdir>/peft.safetensors` (PEFT tree + head + spec,
  `fishjax.methods.peft.peft_file`) for every kind, and for LoRA/DoRA a PEFT adapter folder
  `<workdir>/peft_adapter` (head in `modules_to_save`). LoRA/DoRA runs export merged HF
  folders as usual (the merged model is the base architecture: no inference cost); adapter
  runs cannot be merged and skip it.
  The selection mask is `<workdir>/mask.safetensors` (over the trainable tree), reused on
  resume like FISH's.

The six methods are one class, `PeftMethod(name, kind, fish)`, registered from the table
`PEFT_METHODS`.
"""

from fishjax.methods.peft import method  # noqa: F401  (registers the method)
