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
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from configs import quickstart
from fishjax.data import load_split
from fishjax.models import EncoderConfig, init_params
from fishjax.models.decoder import CausalLM, DecoderConfig
from fishjax.models.decoder_export import export_decoder_folder
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


# -- a tiny decoder ------------------------------------------------------------------------

# ChatML, as SmolLM2's template without its default system message.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def write_tiny_rte(root: str, rows: int = 40, dev_rows: int = 9) -> str:
    """A GLUE folder under `root` with a tiny RTE (`rows` training pairs, the first
    `dev_rows` of them as dev); returns the folder to pass as `--glue_dir`."""
    folder = os.path.join(root, "glue", "RTE")
    os.makedirs(folder)
    header = "index\tsentence1\tsentence2\tlabel\n"
    lines = [f"{i}\tthe movie is {'great' if i % 2 else 'bad'} .\tit is good .\t"
             f"{'entailment' if i % 3 else 'not_entailment'}\n" for i in range(rows)]
    for name, part in (("train.tsv", lines), ("dev.tsv", lines[:dev_rows])):
        with open(os.path.join(folder, name), "w") as f:
            f.write(header + "".join(part))
    return os.path.dirname(folder)


def tiny_byte_tokenizer():
    """A byte-level BPE tokenizer without merges (one token per byte) and ChatML's special
    tokens: every text encodes, with no training and no files."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate([*TINY_SPECIAL_TOKENS, *alphabet])}
    tok = Tokenizer(models.BPE(vocab, [], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in TINY_SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=TINY_CHAT_TEMPLATE,
                                   eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   bos_token="<|im_start|>", unk_token="<|endoftext|>")


def tiny_decoder_config(model_type: str = "llama", **overrides):
    """A tiny Llama (tied embeddings) or Qwen2-style (q/k/v biases, untied) decoder config
    over `tiny_byte_tokenizer`'s vocabulary."""
    fields = dict(model_type=model_type, vocab_size=len(TINY_SPECIAL_TOKENS) + 256,
                  hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, tie_word_embeddings=model_type == "llama")
    fields.update(overrides)
    return DecoderConfig.from_dict(fields)


def build_tiny_decoder_dir(path: str, model_type: str = "llama", seed: int = 0) -> str:
    """Writes a random tiny decoder (weights drawn from `seed`) with `tiny_byte_tokenizer`
    as a Hugging Face folder under `path`; returns the model folder."""
    tok_dir = os.path.join(path, "_tokenizer")
    tiny_byte_tokenizer().save_pretrained(tok_dir)
    config = tiny_decoder_config(model_type)
    ids = np.zeros((1, 4), np.int32)
    params = CausalLM(config).init(jax.random.PRNGKey(seed), ids, np.ones_like(ids))["params"]
    return export_decoder_folder(params, config, os.path.join(path, "model"),
                                 tokenizer_source=tok_dir)


def make_tiny_decoder_config(model_dir: str, cache_dir: str) -> ml_collections.ConfigDict:
    """`make_tiny_config` for a tiny decoder: the bundled instruction sample
    (`chat_quickstart`) at 96 tokens, its chat template."""
    config = make_tiny_config(model_dir, cache_dir)
    config.task = "chat_quickstart"
    config.data.max_train_samples = None
    config.data.max_eval_samples = None
    config.data.max_length = 96
    config.data.buckets = (64, 96)
    return config
