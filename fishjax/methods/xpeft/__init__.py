"""`xpeft`: per-profile masks over a frozen bank of adapters (X-PEFT).

Design note. X-PEFT (Kwak & Kim, 2024, "X-PEFT: eXtremely Parameter-Efficient Fine-Tuning
for Extreme Multi-Profile Scenarios", arXiv 2401.16137) keeps a fixed pool of N adapters
frozen beside the frozen base model and, for each new profile (a user or a task), trains
only tiny mask tensors that choose which pool adapters to use; the pool may be adapters
trained before or random, untrained ones. No public code exists and only the abstract was
available to us: EVERY DEFAULT BELOW IS OURS.

- Pool: N bottleneck adapters at the Pfeiffer slot (after the FFN of every layer; the
  model's `adapter_sites["pfeiffer"]`, option `xpeft.adapter_variant`), bottleneck
  hidden // `xpeft.reduction_factor` (16), one stacked tree with a leading axis N
  (`fishjax.params.xpeft`), shared by every profile, frozen, never copied per profile.
  `pool="random"`: both projections drawn U(+-1/sqrt(fan_in)) from `xpeft.pool_seed`
  (not the run's seed: every profile of a task family shares the pool), biases 0, so no
  random adapter is the identity (a zero up-projection would make it one). A path: a bank
  file of trained adapters (`fishjax.methods.xpeft.bank_file`, stacked from `adapter` runs),
  which must come from the same base model.
- Per profile and slot, two score vectors S_A, S_B in R^N (down- and up-projections
  mixed separately), plus the task head (`method.head_regex`, trained densely; counted
  and stored apart in every size figure).
- `variant="soft"`: w = softmax(S), the adapters' kernels and biases mixed by w (the
  compute of one adapter, plus O(N d r) to mix). `"hard"` (default): the top K of S
  (K = `xpeft.k`, default ceil(N/2)), the mean of the selected adapters, gradients to S by
  a straight-through estimator through softmax(S). `"sigmoid"`: the adapters with S > 0,
  their mean, straight-through through sigmoid(S) (a variable count).
  `xpeft.mixing` (hard, sigmoid): the selected adapters' "mean" (default) or "sum"; the
  paper's available text does not fix it; fishjax/params/xpeft.py has the measurement
  behind the default (the mean keeps a random bank's effect at about 1/K of one adapter's,
  the sum stacks it) and the experiment compares both (benchmarks/xpeft/xpeft_eval.py).
  `harden_at_end=True` (soft only): train soft, then ship the top K of the learned
  weights as a hard profile; the run's `deployed_eval` is that hard profile's dev score.
- Scores start at U(+-`score_init_scale`) (0.01; seeded by the run), train with the
  trainer's AdamW schedule scaled to `score_learning_rate` (default: the run's learning
  rate) and no weight decay.
- Artefacts: `<workdir>/profile.safetensors` (`fishjax.methods.xpeft.profile_file`): a hard
  profile's mask bit-packed in ceil(2 L N / 8) bytes, a soft one's scores as float16, and
  the head, bound to the bank's and the base's fingerprints. Adapters are not part of the
  base architecture: no Hugging Face export. Serving many profiles from one base and bank:
  `fishjax.methods.xpeft.serve`.
"""

from fishjax.methods.xpeft import method  # noqa: F401  (registers the method)
