"""PEFT modules (LoRA, DoRA, adapters) and FISH-Tuning on the tiny random encoders."""

from __future__ import annotations

import importlib.util
import json
import logging
import os

import jax
import numpy as np
import pytest

from fishjax import objectives
from fishjax.core.errors import PeftError
from fishjax.core.tree import count_params, flatten_paths, split_tree, unflatten_paths
from fishjax.data import get_task
from fishjax.methods import get_method
from fishjax.methods.peft.method import HEAD_KEY, PEFT_KEY, peft_combine, target_spec
from fishjax.models import (
    ADAPTER_SITES,
    EncoderConfig,
    SequenceClassifier,
    init_params,
)
from fishjax.params.peft import (
    PeftSpec,
    apply_peft,
    entry_count,
    find_targets,
    init_peft,
    peft_shapes,
    type_counts,
)
from fishjax.selection.topk import select_entries
from fishjax.train.trainer import method_context

QV = r"attention/self/(query|value)/kernel$"
HIDDEN, LAYERS = 32, 2  # EncoderConfig.tiny


def _model(model_type="bert"):
    cfg = EncoderConfig.tiny(model_type)
    return SequenceClassifier(cfg, 2), init_params(cfg, 2, jax.random.PRNGKey(0)), cfg


def _batch(b=4, s=12, seed=0, vocab=100):
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(5, vocab, (b, s)).astype(np.int32),
            "attention_mask": np.ones((b, s), np.int32),
            "token_type_ids": np.zeros((b, s), np.int32),
            "labels": rng.integers(0, 2, b).astype(np.int32),
            "weights": np.ones(b, np.float32)}


def _logits(module, params, batch):
    apply = objectives.make_apply_fn(module, objectives.SequenceClassification())
    return np.asarray(jax.jit(apply)(params, batch))


def _spec(base, kind, size, variant="houlsby"):
    if kind == "adapter":
        return PeftSpec("adapter", size, find_targets(base, "adapter", ADAPTER_SITES[variant]))
    return PeftSpec(kind, size, find_targets(base, kind, QV), scaling=2.0)


