"""The tokenizer of a GGUF file, built with the `tokenizers` library from its metadata.

A GGUF holds no `tokenizer.json`: its vocabulary, merges, token types, special token ids and
chat template are metadata under llama.cpp's key names. This module rebuilds the byte-level
BPE tokenizer they describe (llama.cpp's `gpt2` tokenizer model, which SmolLM2, Llama 3 and
Qwen2 files use) and wraps it in transformers' fast-tokenizer class, so the rest of fishjax
uses it like any folder's tokenizer (`tokenizer(texts)`, `apply_chat_template`), with no
torch and no change to transformers.

- Pre-tokenization follows the file's `tokenizer.ggml.pre` as llama.cpp does: `smollm` splits
  every digit on its own before GPT-2's split; `gpt2` (and a file that names none) is GPT-2's.
  Any other pre-tokenizer is refused, not guessed: a wrong split gives valid-looking but
  wrong token ids.
- Tokens typed CONTROL (3) are special tokens (never split, e.g. `<|im_start|>`); USER_DEFINED
  (4) are added tokens matched whole.
- A BOS token is prepended only when the file's `tokenizer.ggml.add_bos_token` says so
  (SmolLM2: no).
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from fishjax.core.errors import ModelError
from fishjax.models.gguf_weights import gguf_field, open_gguf, string_array

# llama.cpp token types (gguf.TokenType)
_CONTROL, _USER_DEFINED = 3, 4


def _pre_tokenizer(pre: str | None, path: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in (None, "default", "gpt2"):
        return byte_level
    if pre == "smollm":  # llama.cpp: "\p{N}" isolated, then GPT-2's regex
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        byte_level])
    raise ModelError(f"{path}: GGUF pre-tokenizer {pre!r} is not supported (smollm, gpt2)")


def gguf_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """The fast tokenizer a llama GGUF file describes (module docstring), with its chat
    template; ModelError if the file's tokenizer is not byte-level BPE."""
    reader = open_gguf(path)
    kind = gguf_field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelError(f"{path}: GGUF tokenizer model {kind!r}; only byte-level BPE "
                         "('gpt2') is built")
    tokens = string_array(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in string_array(reader, "tokenizer.ggml.merges")]
    types = reader.fields["tokenizer.ggml.token_type"]
    token_types = [int(types.parts[i][0]) for i in types.data]
    tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges,
                                     fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(gguf_field(reader, "tokenizer.ggml.pre"), path)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t, k in zip(tokens, token_types, strict=True)
                                  if k == _CONTROL])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False)
                          for t, k in zip(tokens, token_types, strict=True)
                          if k == _USER_DEFINED])

    def token(key: str) -> str | None:
        i = gguf_field(reader, f"tokenizer.ggml.{key}")
        return None if i is None else tokens[int(i)]

    special: dict[str, Any] = {"bos_token": token("bos_token_id"),
                               "eos_token": token("eos_token_id"),
                               "unk_token": token("unknown_token_id"),
                               "pad_token": token("padding_token_id")}
    if gguf_field(reader, "tokenizer.ggml.add_bos_token", False) and special["bos_token"]:
        bos = special["bos_token"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokens.index(bos))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, chat_template=gguf_field(reader, "tokenizer.chat_template"),
        **{k: v for k, v in special.items() if v is not None})
