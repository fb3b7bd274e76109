"""Multi-source selection: projection, per-example features, log-odds, the solver against
scikit-learn / scipy, vmapped estimates, scores, row splits, and a run end to end (tiny)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from benchmarks.common.tiny_model import make_tiny_config
from fishjax import objectives
from fishjax.core.errors import ConfigError, DataError
from fishjax.core.tree import flatten_paths, merge_trees, split_tree
from fishjax.data.metrics import auroc, spearman
from fishjax.data.row_split import make_row_split, save_row_split
from fishjax.methods.peft.method import peft_combine
from fishjax.models import EncoderConfig, SequenceClassifier, init_params
from fishjax.params.peft import PeftSpec, find_targets, init_peft
from fishjax.selection import multisource as ms

QV = r"attention/self/(query|value)/kernel$"


def _tree(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": {"w": rng.normal(size=(30, 7)).astype(np.float32)},
            "b": rng.normal(size=(11,)).astype(np.float32)}


# -- projection -------------------------------------------------------------------------------


def test_projection_entries_are_signs_over_sqrt_p_and_seeded():
    tree = _tree()
    p = 16
    a = ms.make_projection(tree, p, jax.random.PRNGKey(0))
    b = ms.make_projection(tree, p, jax.random.PRNGKey(0))
    c = ms.make_projection(tree, p, jax.random.PRNGKey(1))
    blocks = [np.asarray(a.block(i)) for i in range(len(a.sizes))]
    assert [x.shape for x in blocks] == [(210, p), (11, p)]  # paths sorted: a/w, b
    for x in blocks:
        np.testing.assert_array_equal(np.abs(x), 1 / np.sqrt(p))
        assert 0.3 < np.mean(x > 0) < 0.7
    for i in range(2):
        np.testing.assert_array_equal(a.block(i), b.block(i))
        assert np.any(np.asarray(a.block(i)) != np.asarray(c.block(i)))
    blockwise = ms.make_projection(tree, p, jax.random.PRNGKey(0), max_bytes=0)
    assert blockwise.blocks is None
    for i in range(2):  # regenerated leaf by leaf: the same matrix
        np.testing.assert_array_equal(blockwise.block(i), a.block(i))
    np.testing.assert_allclose(blockwise.gram, a.gram, rtol=1e-6)
    full = np.concatenate(blocks)
    np.testing.assert_allclose(a.gram, full.T @ full, rtol=1e-5, atol=1e-4)
    theta = np.arange(p, dtype=np.float32)
    lifted = a.lift(theta)  # P theta, shaped like the tree
    assert lifted["a"]["w"].shape == (30, 7)
    np.testing.assert_allclose(np.concatenate([np.ravel(lifted["a"]["w"]), lifted["b"]]),
                               full @ theta, rtol=1e-5)


def test_projection_preserves_inner_products_within_one_over_sqrt_p():
    d, p = 4000, 400
    tree = {"x": np.zeros(d, np.float32)}
    proj = ms.make_projection(tree, p, jax.random.PRNGKey(3))
    big = np.asarray(proj.block(0))
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(20):
        u, v = rng.normal(size=d), rng.normal(size=d)
        got = (big.T @ u) @ (big.T @ v)
        errors.append(abs(got - u @ v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    assert np.max(errors) < 4 / np.sqrt(p)  # O(1/sqrt(p)), with margin
    assert np.mean(errors) > 0.1 / np.sqrt(p)  # and not exact: it is a random projection


# -- log-odds and features -------------------------------------------------------------------


def test_log_odds_is_stable_and_matches_the_probability():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 50)
    f = np.asarray(objectives.log_odds(jnp.asarray(logits), jnp.asarray(labels)))
    prob = np.asarray(jax.nn.softmax(logits))[np.arange(50), labels]
    np.testing.assert_allclose(f, np.log(prob / (1 - prob)), rtol=1e-4, atol=1e-5)
    huge = np.asarray(objectives.log_odds(jnp.asarray([[1000.0, -1000.0]]), jnp.asarray([0])))
    assert np.isfinite(huge).all() and abs(huge[0] - 2000.0) < 1e-3  # no overflow, no clip


@pytest.fixture(scope="module")
def tiny_lora():
    cfg = EncoderConfig.tiny()
    module = SequenceClassifier(cfg, 2)
    params = init_params(cfg, 2, jax.random.PRNGKey(0))
    head, base = split_tree(params, r"^classifier/")
    spec = PeftSpec("lora", 2, find_targets(base, "lora", QV), scaling=2.0)
    tree = jax.tree_util.tree_map(lambda x: x + 0.05, init_peft(base, spec,
                                                                jax.random.PRNGKey(1)))
    trainable = {"peft": tree, "head": head}
    combine = peft_combine(spec)
    log_odds = objectives.make_feature_fn(module, objectives.SequenceClassification())

    def output(params, batch):
        return log_odds(combine(params["trainable"], params["frozen"]), batch)

    return output, {"trainable": trainable, "frozen": base}


def _batches(n=10, b=4, s=9):
    rng = np.random.default_rng(5)
    out, seen = [], 0
    while seen < n:
        rows = min(b, n - seen)
        w = np.zeros(b, np.float32)
        w[:rows] = 1
        out.append({"input_ids": rng.integers(5, 100, (b, s)).astype(np.int32),
                    "attention_mask": np.ones((b, s), np.int32),
                    "token_type_ids": np.zeros((b, s), np.int32),
                    "labels": rng.integers(0, 2, b).astype(np.int32), "weights": w,
                    "example_ids": np.where(w > 0, np.arange(seen, seen + b), -1)})
        seen += rows
    return out


def _eligible(params):
    return {"trainable": jax.tree_util.tree_map(lambda _: True, params["trainable"]),
            "frozen": jax.tree_util.tree_map(lambda _: False, params["frozen"])}


@pytest.fixture(scope="module")
def single_example_gradients(tiny_lora):
    """(output, flat gradient) of each example alone, in order: the brute force, computed
    once (jitted) for every engine setting below."""
    output, params = tiny_lora
    on, off = split_tree(params, _eligible(params))
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda on, one: output(merge_trees(on, off), one)[0]))
    out = []
    for batch in _batches():
        for r in range(int(batch["weights"].sum())):
            one = {k: v[r:r + 1] for k, v in batch.items() if k != "example_ids"}
            f, g = value_and_grad(on, one)
            out.append((float(f), np.concatenate([np.asarray(x).ravel() for _, x in
                                                  sorted(flatten_paths(g).items())])))
    return out


@pytest.mark.parametrize("chunk,max_bytes", [(1, 1 << 30), (2, 1 << 30), (1, 0)])
def test_features_equal_a_loop_of_single_example_gradients(tiny_lora, single_example_gradients,
                                                           chunk, max_bytes):
    output, params = tiny_lora
    eligible = _eligible(params)
    on, _ = split_tree(params, eligible)
    proj = ms.make_projection(on, 12, jax.random.PRNGKey(2), max_bytes=max_bytes)
    feats = ms.gradient_features(output, params, _batches(), proj, eligible=eligible,
                                 chunk_size=chunk, progress=False)
    assert feats.ids.tolist() == list(range(10)) and feats.g.shape == (10, 12)
    big = np.concatenate([np.asarray(proj.block(i)) for i in range(len(proj.sizes))])
    assert len(single_example_gradients) == 10
    for i, (f, flat) in enumerate(single_example_gradients):
        np.testing.assert_allclose(feats.f[i], f, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(feats.g[i], flat @ big, rtol=1e-4, atol=1e-5)


# -- the solver -------------------------------------------------------------------------------


def _synthetic(n=300, p=15, k=6, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, p)).astype(np.float32)
    f0 = rng.normal(size=n).astype(np.float32)
    return g, f0, rng.integers(0, k, n), k


@pytest.mark.parametrize("c", [0.01, 0.3, 2.0])
def test_solver_matches_scikit_learn_without_offsets(c):
    lm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 12))
    y = np.where(x @ rng.normal(size=12) + rng.normal(size=400) > 0, 1, 0)
    ref = lm.LogisticRegression(C=c, fit_intercept=False, tol=1e-12, max_iter=10_000).fit(x, y)
    g = ((2 * y - 1)[:, None] * x).astype(np.float32)  # labels folded into the features
    theta, _ = ms.fit_subsets(jnp.asarray(g), jnp.zeros(400), jnp.ones((1, 400)),
                              ms.source_grams(jnp.asarray(g), np.zeros(400, int), 1),
                              jnp.ones((1, 1)), c)
    want = ref.coef_[0]
    assert np.linalg.norm(np.asarray(theta[0]) - want) / np.linalg.norm(want) < 1e-4


@pytest.mark.parametrize("c", [1e-4, 0.1, 1.0])
def test_solver_with_offsets_matches_a_reference_minimiser(c):
    g, f0, source_of, k = _synthetic()
    subsets = ms.sample_subsets(k, 4, 0.5, 0)
    weights = ms.subset_weights(subsets, source_of)
    theta, last = ms.fit_subsets(jnp.asarray(g), jnp.asarray(f0), jnp.asarray(weights),
                                 ms.source_grams(jnp.asarray(g), source_of, k),
                                 jnp.asarray(subsets), c)
    assert np.max(np.asarray(last)) < 1e-5
    for s in range(4):
        w = weights[s].astype(np.float64)
        g64 = g.astype(np.float64)

        def jac(t, *_, w=w, g64=g64):
            return t - c * (g64.T @ (w / (1 + np.exp(f0 + g64 @ t))))

        ref = minimize(ms.objective, np.zeros(g.shape[1]), args=(g, f0, w, c), jac=jac,
                       method="L-BFGS-B", options={"gtol": 1e-13, "ftol": 1e-16,
                                                   "maxiter": 10_000})
        rel = np.linalg.norm(np.asarray(theta[s]) - ref.x) / np.linalg.norm(ref.x)
        assert rel < 1e-4, (s, rel)
        assert ms.objective(theta[s], g, f0, w, c) <= ms.objective(ref.x, g, f0, w, c) + 1e-6


def test_vmapped_estimates_equal_one_at_a_time():
    g, f0, source_of, k = _synthetic()
    rng = np.random.default_rng(2)
    src = ms.Features(np.arange(len(f0)), f0, g, 0.0)
    tgt = ms.Features(np.arange(40), rng.normal(size=40).astype(np.float32),
                      rng.normal(size=(40, g.shape[1])).astype(np.float32), 0.0)
    gram = np.eye(g.shape[1], dtype=np.float32) * 3.0
    subsets = ms.sample_subsets(k, 7, 0.5, 3)
    together = ms.estimate_subsets(src, source_of, tgt, subsets, gram, 0.5, c=0.3)
    for s in range(7):
        alone = ms.estimate_subsets(src, source_of, tgt, subsets[s:s + 1], gram, 0.5, c=0.3)
        np.testing.assert_allclose(together.theta[s], alone.theta[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together.target_loss[s], alone.target_loss[0], rtol=1e-5)
    # |P theta'| = step_norm, with |P theta|^2 = theta^T gram theta.
    norms = np.sqrt(np.einsum("mp,pq,mq->m", together.theta * together.scale[:, None], gram,
                              together.theta * together.scale[:, None]))
    np.testing.assert_allclose(norms, 0.5, rtol=1e-4)


# -- subsets and scores -----------------------------------------------------------------------


def test_subsets_scores_and_selection_rules():
    subsets = ms.sample_subsets(10, 400, 0.5, 0)
    assert subsets.shape == (400, 10) and np.all(subsets.sum(axis=1) == 5)
    np.testing.assert_array_equal(subsets, ms.sample_subsets(10, 400, 0.5, 0))
    effect = np.linspace(-1.0, 1.0, 10)  # source 0 helps most, source 9 hurts most
    losses = subsets.astype(float) @ effect + 2.0
    ens = ms.ensemble_scores(subsets, losses)  # noisy: the co-members' effects average in
    assert spearman(ens, effect) > 0.9 and np.argmin(ens) == 0 and np.argmax(ens) == 9
    np.testing.assert_allclose(ms.ridge_scores(subsets, losses, lam=1e-6), effect, atol=1e-6)
    assert ms.top_sources(ens, 3, lower_is_better=True) == [0, 1, 2]
    chosen = ms.forward_selection(lambda a: a.astype(float) @ effect, 10, 4)
    assert chosen == [0, 1, 2, 3]
    assert ms.keep_count(20, 0.6) == 12 and ms.keep_count(3, 0.01) == 1


def test_auroc():
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(auroc(np.array([0.5, 0.6]), np.array([1, 1])))


# -- row splits and the run -------------------------------------------------------------------


def test_row_split_trains_on_its_rows_with_flips_and_validates_on_held_out(tiny_config,
                                                                          tmp_path):
    from fishjax.train.trainer import Trainer

    split = make_row_split(train=list(range(0, 40)), flip=[0, 1, 2],
                           validation=list(range(60, 80)))
    path = save_row_split(str(tmp_path / "rows.json"), split)
    tiny_config.data.row_split = path
    tiny_config.train.num_steps = 1
    trainer = Trainer(tiny_config, str(tmp_path / "run"))
    assert len(trainer.data.train) == 40
    assert list(trainer.data.evals) == ["dev", "validation"]
    assert len(trainer.data.evals["validation"]) == 20
    plain = Trainer(tiny_config.copy_and_resolve_references() if False else _no_split(
        tiny_config), str(tmp_path / "plain"))
    np.testing.assert_array_equal(trainer.data.train.labels[3:],
                                  plain.data.train.labels[3:40])
    np.testing.assert_array_equal(trainer.data.train.labels[:3],
                                  1 - plain.data.train.labels[:3])
    metrics = trainer.evaluate()
    assert "validation/accuracy" in metrics and "dev/accuracy" in metrics
    with pytest.raises(DataError, match="not in `train`"):
        make_row_split(train=[1, 2], flip=[3])
    with pytest.raises(DataError, match="also `train`"):
        make_row_split(train=[1, 2], validation=[2])


def _no_split(config):
    c = config.copy_and_resolve_references()
    c.data.row_split = None
    return c


def test_peft_init_from_starts_from_the_saved_tree(tiny_config, tmp_path):
    from fishjax.methods.peft.peft_file import load_peft_file
    from fishjax.train.trainer import Trainer, train_and_evaluate

    tiny_config.method.name = "lora"
    tiny_config.method.peft.rank = 2
    tiny_config.train.num_steps = 2
    train_and_evaluate(tiny_config, str(tmp_path / "a"))
    saved = str(tmp_path / "a" / "peft.safetensors")
    tree, head, _, _ = load_peft_file(saved)
    tiny_config.method.peft.init_from = saved
    trainer = Trainer(tiny_config, str(tmp_path / "b"))
    for p, x in flatten_paths(tree).items():
        np.testing.assert_array_equal(np.asarray(flatten_paths(trainer.setup.trainable["peft"])[p]),
                                      x)
    tiny_config.method.peft.rank = 3
    with pytest.raises(Exception, match="holds a"):
        Trainer(tiny_config, str(tmp_path / "c"))


def test_select_sources_end_to_end_on_the_tiny_model(tiny_selection):
    from fishjax.select_sources import RULES, SourceSelection, read_selection_file, select_sources

    config, workdir, out = tiny_selection
    pool = read_selection_file(os.path.join(workdir, "pool.json"))
    assert len(pool["sources"]) == 4 and len(pool["noisy"]) == 1
    target = set(pool["target"])
    assert not target & {r for rows in pool["sources"].values() for r in rows}
    est = read_selection_file(os.path.join(workdir, "estimates.json"))
    assert len(est["subsets"]) == 32 and all(len(x) == 2 for x in est["subsets"])
    assert np.all(np.isfinite(est["target_loss"]))
    ranking = read_selection_file(os.path.join(workdir, "ranking.json"))
    assert set(ranking) == set(RULES)
    for rule, entry in ranking.items():
        assert 0.0 <= entry["noisy_auroc"] <= 1.0
        assert len(entry["kept"]) == 2 or rule == "forward"  # the one pass keeps its own
    assert out["selection"]["sources"] == ranking["ensemble"]["kept"]
    assert "validation/loss" in out["final"]["final_eval"]
    again = select_sources(config, workdir)  # resumes: every file reused
    assert again["selection"] == out["selection"]
    by_accuracy = config.copy_and_resolve_references()  # an estimate setting: the trained
    by_accuracy.sources.score_metric = "accuracy"  # parts serve it, nothing is retrained
    again = select_sources(by_accuracy, workdir)
    assert len(again["selection"]["sources"]) == 2
    changed = config.copy_and_resolve_references()
    changed.sources.groups = 5
    with pytest.raises(ConfigError, match="other settings"):
        select_sources(changed, workdir)
    sel = SourceSelection(config, workdir)  # a run name reused for other sources: refused
    names = sel.pool().names
    with pytest.raises(ConfigError, match="trained on other sources"):
        sel.finetune("meta", names[:1], 1.0, from_meta=False)


def test_bad_settings_are_refused_before_training_and_a_fix_reruns(tiny_model_dir, tmp_path):
    from configs.select_sources import get_config as selection_config
    from fishjax.methods.peft.peft_file import PEFT_FILE
    from fishjax.select_sources import SourceSelection

    config = make_tiny_config(tiny_model_dir, str(tmp_path / "cache"))
    config.method.name = "lora"
    config.sources = selection_config().sources
    config.sources.groups, config.sources.subset_fraction = 4, 0.1  # 0 sources per subset
    workdir = str(tmp_path / "run")
    with pytest.raises(ConfigError, match="subset_fraction 0.1 of 4 sources gives 0"):
        SourceSelection(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "settings.json"))
    config.sources.subset_fraction = 0.5
    SourceSelection(config, workdir)  # writes its settings, then (say) fails later
    config.sources.project_dim = 7  # the corrected rerun: nothing was trained, so it may
    SourceSelection(config, workdir)
    os.makedirs(os.path.join(workdir, "meta"))
    open(os.path.join(workdir, "meta", PEFT_FILE), "wb").close()  # once training finished,
    config.sources.num_subsets = 9  # an estimate setting may still change,
    SourceSelection(config, workdir)
    config.sources.project_dim = 9  # another setting is refused
    with pytest.raises(ConfigError, match=r"other settings \(\['sources'\]\)"):
        SourceSelection(config, workdir)


def test_features_of_a_flipped_row_use_its_flipped_label(tiny_selection):
    """A noisy source's rows are featurised with the labels they are trained with (flipped):
    f of a flipped row is the log-odds of its flipped label, -f of its clean one (two
    classes); a clean row's f is the log-odds of its own label."""
    from fishjax.data import get_task, index_batches
    from fishjax.select_sources import SourceSelection
    from fishjax.train.task_data import load_raw_splits

    config, workdir, _ = tiny_selection
    sel = SourceSelection(config, workdir)
    pool = sel.pool()
    src, _, _, _ = sel.features()
    parts = sel.model_parts()
    task = get_task(config.task)
    clean = load_raw_splits(config, task)[task.train_split].labels  # no row split: as filed
    flipped = sorted(pool.flipped())
    kept = sorted(set(r for rows in pool.sources.values() for r in rows) - set(flipped))
    assert flipped and kept
    rows = np.asarray(flipped[:6] + kept[:6])
    output = jax.jit(parts.output)
    for batch in index_batches(parts.train, rows, 4):
        all_ids = batch.pop("example_ids")
        ids = all_ids[all_ids >= 0]
        batch["labels"] = clean[np.maximum(all_ids, 0)].astype(batch["labels"].dtype)
        f_clean = np.asarray(output(parts.params, batch))[:len(ids)]
        want = np.where(np.isin(ids, flipped), -f_clean, f_clean)
        np.testing.assert_allclose(src.rows(ids).f, want, atol=1e-4, err_msg=f"rows {ids}")


