"""A random tiny encoder folder and the quickstart config on it: seconds per run on CPU.

The unit tests (`tests/conftest.py`) and the fault-injection benchmark train this model on
the quickstart sample bundled with fishjax; nothing here needs the network or the real
model.
"""

from __future__ import annotations

import os
import string

import jax
import ml_collections
from transformers import BertTokenizerFast

from configs import quickstart
from fishjax.data import load_split
from fishjax.models import EncoderConfig, init_params
from fishjax.models.hf_export import export_hf_folder


def tiny_vocab() -> list[str]:
    """Special tokens, the words of the quickstart sample, letters and ## letter pieces."""
    words = set()
    for split in ("train", "dev"):
        for sentence in load_split("quickstart", split).text_a:
            words.update(sentence.lower().replace(".", " . ").replace(",", " , ").split())
    letters = list(string.ascii_lowercase + string.digits + string.punctuation)
    return (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters
            + [f"##{c}" for c in letters] + sorted(words - set(letters)))


def build_tiny_model_dir(path: str, model_type: str = "bert", num_labels: int = 2,
                         seed: int = 0) -> str:
    """Writes a random tiny encoder (weights drawn from `seed`) + WordPiece tokenizer as a
    Hugging Face folder under `path`; returns the model folder."""
    tok_dir = os.path.join(path, "_tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    vocab = tiny_vocab()
    with open(os.path.join(tok_dir, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=os.path.join(tok_dir, "vocab.txt")).save_pretrained(tok_dir)
    cfg = EncoderConfig.tiny(model_type, vocab_size=len(vocab))
    params = init_params(cfg, num_labels, jax.random.PRNGKey(seed))
    return export_hf_folder(params, cfg, num_labels, os.path.join(path, "model"),
                            tokenizer_dir=tok_dir)


def make_tiny_config(model_dir: str, cache_dir: str) -> ml_collections.ConfigDict:
    """The quickstart config on the tiny model: 24 steps, seconds on CPU."""
    config = quickstart.get_config()
    config.model.name = model_dir
    config.data.cache_dir = cache_dir
    config.data.max_train_samples = 96
    config.data.max_eval_samples = 64
    config.train.batch_size = 8
    config.train.eval_batch_size = 16
    config.train.num_epochs = 2.0
    config.train.learning_rate = 1e-3
    config.train.log_every_steps = 4
    config.train.eval_before_training = False
    config.train.export = False
    config.train.keep_checkpoints = True  # tests read them (the quickstart deletes its own)
    config.method.peft.warmup_steps = 4  # *_fish's default warm-up, short on a tiny model
    return config
