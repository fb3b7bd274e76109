"""What an encoder's classifier reads (`config.model.pooling`): the pooler (Hugging Face's
head), the [CLS] state or the mean over the real tokens; one params tree for all three;
no Hugging Face or PEFT-package export of the other two, and the clear errors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fishjax.core.errors import ConfigError, PeftError
from fishjax.models import EncoderConfig, ModelError, SequenceClassifier, init_params, load_model
from fishjax.models.hf_export import export_hf_folder


def _inputs():
    ids = jnp.asarray([[2, 5, 9, 11, 3, 0, 0], [2, 7, 3, 0, 0, 0, 0]], jnp.int32)
    return ids, (ids != 0).astype(jnp.int32)


def _hidden(module, params, ids, mask):
    _, state = module.apply({"params": params}, ids, mask,
                            capture_intermediates=lambda m, name: m.name == "encoder")
    return state["intermediates"]["encoder"]["__call__"][0]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_classifier_reads_the_chosen_state(pooling):
    config = EncoderConfig.tiny()
    params = init_params(config, 3, jax.random.PRNGKey(0))
    chosen = dataclasses.replace(config, pooling=pooling)
    assert jax.tree_util.tree_structure(init_params(chosen, 3, jax.random.PRNGKey(0))) == \
        jax.tree_util.tree_structure(params)  # the pooler's params stay
    ids, mask = _inputs()
    module = SequenceClassifier(chosen, 3)
    hidden = np.asarray(_hidden(module, params, ids, mask))
    if pooling == "cls":
        feature = hidden[:, 0]
    else:
        m = np.asarray(mask, np.float32)[..., None]
        feature = (hidden * m).sum(axis=1) / m.sum(axis=1)
    c = params["classifier"]
    want = feature @ np.asarray(c["kernel"]) + np.asarray(c["bias"])
    got = np.asarray(module.apply({"params": params}, ids, mask))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    default = np.asarray(SequenceClassifier(config, 3).apply({"params": params}, ids, mask))
    assert not np.allclose(got, default)  # the pooler's output is another input


def test_bad_poolings_and_exports_are_refused(tiny_model_dir, tiny_decoder_dir, tmp_path):
    with pytest.raises(ModelError, match="pooling must be one of"):
        EncoderConfig.tiny(pooling="max")
    with pytest.raises(ModelError, match="RoBERTa's head reads <s>"):
        EncoderConfig.tiny("roberta", pooling="cls")
    assert "pooling" not in EncoderConfig.tiny().to_hf_dict()
    model = load_model(tiny_model_dir, 2, key=jax.random.PRNGKey(0), pooling="mean")
    assert model.config.pooling == "mean"
    with pytest.raises(ModelError, match="no Hugging Face"):
        export_hf_folder(model.params, model.config, 2, str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()
    with pytest.raises(ModelError, match="has no pooling to choose"):
        load_model(tiny_decoder_dir, None, key=jax.random.PRNGKey(0), pooling="mean")

    from benchmarks.common.tiny_model import make_tiny_config
    from fishjax.methods.peft.peft_file import export_peft_folder
    from fishjax.params.peft import PeftSpec
    from fishjax.train.validation import validate_config

    with pytest.raises(PeftError, match="no PEFT-package form"):
        export_peft_folder(str(tmp_path / "peft"), {}, {}, PeftSpec("lora", 2, ("encoder/x",)),
                           model.config)
    config = make_tiny_config(tiny_model_dir, str(tmp_path / "cache"))
    config.model.pooling = "mean"
    validate_config(config)
    config.train.export = True
    with pytest.raises(ConfigError, match="no Hugging Face export"):
        validate_config(config)
    config.model.pooling = "first"
    with pytest.raises(ConfigError, match="pooling must be one of"):
        validate_config(config)