def test_shard_pool_cuts_task_blocks_and_flips_a_share_of_each_noisy_shard():
    from fishjax.select_sources import ShardSpec, make_shard_pool

    blocks = {"sst2": (0, 100), "mrpc": (100, 130)}
    specs = [ShardSpec.parse(e) for e in ("sst2:3:20:0", "sst2:2:10:0.5", "mrpc:2:15:0")]
    pool = make_shard_pool(blocks, "sst2", specs, 0.1, seed=0)
    assert pool.names == ["mrpc-00", "mrpc-01", "sst2-00", "sst2-01", "sst2-02",
                          "sst2-flip50-03", "sst2-flip50-04"]
    assert len(pool.target) == 10 and all(r < 100 for r in pool.target)
    rows = [r for n in pool.names for r in pool.sources[n]]
    assert len(rows) == len(set(rows)) and not set(rows) & set(pool.target)
    assert all(100 <= r < 130 for n in ("mrpc-00", "mrpc-01") for r in pool.sources[n])
    assert pool.noisy == ["sst2-flip50-03", "sst2-flip50-04"]
    for name in pool.noisy:
        assert len(pool.flips[name]) == 5 and set(pool.flips[name]) <= set(pool.sources[name])
    assert pool.flipped() == {r for n in pool.noisy for r in pool.flips[n]}
    assert make_shard_pool(blocks, "sst2", specs, 0.1, seed=0) == pool  # seeded
    with pytest.raises(ConfigError, match="'mrpc' has 0 rows left for shard mrpc-02"):
        make_shard_pool(blocks, "sst2", specs + [ShardSpec.parse("mrpc:1:5:0")], 0.1, 0)
    with pytest.raises(ConfigError, match="no rows in the pooled"):
        make_shard_pool(blocks, "sst2", [ShardSpec.parse("rte:1:5:0")], 0.1, 0)
    with pytest.raises(ConfigError, match="'task:count:rows:flip'"):
        ShardSpec.parse("sst2:3:20:1.5")