def _perturb(tree, key, scale=0.1):
    """Random nonzero values in every leaf (a 'trained' PEFT tree)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [
        np.asarray(x + scale * jax.random.normal(k, np.shape(x))) for x, k in
        zip(leaves, keys, strict=True)])


# -- the model's adapter slots ------------------------------------------------------------


def test_init_creates_no_adapter_params_and_plain_trees_run_unchanged():
    module, params, _ = _model()
    assert not any("adapter" in p for p in flatten_paths(params))
    # The adapter branch is decided at trace time: a plain tree traces no adapter op.
    _, base = split_tree(params, r"^classifier/")
    spec = _spec(base, "adapter", 4)
    with_adapters = apply_peft(params, init_peft(base, spec, jax.random.PRNGKey(1)), spec)
    batch = _batch()
    apply = objectives.make_apply_fn(module, objectives.SequenceClassification())
    plain_ops = str(jax.make_jaxpr(apply)(params, batch)).count("dot_general")
    adapter_ops = str(jax.make_jaxpr(apply)(with_adapters, batch)).count("dot_general")
    assert adapter_ops == plain_ops + 2 * len(spec.targets)


def test_find_targets():
    _, params, _ = _model()
    assert find_targets(params, "lora", QV) == tuple(
        f"encoder/layer_{i}/attention/self/{n}" for i in range(LAYERS) for n in ("query", "value"))
    assert find_targets(params, "adapter", ADAPTER_SITES["houlsby"]) == tuple(
        f"encoder/layer_{i}/{s}" for i in range(LAYERS) for s in ("attention/output", "output"))
    assert find_targets(params, "adapter", ADAPTER_SITES["pfeiffer"]) == tuple(
        f"encoder/layer_{i}/output" for i in range(LAYERS))
    with pytest.raises(PeftError, match="2-D"):
        find_targets(params, "lora", r"query/(kernel|bias)$|LayerNorm/scale$|query/bias")
    with pytest.raises(PeftError, match="no lora target"):
        find_targets(params, "lora", r"nothing$")
    with pytest.raises(PeftError, match="no adapter target"):
        find_targets(params, "adapter", r"intermediate$")  # not an AddNorm slot


# -- step 0, merge, counts ----------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("kind", ["lora", "dora", "adapter"])
def test_zero_init_leaves_logits_unchanged(kind, model_type):
    module, params, _ = _model(model_type)
    _, base = split_tree(params, r"^classifier/")
    spec = _spec(base, kind, 4)
    tree = init_peft(base, spec, jax.random.PRNGKey(3))
    combined = apply_peft(params, tree, spec)
    batch = _batch()
    want, got = _logits(module, params, batch), _logits(module, combined, batch)
    if kind == "lora":  # W0 + s * A @ 0 is W0 exactly
        np.testing.assert_array_equal(got, want)
    else:  # DoRA: m / ||W0||_c == 1 to rounding; adapters add exactly 0, but the compiled
        # program differs, so XLA may fuse (and round) the rest differently
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    a_leaves = [x for p, x in flatten_paths(tree).items() if p[-1] == "lora_A"
                or p[-2:] == ("down", "kernel")]
    assert a_leaves and all(np.abs(x).max() > 0 for x in a_leaves)


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_merged_equals_unmerged(kind):
    """The merged kernel (what the model reads) equals peft's unmerged forward."""
    _, params, _ = _model()
    _, base = split_tree(params, r"^classifier/")
    spec = _spec(base, kind, 3)
    tree = _perturb(init_peft(base, spec, jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    merged = flatten_paths(apply_peft(base, tree, spec))
    flat_tree, flat_base = flatten_paths(tree), flatten_paths(base)
    x = np.random.default_rng(0).normal(size=(5, HIDDEN)).astype(np.float32)
    for t in spec.targets:
        p = tuple(t.split("/"))
        w0 = flat_base[p + ("kernel",)]
        a, b = flat_tree[p + ("lora_A",)], flat_tree[p + ("lora_B",)]
        unmerged = x @ w0 + spec.scaling * (x @ a) @ b
        if kind == "dora":  # peft: (m / ||W0 + s BA||_c) * (x W0 + s x A B)
            norm = np.linalg.norm(np.asarray(w0) + spec.scaling * np.asarray(a) @ b, axis=0)
            unmerged = unmerged * (flat_tree[p + ("lora_magnitude",)] / norm)
        np.testing.assert_allclose(x @ merged[p + ("kernel",)], unmerged, rtol=1e-5, atol=1e-5)
    # Only the targets change, and the merged tree has the base's shapes.
    for p, w in flatten_paths(base).items():
        assert merged[p].shape == w.shape
        if "/".join(p[:-1]) not in spec.targets or p[-1] != "kernel":
            np.testing.assert_array_equal(merged[p], w)


def test_dora_keeps_a_zero_column_at_zero():
    """A dead output unit (zero kernel column) has magnitude 0: DoRA must give 0, not NaN."""
    _, params, _ = _model()
    _, base = split_tree(params, r"^classifier/")
    spec = _spec(base, "dora", 3)
    flat = flatten_paths(base)
    kernel = tuple(spec.targets[0].split("/")) + ("kernel",)
    flat[kernel] = flat[kernel].at[:, 0].set(0.0)
    base = unflatten_paths(flat)
    tree = init_peft(base, spec, jax.random.PRNGKey(0))
    assert flatten_paths(tree)[kernel[:-1] + ("lora_magnitude",)][0] == 0
    merged = flatten_paths(apply_peft(base, tree, spec))[kernel]
    assert np.all(np.isfinite(merged)) and np.all(merged[:, 0] == 0)
    np.testing.assert_allclose(merged[:, 1:], flat[kernel][:, 1:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [1, 4, 8])
@pytest.mark.parametrize("kind,variant", [("lora", None), ("dora", None),
                                          ("adapter", "houlsby"), ("adapter", "pfeiffer")])
def test_trainable_count_equals_formula(kind, variant, size):
    _, params, _ = _model()
    _, base = split_tree(params, r"^classifier/")
    spec = _spec(base, kind, size, variant or "houlsby")
    h = HIDDEN
    per_target = {"lora": size * (h + h), "dora": size * (h + h) + h,
                  "adapter": 2 * h * size + size + h}[kind]
    n_targets = {"lora": 2, "dora": 2, "adapter": 2 if variant == "houlsby" else 1}[kind] * LAYERS
    tree = init_peft(base, spec, jax.random.PRNGKey(0))
    assert count_params(tree) == entry_count(base, spec) == per_target * n_targets
    assert sum(type_counts(peft_shapes(base, spec)).values()) == per_target * n_targets


# -- FISH inside ----------------------------------------------------------------------------


def _ctx(workdir, seed=0, method="lora_fish", **peft):
    from configs import default

    module, params, cfg = _model()
    config = default.get_config()
    config.method.name = method  # ctx.method: the blocks this method reads
    config.seed = seed
    config.method.fisher.num_samples = 16
    config.method.fisher.batch_size = 4
    config.train.batch_size = 4
    config.train.learning_rate = 1e-2
    config.method.peft.rank = 2
    config.method.peft.adapter_size = 2
    config.method.peft.warmup_steps = 3  # the default Fisher-after-warm-up, kept short
    for k, v in peft.items():
        config.method.peft[k] = v
    batches = [_batch(seed=i) for i in range(4)]
    return method_context(
        config, params=params,
        loss_fn=objectives.make_loss_fn(module, objectives.SequenceClassification()),
        train_batches=lambda batch_size, *, seed=None, epoch=0: iter(batches),
        task=get_task(config.task), model_config=cfg, rng=jax.random.PRNGKey(seed),
        workdir=str(workdir))


def _mask_of(setup, ctx):
    """The FISH mask the method saved to its workdir, over the trainable tree."""
    from fishjax.artifacts.mask_file import load_mask

    return load_mask(os.path.join(ctx.workdir, "mask.safetensors"), setup.trainable)[0]


def _split(mask):
    out = {}
    for p, m in flatten_paths(mask[PEFT_KEY]).items():
        out[p[-1]] = out.get(p[-1], 0) + int(m.sum())
    return out


def test_lora_fish_selects_k_of_rank_r_and_falls_into_the_zero_init_trap(caplog, tmp_path):
    ctx = _ctx(tmp_path, fisher_after_warmup=False)  # scored at init, as in the paper
    with caplog.at_level(logging.INFO, logger="fishjax"):
        setup = get_method("lora_fish").setup(ctx)
    base = setup.frozen
    k = entry_count(base, target_spec(base, "lora", ctx.method.peft))
    assert k == LAYERS * 2 * 2 * (HIDDEN + HIDDEN)  # rank r = 2 on q, v
    mask = _mask_of(setup, ctx)
    info = setup.info
    assert info["search_size"] == 4 and info["k"] == k
    assert count_params(setup.trainable[PEFT_KEY]) == 2 * k  # built at rank 2r
    assert sum(_split(mask).values()) == k  # exactly K, the head outside it
    assert info["trainable_entries"] == k + info["head_entries"]
    assert all(m.all() for m in jax.tree_util.tree_leaves(mask[HEAD_KEY]))
    # Square kernels: K = |B| at rank 2r, and A has zero Fisher (B = 0): B only.
    split = info["selection_split"]
    assert split["lora_A"]["selected"] == 0 and split["lora_B"]["selected"] == k
    assert split["lora_B"]["size"] == k and split["lora_B"]["selected_at_zero"] == 0
    assert info["zero_init_trap"] == ["lora_A"]
    assert "ZERO-INIT TRAP" in caplog.text and "split" in caplog.text


def test_fisher_after_warmup_selects_a_entries(tmp_path):
    ctx = _ctx(tmp_path)  # the default: Fisher after a (here 3-step) dense warm-up
    assert ctx.method.peft.fisher_after_warmup
    setup = get_method("lora_fish").setup(ctx)
    # The B matrices are scored away from their zero init: their scores are not all zero.
    scores = setup.info["selection_split"]
    assert scores["lora_B"]["selected"] - scores["lora_B"]["selected_at_zero"] > 0
    split = setup.info["selection_split"]
    assert split["lora_A"]["selected"] > 0 and split["lora_A"]["selected_at_zero"] == 0
    assert sum(_split(_mask_of(setup, ctx)).values()) == setup.info["k"]
    assert setup.info["zero_init_trap"] == []
    # Training starts from the initial tree: B is zero again.
    assert all(not np.any(x) for p, x in flatten_paths(setup.trainable[PEFT_KEY]).items()
               if p[-1] == "lora_B")


def test_per_type_budget_gives_each_type_its_target_count(tmp_path):
    ctx = _ctx(tmp_path, budget="per_type")
    setup = get_method("lora_fish").setup(ctx)
    want = type_counts(peft_shapes(setup.frozen, target_spec(setup.frozen, "lora",
                                                             ctx.method.peft)))
    assert _split(_mask_of(setup, ctx)) == want


@pytest.mark.parametrize("selection", ["fisher", "random", "reversed"])
@pytest.mark.parametrize("method", ["lora_fish", "dora_fish", "adapter_fish"])
def test_selection_rules_pick_exactly_k_and_same_seed_same_mask(method, selection, tmp_path):
    masks, ks = [], []
    for i, seed in enumerate((0, 0, 1) if selection == "random" else (0, 0)):
        ctx = _ctx(tmp_path / str(i), seed=seed, method=method, selection=selection)
        setup = get_method(method).setup(ctx)
        masks.append(_mask_of(setup, ctx))
        ks.append(setup.info["k"])
        assert sum(_split(masks[-1]).values()) == ks[-1]
    assert len(set(ks)) == 1
    for x, y in zip(*(jax.tree_util.tree_leaves(m) for m in masks[:2]), strict=True):
        np.testing.assert_array_equal(x, y)
    if selection == "random":
        assert any(np.any(x != y) for x, y in zip(
            *(jax.tree_util.tree_leaves(m) for m in (masks[0], masks[2])), strict=True))


def test_reversed_is_the_complement_order_of_fisher(tmp_path):
    at_init = {"fisher_after_warmup": False}
    fisher = get_method("lora_fish").setup(_ctx(tmp_path / "f", **at_init))
    rev = get_method("lora_fish").setup(_ctx(tmp_path / "r", selection="reversed", **at_init))
    # Fisher picks every lora_B entry; reversed picks the zero-scored lora_A entries.
    assert rev.info["selection_split"]["lora_B"]["selected"] == 0
    assert fisher.info["selection_split"]["lora_A"]["selected"] == 0


@pytest.mark.parametrize("k", [1, 9, 26])
def test_select_entries_takes_the_k_highest_or_lowest_scores(k):
    rng = np.random.default_rng(k)
    scores = {"a": rng.random((4, 5)), "b": rng.random(7)}  # distinct: no ties
    flat = np.concatenate([scores["a"].ravel(), scores["b"]])
    for selection in ("fisher", "reversed"):
        mask = select_entries(scores, {"all": k}, None, selection, jax.random.PRNGKey(0))
        chosen = np.concatenate([mask["a"].ravel(), mask["b"]])
        assert chosen.sum() == k
        rest = flat[~chosen]
        if selection == "fisher":
            assert flat[chosen].min() > (rest.max() if rest.size else -np.inf)
        else:
            assert flat[chosen].max() < (rest.min() if rest.size else np.inf)
    # Reversed order of the scores is Fisher order of their negatives.
    rev = select_entries(scores, {"all": k}, None, "reversed", jax.random.PRNGKey(0))
    neg = select_entries({n: -v for n, v in scores.items()}, {"all": k}, None, "fisher",
                         jax.random.PRNGKey(0))
    for n in scores:
        np.testing.assert_array_equal(rev[n], neg[n])


def test_adapter_fish_warns_about_down_projections(caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="fishjax"):
        setup = get_method("adapter_fish").setup(_ctx(tmp_path, method="adapter_fish",
                                                      fisher_after_warmup=False))
    split = setup.info["selection_split"]
    assert split["down/kernel"]["selected"] == split["down/kernel"]["selected_at_zero"]
    assert "down/kernel" in setup.info["zero_init_trap"]
    assert "ZERO-INIT TRAP" in caplog.text


# -- PEFT export (interop) -----------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_peft_export_loads_in_peft_with_equal_logits(kind, model_type, tiny_model_dir,
                                                     tmp_path):
    pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    import peft
    import transformers

    from conftest import build_tiny_model_dir
    from fishjax.methods.peft.peft_file import export_peft_folder
    from fishjax.models import load_model

    if model_type != "bert":  # RoBERTa's head is classifier.dense + classifier.out_proj
        tiny_model_dir = build_tiny_model_dir(str(tmp_path / "tiny"), model_type)
    model = load_model(tiny_model_dir, 2, key=jax.random.PRNGKey(0))
    head, base = split_tree(model.params, r"^classifier/")
    spec = PeftSpec(kind, 4, find_targets(base, kind, QV), scaling=16.0 / 2)  # rank 4, "r 2"
    tree = _perturb(init_peft(base, spec, jax.random.PRNGKey(1)), jax.random.PRNGKey(2), 0.05)
    head = _perturb(head, jax.random.PRNGKey(3))
    params = peft_combine(spec)({PEFT_KEY: tree, HEAD_KEY: head}, base)
    batch = _batch(vocab=model.config.vocab_size)
    ours = _logits(model.module, params, batch)

    out = export_peft_folder(str(tmp_path / "adapter"), tree, head, spec, model.config,
                             base_model=tiny_model_dir)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir).eval()
    pm = peft.PeftModel.from_pretrained(hf, out).eval()
    with torch.no_grad():
        inputs = {k: torch.from_numpy(batch[k].astype(np.int64))
                  for k in ("input_ids", "attention_mask", "token_type_ids")}
        theirs = pm(**inputs).logits.numpy()
        merged = pm.merge_and_unload()(**inputs).logits.numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(merged, ours, rtol=1e-4, atol=1e-5)
    assert np.abs(ours - _logits(model.module, model.params, batch)).max() > 1e-3


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_a_decoder_peft_export_loads_in_peft_with_equal_logits(kind, tiny_decoder_dir,
                                                               tmp_path):
    """LoRA/DoRA on a tiny Llama's q/k/v/o/gate/up/down, exported as a CAUSAL_LM adapter:
    PEFT on transformers' LlamaForCausalLM gives fishjax's logits (1e-4)."""
    pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    import peft
    import transformers

    from fishjax.methods.peft.peft_file import export_peft_folder
    from fishjax.models import load_model

    model = load_model(tiny_decoder_dir, None, key=jax.random.PRNGKey(0))
    targets = find_targets(model.params, kind, r"(self_attn|mlp)/\w+_proj/kernel$")
    assert len(targets) == 2 * 7
    spec = PeftSpec(kind, 4, targets, scaling=2.0)
    tree = _perturb(init_peft(model.params, spec, jax.random.PRNGKey(1)),
                    jax.random.PRNGKey(2), 0.05)
    params = peft_combine(spec)({PEFT_KEY: tree}, model.params)  # no head: a causal LM
    ids = np.random.default_rng(0).integers(3, model.config.vocab_size, (2, 9))
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # left padding
    ours = np.asarray(jax.jit(model.module.apply)({"params": params}, ids, mask))

    out = export_peft_folder(str(tmp_path / "adapter"), tree, {}, spec, model.config,
                             base_model=tiny_decoder_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_decoder_dir).eval()
    pm = peft.PeftModel.from_pretrained(hf, out).eval()
    inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
              "position_ids": torch.from_numpy(np.maximum(np.cumsum(mask, -1) - 1, 0))}
    with torch.no_grad():
        theirs = pm(**inputs).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(theirs[real], ours[real], rtol=1e-4, atol=1e-4)
    base = np.asarray(jax.jit(model.module.apply)({"params": model.params}, ids, mask))
    assert np.abs(ours - base).max() > 1e-3


