"""Generation with the key/value cache on a tiny random decoder: the cached greedy tokens
equal a loop of full forward passes, a row stops at its stop token, one compiled program
serves a whole generation, and bad prompts are one-line errors. (Equality with
transformers' `generate`: tests/test_decoder.py.)"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from fishjax.core.errors import ModelError
from fishjax.models import load_model, load_tokenizer
from fishjax.models.generate import _generate, generate, generate_text, left_padded


@pytest.fixture(scope="module")
def model(tiny_decoder_dir):
    return load_model(tiny_decoder_dir, None, key=jax.random.PRNGKey(0))


def _uncached_greedy(model, tokens: list[int], steps: int) -> list[int]:
    out = list(tokens)
    for _ in range(steps):
        ids = np.asarray([out], np.int32)
        logits = model.module.apply({"params": model.params}, ids, np.ones_like(ids))
        out.append(int(np.argmax(logits[0, -1])))
    return out[len(tokens):]


def test_cached_greedy_tokens_equal_full_forward_passes(model):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [40, 41, 42]]
    ids, mask = left_padded(prompts, pad_id=2)
    before = _generate._cache_size()
    out = generate(model.module, model.params, ids, mask, max_new_tokens=10, stop_id=-1,
                   pad_id=2)
    for row, tokens in enumerate(prompts):
        assert list(out[row]) == _uncached_greedy(model, tokens, 10)
    generate(model.module, model.params, ids[::-1], mask[::-1], max_new_tokens=10,
             stop_id=-1, pad_id=2)
    assert _generate._cache_size() == before + 1  # one program for both calls


def test_a_row_stops_at_its_stop_token_and_sampling_is_seeded(model):
    ids, mask = left_padded([[5, 6, 7], [9, 10, 11, 12]], pad_id=2)
    free = generate(model.module, model.params, ids, mask, max_new_tokens=8, stop_id=-1,
                    pad_id=2)
    stop = int(free[0, 2])  # row 0's third token: it stops there
    out = generate(model.module, model.params, ids, mask, max_new_tokens=8, stop_id=stop,
                   pad_id=-7)
    first = int(np.flatnonzero(free[0] == stop)[0])
    assert list(out[0, :first + 1]) == list(free[0, :first + 1])
    assert (out[0, first + 1:] == -7).all()
    key = jax.random.PRNGKey(3)
    a, b = (generate(model.module, model.params, ids, mask, max_new_tokens=8, stop_id=-1,
                     pad_id=2, temperature=1.0, key=k)
            for k in (key, key))
    np.testing.assert_array_equal(a, b)


def test_generate_text_applies_the_chat_template(model, tiny_decoder_dir):
    tok = load_tokenizer(tiny_decoder_dir)
    answers = generate_text(model.module, model.params, tok, ["Hi", "What is 2+2?"],
                            max_new_tokens=5)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_bad_prompts_are_one_line_errors(model):
    ids, mask = left_padded([[5, 6], [7]], pad_id=2)
    for kw, message in ((dict(attention_mask=mask[:, ::-1]), "left-padded"),
                        (dict(max_new_tokens=0), "max_new_tokens"),
                        (dict(temperature=0.5), "PRNG key")):
        args = dict(attention_mask=mask, max_new_tokens=4, stop_id=-1, pad_id=2) | kw
        with pytest.raises(ModelError, match=message):
            generate(model.module, model.params, ids, **args)