def test_forward_one_pass_keeps_a_source_when_the_score_does_not_drop():
    """The reference's pass: in index order, a source stays if the set's score with it is
    at least the best so far (ties stay)."""
    value = np.asarray([0.5, -0.2, 0.0, 0.3, -0.1])  # each source's additive effect
    calls = []

    def estimate(subsets):
        calls.append(subsets.copy())
        return subsets.astype(float) @ value

    assert ms.forward_one_pass(estimate, 5) == [0, 2, 3]
    assert len(calls) == 5 and all(c.shape == (1, 5) for c in calls)


def test_shard_sources_span_the_target_task_and_a_mixed_task(tiny_model_dir, tmp_path):
    """Kind "shards" on the tiny model: the quickstart rows and a mixed-in MRPC block."""
    from configs.select_sources import get_config as selection_config
    from fishjax.select_sources import SourceSelection

    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    (mrpc / "train.tsv").write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
        f"{k % 2}\t{k}\t{k}\tfirst {k} .\tsecond {k} .\n" for k in range(12)))
    config = make_tiny_config(tiny_model_dir, str(tmp_path / "cache"))
    config.method.name = "lora"
    config.data.mix = (f"mrpc:all:{mrpc}",)
    config.sources = selection_config().sources
    config.sources.kind = "shards"
    config.sources.shards = ("quickstart:3:20:0", "quickstart:1:20:0.5", "mrpc:2:6:0")
    pool = SourceSelection(config, str(tmp_path / "run")).pool()
    n_own = config.data.max_train_samples
    assert pool.names == ["mrpc-00", "mrpc-01", "quickstart-00", "quickstart-01",
                          "quickstart-02", "quickstart-flip50-03"]
    assert all(r >= n_own for n in ("mrpc-00", "mrpc-01") for r in pool.sources[n])
    assert len(pool.flipped()) == 10 and pool.noisy == ["quickstart-flip50-03"]
    assert len(pool.target) == round(0.1 * n_own)
