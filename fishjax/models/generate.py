"""Text generation with a decoder: greedy or sampled, batched, with a key/value cache.

One jitted program per (batch size, prompt length, new tokens, sampling settings): the
prompts are left-padded to one length and run through the model once (filling the cache),
then a `lax.while_loop` adds one token per step for every row, reading and writing the
cache at static shapes (nothing recompiles per token). A row stops at its first stop token
(the tokenizer's end-of-sequence token by default); the loop ends when every row has
stopped or `max_new_tokens` were made. Positions count each row's real tokens, as in
training (`fishjax.models.decoder.position_ids`), so a left-padded prompt reads the same
as an unpadded one.

`generate_text` applies the tokenizer's chat template to each prompt (one user turn and
the assistant header) unless `chat=False`, and decodes the new tokens up to the stop token.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import ModelError
from fishjax.models.decoder import CausalLM, init_cache, position_ids


@functools.partial(jax.jit, static_argnames=("module", "max_new_tokens", "temperature"))
def _generate(module: CausalLM, params: Any, input_ids: jax.Array, attention_mask: jax.Array,
              key: jax.Array, stop_id: jax.Array, pad_id: jax.Array, *, max_new_tokens: int,
              temperature: float) -> jax.Array:
    b, p = input_ids.shape
    slots = p + max_new_tokens
    caches = init_cache(module.config, b, slots, module.dtype)
    filled = jnp.zeros((b, slots), jnp.int32).at[:, :p].set(attention_mask)
    logits, caches = module.apply({"params": params}, input_ids, filled, caches=caches,
                                  index=0, positions=position_ids(attention_mask))
    next_pos = jnp.sum(attention_mask, axis=-1)  # each row's next position

    def pick(step, last_logits):
        if temperature == 0.0:
            return jnp.argmax(last_logits, axis=-1).astype(jnp.int32)
        return jax.random.categorical(jax.random.fold_in(key, step),
                                      last_logits / temperature, axis=-1).astype(jnp.int32)

    first = pick(0, logits[:, -1])
    out = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = first == stop_id

    def cond(state):
        step, _, _, _, _, done, _ = state
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(state):
        step, token, pos, filled, caches, done, out = state
        slot = p + step - 1  # where the previous token goes
        filled = jax.lax.dynamic_update_slice(filled, jnp.ones((b, 1), jnp.int32), (0, slot))
        logits, caches = module.apply({"params": params}, token[:, None], filled,
                                      caches=caches, index=slot, positions=pos[:, None])
        new = jnp.where(done, pad_id, pick(step, logits[:, -1]))
        out = jax.lax.dynamic_update_slice(out, new[:, None], (0, step))
        return step + 1, new, pos + 1, filled, caches, done | (new == stop_id), out

    state = (jnp.int32(1), first, next_pos, filled, caches, done, out)
    return jax.lax.while_loop(cond, body, state)[-1]


def generate(model: CausalLM, params: Any, input_ids: np.ndarray, attention_mask: np.ndarray,
             *, max_new_tokens: int, stop_id: int, pad_id: int, temperature: float = 0.0,
             key: jax.Array | None = None) -> np.ndarray:
    """New token ids [B, max_new_tokens] after left-padded prompts (`attention_mask` 0 on
    the padding, which must be on the left); `pad_id` after a row's stop token. Greedy
    with `temperature=0`, else sampled (`key` required)."""
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise ModelError("input_ids and attention_mask must both be [batch, length]")
    if max_new_tokens < 1:
        raise ModelError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if (np.diff(attention_mask, axis=-1) < 0).any() or not attention_mask[:, -1].all():
        raise ModelError("prompts must be left-padded (attention_mask 0s before the 1s)")
    if temperature < 0 or (temperature > 0 and key is None):
        raise ModelError("sampling needs temperature > 0 and a PRNG key")
    key = jax.random.PRNGKey(0) if key is None else key
    return np.asarray(_generate(model, params, jnp.asarray(input_ids, jnp.int32),
                                jnp.asarray(attention_mask, jnp.int32), key,
                                jnp.int32(stop_id), jnp.int32(pad_id),
                                max_new_tokens=max_new_tokens, temperature=float(temperature)))


def left_padded(token_lists: Sequence[Sequence[int]], pad_id: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of token lists, padded on the left to the longest."""
    width = max(len(t) for t in token_lists)
    ids = np.full((len(token_lists), width), pad_id, np.int32)
    mask = np.zeros((len(token_lists), width), np.int32)
    for i, tokens in enumerate(token_lists):
        if len(tokens):
            ids[i, width - len(tokens):] = tokens
            mask[i, width - len(tokens):] = 1
    return ids, mask


def generate_text(model: CausalLM, params: Any, tokenizer: Any, prompts: Sequence[str], *,
                  max_new_tokens: int = 64, chat: bool = True, temperature: float = 0.0,
                  key: jax.Array | None = None) -> list[str]:
    """The decoded answers to `prompts` (the chat template applied unless `chat=False`),
    each cut at its stop token (the tokenizer's end-of-sequence token)."""
    if chat:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                               tokenize=False, add_generation_prompt=True)
                 for p in prompts]
    else:
        texts = list(prompts)
    tokens = tokenizer(texts, add_special_tokens=not chat)["input_ids"]
    stop = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop
    ids, mask = left_padded(tokens, pad)
    out = generate(model, params, ids, mask, max_new_tokens=max_new_tokens, stop_id=stop,
                   pad_id=pad, temperature=temperature, key=key)
    answers = []
    for row in out:
        row = list(row)
        answers.append(tokenizer.decode(row[:row.index(stop)] if stop in row else row))
    return answers
