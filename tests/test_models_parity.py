"""Parity of fishjax.models with the PyTorch reference in transformers (CPU, no network)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file as load_torch_file  # noqa: E402

from fishjax.models import (  # noqa: E402
    EncoderConfig,
    ModelError,
    SequenceClassifier,
    init_params,
    load_model,
    load_tokenizer,
    resolve_model_dir,
)
from fishjax.models.hf_export import export_hf_folder  # noqa: E402

ATOL = 1e-4
PAIRS = [
    ("A man is playing a guitar.", "Someone is playing an instrument."),
    ("The cat sits on the mat.", "Stock markets fell sharply today after the announcement."),
    ("Hello!", "Hi."),
]


def torch_logits(model, ids, mask, types=None):
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(np.asarray(ids), dtype=torch.long),
            attention_mask=torch.as_tensor(np.asarray(mask), dtype=torch.long),
            token_type_ids=None if types is None else torch.as_tensor(np.asarray(types)),
            output_hidden_states=True,
        )
    return out.logits.numpy(), out.hidden_states[-1].numpy()


def jax_logits(module, params, ids, mask, types=None):
    out, state = module.apply({"params": params}, ids, mask, types, capture_intermediates=True)
    return np.asarray(out), np.asarray(state["intermediates"]["encoder"]["__call__"][0])


def padded_batch(config, lengths=(12, 9, 5, 1), seed=0):
    rng = np.random.default_rng(seed)
    seq = max(lengths)
    ids = rng.integers(3, config.vocab_size, size=(len(lengths), seq))
    mask = (np.arange(seq)[None] < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, config.pad_token_id)
    types = rng.integers(0, config.type_vocab_size, size=ids.shape) * mask
    return ids, mask, types


def randomize_torch(model, seed):
    """Perturb every parameter so that biases and LayerNorms are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


def tiny_torch(model_type, num_labels, seed=0):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
        attn_implementation="eager",
    )
    if model_type == "roberta":
        config = transformers.RobertaConfig(
            max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, **common
        )
        model = transformers.RobertaForSequenceClassification(config)
    else:
        config = transformers.BertConfig(max_position_embeddings=64, hidden_act="gelu", **common)
        model = transformers.BertForSequenceClassification(config)
    randomize_torch(model, seed)
    return model.eval()


def assert_close(a, b, what):
    diff = float(np.max(np.abs(a - b)))
    assert diff < ATOL, f"{what}: max abs diff {diff:.3g}"


@pytest.mark.integration
@pytest.mark.slow
def test_minilm_matches_torch(tmp_path):
    try:
        model_dir = resolve_model_dir("minilm-l6")
    except ModelError as e:
        pytest.skip(str(e))
    fj = load_model("minilm-l6", 3, key=jax.random.PRNGKey(42))
    assert set(fj.load_report.newly_initialized) == {"classifier/kernel", "classifier/bias"}
    # Torch reads the encoder from the original file and only the head from our export, so a
    # symmetric naming bug in load and export could not cancel out.
    exported = export_hf_folder(fj.params, fj.config, 3, tmp_path / "export")
    head = {
        k: v
        for k, v in load_torch_file(f"{exported}/model.safetensors").items()
        if k.startswith("classifier.")
    }
    tm = transformers.BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=3, attn_implementation="eager"
    ).eval()
    missing, unexpected = tm.load_state_dict(head, strict=False)
    assert not unexpected and not any(k.startswith("classifier.") for k in missing)

    tok = load_tokenizer("minilm-l6")
    enc = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="np")
    assert enc["attention_mask"].min() == 0  # the batch really is padded
    args = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    t_logits, t_hidden = torch_logits(tm, *args)
    j_logits, j_hidden = jax_logits(fj.module, fj.params, *args)
    assert_close(j_hidden, t_hidden, "last hidden state")
    assert_close(j_logits, t_logits, "logits")
    assert np.abs(t_logits).max() > 1e-2  # not trivially zero

    model = export_hf_folder(fj.params, fj.config, 3, tmp_path / "full", tokenizer_dir=model_dir)
    assert load_tokenizer(model).is_fast


@pytest.mark.parametrize("model_type,num_labels", [("roberta", 3), ("bert", 1)])
def test_torch_checkpoint_loads_with_parity(tmp_path, model_type, num_labels):
    tm = tiny_torch(model_type, num_labels, seed=1)
    tm.save_pretrained(tmp_path)
    fj = load_model(str(tmp_path), num_labels, key=jax.random.PRNGKey(0))
    assert fj.config.model_type == model_type
    assert fj.load_report.newly_initialized == () and fj.load_report.ignored == ()
    ids, mask, types = padded_batch(fj.config)
    types = types if model_type == "bert" else None
    t_logits, t_hidden = torch_logits(tm, ids, mask, types)
    j_logits, j_hidden = jax_logits(fj.module, fj.params, ids, mask, types)
    assert j_logits.shape == (4, num_labels)
    assert_close(j_hidden, t_hidden, "last hidden state")
    assert_close(j_logits, t_logits, "logits")


@pytest.mark.parametrize("model_type,num_labels", [("bert", 2), ("roberta", 1)])
def test_export_loads_in_torch_with_parity(tmp_path, model_type, num_labels):
    config = EncoderConfig.tiny(model_type)
    params = init_params(config, num_labels, jax.random.PRNGKey(3))
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape, np.float32), params)
    out = export_hf_folder(params, config, num_labels, tmp_path / "hf")

    tm, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    expected_cls = {
        "bert": "BertForSequenceClassification",
        "roberta": "RobertaForSequenceClassification",
    }[model_type]
    assert type(tm).__name__ == expected_cls
    assert tm.config.problem_type == (
        "regression" if num_labels == 1 else "single_label_classification"
    )
    ids, mask, types = padded_batch(config, seed=5)
    types = types if model_type == "bert" else None
    t_logits, _ = torch_logits(tm.eval(), ids, mask, types)
    j_logits, _ = jax_logits(SequenceClassifier(config, num_labels), params, ids, mask, types)
    assert_close(j_logits, t_logits, "logits")
    # bf16 compute stays near the float32 reference.
    bf16 = SequenceClassifier(config, num_labels, dtype=jnp.bfloat16)
    b_logits = bf16.apply({"params": params}, ids, mask, types)
    assert b_logits.dtype == jnp.float32
    assert float(np.max(np.abs(np.asarray(b_logits) - t_logits))) < 0.05