# -- through the trainer --------------------------------------------------------------------


def _initial(config):
    from fishjax.models import load_model

    key = jax.random.split(jax.random.PRNGKey(config.seed), 3)[0]  # the trainer's head key
    return load_model(config.model.name, 2, key=key)


def _final_trainable(workdir):
    from fishjax.train.checkpoints import Checkpoints

    ckpt = Checkpoints(workdir)
    final = ckpt.restore_latest(None)["trainable"]
    ckpt.close()
    return final


def test_lora_trains_through_the_trainer_and_exports(tiny_config, tmp_path):
    from fishjax.methods.peft.peft_file import apply_peft_file, export_merged_peft, load_peft_file
    from fishjax.train.trainer import train_and_evaluate

    tiny_config.method.name = "lora"
    tiny_config.method.peft.rank = 2
    tiny_config.train.num_steps = 3
    tiny_config.train.export = True
    workdir = str(tmp_path / "lora")
    res = train_and_evaluate(tiny_config, workdir)
    summary = res["method_summary"]
    assert summary["peft_entries"] == LAYERS * 2 * 2 * (2 * HIDDEN)
    assert summary["trainable_entries"] == summary["peft_entries"] + summary["head_entries"]
    final = _final_trainable(workdir)
    assert any(np.any(x) for p, x in flatten_paths(final[PEFT_KEY]).items()
               if p[-1] == "lora_B")  # B left zero

    # Artefacts: the native file (+ head) and the PEFT folder; the merged HF export,
    # reloaded, gives the logits of the native file applied to the base model.
    art = res["artifacts"]
    assert os.path.isfile(os.path.join(art["peft_adapter"], "adapter_config.json"))
    tree, head, spec, meta = load_peft_file(art["peft"])
    assert spec.kind == "lora" and meta["base_model"] == tiny_config.model.name
    initial = _initial(tiny_config)
    from fishjax.models import load_model

    batch = _batch(vocab=initial.config.vocab_size)
    exported = load_model(res["export_dir"], 2, key=jax.random.PRNGKey(9))
    via_file = apply_peft_file(art["peft"], initial.params)
    np.testing.assert_allclose(_logits(exported.module, exported.params, batch),
                               _logits(initial.module, via_file, batch), atol=1e-6)
    merged_dir = export_merged_peft(art["peft"], str(tmp_path / "merged"))
    again = load_model(merged_dir, 2, key=jax.random.PRNGKey(9))
    np.testing.assert_array_equal(_logits(again.module, again.params, batch),
                                  _logits(exported.module, exported.params, batch))
    with pytest.raises(PeftError, match="fingerprint"):
        apply_peft_file(art["peft"], _perturb(initial.params, jax.random.PRNGKey(0)))

    # The adapter folder names a base PEFT can load by itself (a local model: its folder;
    # an alias: the Hub id of its weights) and pins it by the base's fingerprint.
    with open(os.path.join(art["peft_adapter"], "adapter_config.json")) as f:
        assert json.load(f)["base_model_name_or_path"] == os.path.abspath(
            tiny_config.model.name)
    from safetensors import safe_open

    from fishjax.methods.peft.peft_file import load_peft_file
    from fishjax.models.hub import peft_base_reference

    with safe_open(os.path.join(art["peft_adapter"], "adapter_model.safetensors"), "np") as f:
        pinned = f.metadata()["fishjax_base_fingerprint"]
    assert pinned == load_peft_file(art["peft"])[3]["base_fingerprint"]
    assert peft_base_reference("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert peft_base_reference("bert-base-uncased") == "bert-base-uncased"
    if importlib.util.find_spec("peft") and importlib.util.find_spec("torch"):
        import torch
        from peft import AutoPeftModelForSequenceClassification

        pm = AutoPeftModelForSequenceClassification.from_pretrained(
            art["peft_adapter"]).eval()
        with torch.no_grad():
            theirs = pm(**{k: torch.from_numpy(batch[k].astype(np.int64)) for k in
                           ("input_ids", "attention_mask", "token_type_ids")}).logits.numpy()
        np.testing.assert_allclose(theirs, _logits(exported.module, exported.params, batch),
                                   rtol=1e-4, atol=1e-5)


def test_adapter_fish_trains_only_selected_entries(tiny_config, tmp_path):
    from fishjax.artifacts.mask_file import load_mask
    from fishjax.methods.peft.peft_file import apply_peft_file
    from fishjax.train.trainer import train_and_evaluate

    tiny_config.method.name = "adapter_fish"
    tiny_config.method.peft.adapter_size = 2
    tiny_config.method.fisher.num_samples = 16
    tiny_config.train.num_steps = 3
    tiny_config.train.export = True  # skipped: adapters have no plain HF form
    workdir = str(tmp_path / "adapter_fish")
    res = train_and_evaluate(tiny_config, workdir)
    assert res["export_dir"] is None
    summary = res["method_summary"]
    k = summary["k"]
    assert k == LAYERS * 2 * (2 * HIDDEN * 2 + 2 + HIDDEN)  # houlsby, b = 2
    assert summary["trainable_entries"] == k + summary["head_entries"]
    initial_model = _initial(tiny_config)
    head, base = split_tree(initial_model.params, tiny_config.method.head_regex)
    spec = target_spec(base, "adapter", tiny_config.method.peft).resized(4)
    start = {PEFT_KEY: init_peft(base, spec, jax.random.split(
        jax.random.split(jax.random.PRNGKey(tiny_config.seed), 3)[2])[0]), HEAD_KEY: head}
    mask, _ = load_mask(os.path.join(workdir, "mask.safetensors"), start)
    final = _final_trainable(workdir)
    moved = 0
    start_flat, final_flat = flatten_paths(start), flatten_paths(final)
    assert set(start_flat) == set(final_flat) == set(flatten_paths(mask))
    for p, m in flatten_paths(mask).items():
        changed = np.asarray(start_flat[p]) != np.asarray(final_flat[p])
        assert not (changed & ~m).any(), f"{p}: unselected entries moved"
        moved += int(changed[m].sum()) if p[0] == PEFT_KEY else 0
    assert moved > 0.5 * k
    # The artefact holds the trained adapters and head; applied to the base it gives
    # the trained model's logits.
    batch = _batch(vocab=initial_model.config.vocab_size)
    params = apply_peft_file(res["artifacts"]["peft"], initial_model.params)
    combined = peft_combine(spec)(jax.tree_util.tree_map(np.asarray, final), base)
    np.testing.assert_array_equal(_logits(initial_model.module, params, batch),
                                  _logits(initial_model.module, combined, batch))
    # Rerunning the finished workdir reuses the saved selection.
    again = train_and_evaluate(tiny_config, workdir)
    assert again["method_summary"]["mask_loaded_from"].endswith("mask.safetensors")
    assert again["method_summary"]["selection_split"] == summary["selection_split"]


def test_bad_peft_config_is_refused():
    from configs import default
    from fishjax.core.errors import ConfigError
    from fishjax.train.validation import validate_config

    config = default.get_config()
    config.method.name = "lora_fish"
    config.method.peft.selection = "best"
    with pytest.raises(ConfigError, match="selection"):
        validate_config(config)
    config.method.peft.selection = "fisher"
    config.method.peft.rank = 0
    with pytest.raises(ConfigError, match="rank"):
        validate_config(config)


def test_random_tie_break_is_seeded_and_keeps_the_score_order():
    from fishjax.selection.topk import top_k_mask

    scores = {"a": np.array([3.0, 0, 0, 0, 0, 0]), "b": np.array([0, 2.0, 0, 0, 0, 0])}
    masks = [top_k_mask(scores, 4, tie_key=jax.random.PRNGKey(s)) for s in (0, 0, 1, 2, 3)]
    for m in masks:
        assert m["a"][0] and m["b"][1] and m["a"].sum() + m["b"].sum() == 4
    np.testing.assert_array_equal(masks[0]["a"], masks[1]["a"])
    assert len({(tuple(m["a"]), tuple(m["b"])) for m in masks}) > 1  # ties differ by key
    by_position = top_k_mask(scores, 4)
    assert list(by_position["a"]) == [True, True, True, False, False, False]


def test_bad_spec_and_file_inputs_raise_peft_error(tmp_path):
    import json

    from safetensors.numpy import save_file

    from fishjax.methods.peft.peft_file import META_KEY, export_merged_peft, load_peft_file

    for size in (None, "x", 0, 2.5):
        with pytest.raises(PeftError, match="positive int"):
            PeftSpec("lora", size, ("encoder/layer_0/attention/self/query",))
    with pytest.raises(PeftError, match="tuple of module paths"):
        PeftSpec("lora", 2, "encoder/layer_0/attention/self/query")
    meta = {"format_version": 1, "spec": {"kind": "lora", "size": 2}, "head": [],
            "base_fingerprint": "0"}
    path = str(tmp_path / "bad.safetensors")
    save_file({"peft/q/lora_A": np.zeros((2, 2), np.float32)}, path,
              metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(PeftError, match="malformed PEFT spec"):
        load_peft_file(path)
    meta["spec"] = {"kind": "lora", "size": 2, "targets": ["q"], "scaling": 1.0}
    meta["base_model"] = "minilm-l6"  # never loaded: num_labels is checked first
    save_file({"peft/q/lora_A": np.zeros((2, 2), np.float32)}, path,
              metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(PeftError, match="num_labels"):
        export_merged_peft(path, str(tmp_path / "merged"))
