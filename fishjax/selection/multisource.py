"""Multi-source selection: which auxiliary sources help a target, by a first-order estimate.

Design note. Li, Zhang, Wang & Zhang (2024), "Scalable Fine-tuning from Multiple Data
Sources: A First-Order Approximation Approach" (arXiv 2409.19458; reference code
VirtuosoResearch/Scalable-finetuning). Instead of fine-tuning on every candidate subset of
n sources, train once on all of them (a meta-initialisation phi*), take each example's
gradient there, and estimate the model fine-tuned on a subset S by a small regression on
the (randomly projected) gradients of S's examples; read the target's loss off to first
order. The functions here are the pure steps; `fishjax.select_sources` drives them.

- Output: f = the log-odds of the correct label (the classification objective's
  `feature_output`, `fishjax.objectives.log_odds`; sigmoid(f) is the label's probability,
  so the loss is softplus(-f)). The reference differentiates the per-token logit of the
  label token's probability (shifted by 1e-3), averaged over the answer's tokens: the same
  quantity for a one-token answer. A decoder's output (`fishjax.objectives.causal_lm`):
  f = logit(exp(l)), l the mean log-likelihood of the reference answer's tokens, so that
  softplus(-f) = -l exactly: the fit below sees each example's target log-likelihood, and
  linearising f rather than l keeps the estimated loss bounded below (a linearised l could
  rise past 0). The reference differentiates the mean over tokens of each token's own
  log-odds, logit(p_t + 1e-3), instead: the two agree for a one-token answer and rank
  alike when the answer's tokens move together; ours is the one whose loss is the
  log-likelihood the fine-tunes maximise, so an estimated target loss compares with a
  true one directly (the benchmark's Spearman). Corrupted sources of instruction tasks
  have their targets shuffled across their rows (`fishjax.data.row_split`), and are
  featurised with the targets they are trained with.
- Features: per example, f* = f(phi*) and g~ = P^T grad f(phi*), P a seeded Rademacher
  matrix [d, p] with entries +-1/sqrt(p) (E[P P^T] = I: inner products are preserved in
  expectation, within O(1/sqrt(p)) for one draw), over the adapter's weights only by
  default (the reference's choice; `sources.features_with_head` adds the classifier head).
  One pass of the per-example engine (`fishjax.selection.per_example`), chunked; P is
  generated per parameter leaf from the key, held whole only when it fits
  `max_projection_bytes`, else regenerated leaf by leaf inside each step (never a dense
  d x p matrix then). Labels are those the runs train with (a noisy source's flipped ones).
- Fit of a subset S (rows w in {0,1} over the pooled examples): L2-regularised logistic
  regression with offsets, min_theta 0.5 |theta|^2 + C sum_i w_i softplus(-(f*_i + g~_i theta))
  (the paper: fine-tuning on S raises the log-odds of S's labels; f*_i + g~_i theta is
  f_i at phi* + P theta to first order). `offsets=False` is the reference code's variant:
  no offsets (its random 70/30 labels with sign-flipped features are the same objective up
  to an intercept, which it discards; we fit none), with its C = 1e-4 as our default
  either way. The reference fits on 80% of S's rows (the rest only prints a score); we fit
  on all of them. Solved by Boehning's majorise-minimise iteration (the logistic curvature
  <= 1/4: each step solves with I + C/4 G^T diag(w) G, computed once per subset from
  per-source Gram matrices; monotone, no step size to tune), then a few Newton steps
  (conjugate gradient preconditioned by that bound) for the last digits; `jax.vmap` over
  the subsets, one compiled call for all of them (the reference: one liblinear fit each).
- Estimate: Delta = P theta rescaled to |Delta| = c |phi*| (c calibrated on a few true
  fine-tunes from phi*, then frozen; the reference sets c by hand: 0.4 in its scripts,
  0.05 by default); the target's f_hat = f* + g~ theta', its loss mean softplus(-f_hat) and
  accuracy mean [f_hat > 0] (exact for two classes). The reference instead evaluates the
  model at phi* + Delta on its test set (generation): exact in Delta, one forward pass per
  subset; ours is first order in Delta and costs no forward pass.
- Subsets and scores: m subsets of round(fraction n) sources each, uniformly at random
  (seeded); a source's random-ensemble score is the mean estimated target score over the
  subsets that contain it. The score is minus the loss by default, the accuracy (the
  reference's task metric) as `score_metric="accuracy"`: on 30 true fine-tunes per design
  the estimated loss ranked subsets with Spearman 0.91 (MRPC) and 0.94 (SST-2), the
  estimated accuracy with -0.61 and 0.19 (a mean of thresholded outputs near the decision
  boundary: too coarse and biased to rank by). The top `keep_fraction` is kept (the
  reference writes one file per share in 0.70-0.95 and leaves the choice open; the
  benchmark scans it). Also: a ridge surrogate on the 0/1 indicators; forward selection as
  the reference does it (`forward_one_pass`: one pass in source order, a source kept when
  the set's score does not drop) and greedy best-first (`forward_selection`); the baseline
  scores sources by the cosine of their mean projected gradient with the target's.
- Sources: the reference clusters examples (agglomerative, cosine) into 100 groups; ours
  are given (groups of the target task or shards of several tasks, `fishjax.select_sources`).
  Meta-initialisation as the reference's: LoRA r16, alpha 128 on q/k/v, AdamW 3e-4, weight
  decay 1e-4, 20 epochs (it uses the 18th epoch's checkpoint, picked on test accuracy; ours
  keeps the epoch best on the target rows with `sources.checkpoint="best"`, the GLUE
  designs' setting, or the last one with "last", the Natural Instructions design's); ours
  keeps fishjax's warm-up and linear decay.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import FishjaxError
from fishjax.core.tree import PyTree, flatten_paths, merge_trees, unflatten_paths
from fishjax.selection.per_example import PassOutput, example_pass

Batch = dict[str, Any]
DEFAULT_C = 1e-4


class SourceSelectionError(FishjaxError):
    """Bad arguments to multi-source selection (shapes, sizes, options)."""


# -- projection ---------------------------------------------------------------------------


def rademacher_block(key: jax.Array, index: int, size: int, p: int) -> jax.Array:
    """Leaf `index`'s rows of P: [size, p], entries +-1/sqrt(p) (traceable; seeded)."""
    signs = jax.random.rademacher(jax.random.fold_in(key, index), (size, p), jnp.float32)
    return signs / jnp.sqrt(jnp.float32(p))


@dataclasses.dataclass(frozen=True)
class Projection:
    """P [d, p] as per-leaf row blocks of a params tree (leaves in sorted path order)."""

    key: jax.Array
    p: int
    sizes: tuple[tuple[tuple[str, ...], int], ...]  # (leaf path, entries), sorted
    shapes: dict  # {leaf path: shape}
    blocks: dict | None  # {path: [size, p]} when held whole, else None (regenerated)
    gram: np.ndarray  # P^T P [p, p], for |P theta|

    @property
    def dim(self) -> int:
        return sum(n for _, n in self.sizes)

    def block(self, i: int) -> jax.Array:
        path, size = self.sizes[i]
        return self.blocks[path] if self.blocks is not None else rademacher_block(
            self.key, i, size, self.p)

    def lift(self, theta: Any) -> dict:
        """P theta as a tree shaped like the projected params (a direction Delta)."""
        theta = jnp.asarray(theta, jnp.float32)
        return unflatten_paths({path: (self.block(i) @ theta).reshape(self.shapes[path])
                                for i, (path, _) in enumerate(self.sizes)})


def make_projection(tree: PyTree, p: int, key: jax.Array,
                    max_bytes: int = 1 << 30) -> Projection:
    """The projection of `tree`'s leaves (sizes only are read) to p dimensions."""
    if p < 1:
        raise SourceSelectionError(f"projection dimension must be >= 1, got {p}")
    flat = flatten_paths(tree)
    sizes = tuple(sorted((path, int(np.size(x))) for path, x in flat.items()))
    whole = 4 * p * sum(n for _, n in sizes) <= max_bytes
    blocks = {path: rademacher_block(key, i, n, p) for i, (path, n) in enumerate(sizes)} \
        if whole else None
    gram = jnp.zeros((p, p), jnp.float32)
    for i, (path, n) in enumerate(sizes):
        b = blocks[path] if whole else rademacher_block(key, i, n, p)
        gram = gram + b.T @ b
    return Projection(key=key, p=p, sizes=sizes,
                      shapes={path: tuple(np.shape(x)) for path, x in flat.items()},
                      blocks=blocks, gram=np.asarray(gram))


# -- per-example features ------------------------------------------------------------------


@dataclasses.dataclass
class Features:
    """Per example: id, f* (log-odds at phi*) and the projected gradient g~ [n, p]."""

    ids: np.ndarray  # int64, ascending
    f: np.ndarray  # float32 [n]
    g: np.ndarray  # float32 [n, p]
    seconds: float

    def rows(self, ids: np.ndarray) -> Features:
        """The features of the examples `ids` (a subset, any order)."""
        at = np.searchsorted(self.ids, ids)
        if np.any(at >= len(self.ids)) or not np.array_equal(self.ids[np.minimum(
                at, len(self.ids) - 1)], ids):
            raise SourceSelectionError("some requested example ids have no features")
        return Features(ids=np.asarray(ids), f=self.f[at], g=self.g[at], seconds=0.0)


@functools.lru_cache(maxsize=16)
def _output_and_grad(output_fn: Callable[[PyTree, Batch], jax.Array]):
    """`example_fn(on, off, example) -> (f, grad f wrt on)` for one example."""
    def one(on, off, example):
        batch = jax.tree_util.tree_map(lambda x: x[None], example)
        return jax.value_and_grad(lambda on: output_fn(merge_trees(on, off), batch)[0])(on)
    return one


def _projected(grads: PyTree, aux: dict) -> jax.Array:
    """sum over leaves of grad_leaf [c, size] @ P_leaf [size, p] -> [c, p]."""
    flat = sorted(flatten_paths(grads).items())
    p = aux["zeros"].shape[0]
    out = 0.0
    for i, (path, g) in enumerate(flat):
        block = aux["blocks"][path] if "blocks" in aux else rademacher_block(
            aux["key"], i, int(np.prod(g.shape[1:])), p)
        out = out + g.reshape(g.shape[0], -1) @ block
    return out


def project_reduce(carry, contrib, rows, aux):
    """Reducer: per-example outputs (f [c], g~ [c, p]); no carry."""
    values, grads = contrib
    return carry, (values, _projected(grads, aux))


def gradient_features(output_fn: Callable[[PyTree, Batch], jax.Array], params: PyTree,
                      batches: Iterable[Batch], projection: Projection, *,
                      eligible: PyTree | str | None, chunk_size: int | str = "auto",
                      progress: bool = True) -> Features:
    """f* and g~ = P^T grad f of every real example in `batches` (one pass).

    `output_fn(params, batch) -> [B]` (e.g. `fishjax.objectives.make_feature_fn`);
    the gradient is taken w.r.t. the `eligible` leaves, whose sorted paths and sizes must
    be those `projection` was made for.
    """
    aux: dict[str, Any] = {"zeros": jnp.zeros(projection.p, jnp.float32)}
    if projection.blocks is not None:
        aux["blocks"] = projection.blocks
    else:
        aux["key"] = projection.key
    out: PassOutput = example_pass(
        _output_and_grad(output_fn), params, batches, reduce=project_reduce,
        init=lambda on: None, aux=aux, eligible=eligible, chunk_size=chunk_size,
        progress=progress, desc="per-example gradients")
    order = np.argsort(out.example_ids, kind="stable")
    f, g = out.outputs
    return Features(ids=out.example_ids[order], f=np.asarray(f, np.float32)[order],
                    g=np.asarray(g, np.float32)[order], seconds=out.seconds)


# -- the fit of a subset ----------------------------------------------------------------


def source_grams(g: jax.Array, source_of: np.ndarray, num_sources: int) -> jax.Array:
    """Per source k: sum over its examples of g_i g_i^T, [K, p, p]."""
    onehot = jax.nn.one_hot(jnp.asarray(source_of), num_sources, dtype=g.dtype)  # [n, K]
    return jnp.einsum("nk,np,nq->kpq", onehot, g, g)


def _solve_one(theta, w, chol, g, f0, c, iters, newton, cg_iters):
    """One subset: `iters` steps of Boehning's majorise-minimise iteration
    (theta <- theta - B^-1 grad, B = I + C/4 G^T W G, monotone from any start), then
    `newton` Newton steps, each solving H d = grad by `cg_iters` conjugate-gradient steps
    preconditioned by B (H = I + C G^T diag(w s(1-s)) G >= I, so the steps are bounded).
    Returns (theta, |last step| / |theta|)."""
    precond = lambda v: jax.scipy.linalg.cho_solve((chol, True), v)  # noqa: E731

    def gradient(theta):
        return theta - c * (g.T @ (w * jax.nn.sigmoid(-(f0 + g @ theta))))

    def mm(_, carry):
        theta, _ = carry
        delta = precond(gradient(theta))
        return theta - delta, _relative(delta, theta)

    def newton_step(_, carry):
        theta, _ = carry
        s = jax.nn.sigmoid(f0 + g @ theta)
        curv = w * s * (1.0 - s)
        hvp = lambda v: v + c * (g.T @ (curv * (g @ v)))  # noqa: E731
        b = gradient(theta)

        def cg(_, state):
            x, r, z, p_dir, rz = state
            hp = hvp(p_dir)
            alpha = rz / jnp.maximum(p_dir @ hp, 1e-30)
            x, r = x + alpha * p_dir, r - alpha * hp
            z = precond(r)
            rz_new = r @ z
            return x, r, z, z + (rz_new / jnp.maximum(rz, 1e-30)) * p_dir, rz_new

        z0 = precond(b)
        state = (jnp.zeros_like(b), b, z0, z0, b @ z0)
        delta = jax.lax.fori_loop(0, cg_iters, cg, state)[0]
        return theta - delta, _relative(delta, theta)

    carry = jax.lax.fori_loop(0, iters, mm, (theta, jnp.float32(jnp.inf)))
    return jax.lax.fori_loop(0, newton, newton_step, carry)


def _relative(delta, theta):
    return jnp.linalg.norm(delta) / jnp.maximum(jnp.linalg.norm(theta), 1e-30)


@functools.partial(jax.jit, static_argnames=("iters", "newton", "cg_iters"))
def fit_subsets(g: jax.Array, f0: jax.Array, weights: jax.Array, grams: jax.Array,
                subsets: jax.Array, c: float, iters: int = 20, newton: int = 3,
                cg_iters: int = 10) -> tuple[jax.Array, jax.Array]:
    """(theta [m, p], last relative step [m]) of every subset: `weights` [m, n] 0/1 rows
    over the examples, `subsets` [m, K] the sources each holds (for the curvature bound
    from `grams`). One compiled call, `jax.vmap` over the subsets."""
    p = g.shape[1]
    bound = jnp.eye(p) + (c / 4.0) * jnp.einsum("mk,kpq->mpq", subsets.astype(g.dtype), grams)
    chol = jnp.linalg.cholesky(bound)
    theta0 = jnp.zeros((weights.shape[0], p), g.dtype)
    return jax.vmap(_solve_one, in_axes=(0, 0, 0, None, None, None, None, None, None))(
        theta0, weights, chol, g, f0, c, iters, newton, cg_iters)


def objective(theta: np.ndarray, g: np.ndarray, f0: np.ndarray, w: np.ndarray,
              c: float) -> float:
    """0.5 |theta|^2 + C sum_i w_i softplus(-(f0_i + g_i theta)), in float64 (for checks)."""
    theta, g, f0, w = (np.asarray(x, np.float64) for x in (theta, g, f0, w))
    return float(0.5 * theta @ theta + c * np.sum(w * np.logaddexp(0.0, -(f0 + g @ theta))))


# -- estimates ----------------------------------------------------------------------------


@dataclasses.dataclass
class Estimates:
    """Per subset: the fitted theta, and the target's first-order loss and accuracy."""

    theta: np.ndarray  # [m, p]
    scale: np.ndarray  # [m]: |Delta| / |P theta|
    target_loss: np.ndarray  # [m]
    target_accuracy: np.ndarray  # [m]
    last_step: np.ndarray  # [m]: the solver's last relative step (convergence)


@jax.jit
def _read_target(theta, gram_p, g_t, f_t, step_norm):
    norm = jnp.sqrt(jnp.maximum(jnp.einsum("mp,pq,mq->m", theta, gram_p, theta), 1e-30))
    scale = step_norm / norm
    f_hat = f_t[None, :] + scale[:, None] * (theta @ g_t.T)
    return scale, jnp.mean(jax.nn.softplus(-f_hat), axis=1), jnp.mean(f_hat > 0, axis=1)


def subset_weights(subsets: np.ndarray, source_of: np.ndarray) -> np.ndarray:
    """Example rows [m, n] (float32 0/1) of subset indicators [m, K] over sources."""
    return np.asarray(subsets, np.float32)[:, np.asarray(source_of)]


def estimate_subsets(source: Features, source_of: np.ndarray, target: Features,
                     subsets: np.ndarray, projection_gram: np.ndarray, step_norm: float, *,
                     c: float = DEFAULT_C, offsets: bool = True, iters: int = 20,
                     grams: jax.Array | None = None) -> Estimates:
    """The first-order target estimates of every subset (rows of `subsets` [m, K]).

    `source`: the pooled source examples' features, `source_of[i]` the source of example
    i; `target`: the target examples' features; `step_norm` = c_scale |phi*|.
    """
    subsets = np.asarray(subsets, bool)
    k = subsets.shape[1]
    if len(source_of) != len(source.f) or source_of.max(initial=-1) >= k:
        raise SourceSelectionError(f"source_of must name one of {k} sources per example")
    g = jnp.asarray(source.g)
    f0 = jnp.asarray(source.f if offsets else np.zeros_like(source.f))
    grams = source_grams(g, source_of, k) if grams is None else grams
    theta, last_step = fit_subsets(g, f0, jnp.asarray(subset_weights(subsets, source_of)),
                                   grams, jnp.asarray(subsets), float(c), iters=iters)
    scale, loss, acc = _read_target(theta, jnp.asarray(projection_gram), jnp.asarray(target.g),
                                    jnp.asarray(target.f), jnp.float32(step_norm))
    return Estimates(theta=np.asarray(theta), scale=np.asarray(scale),
                     target_loss=np.asarray(loss), target_accuracy=np.asarray(acc),
                     last_step=np.asarray(last_step))


# -- subsets and scores -------------------------------------------------------------------


def sample_subsets(num_sources: int, m: int, fraction: float, seed: int) -> np.ndarray:
    """[m, K] bool: m subsets of round(fraction K) sources each, uniform, seeded."""
    size = int(round(fraction * num_sources))
    if not 1 <= size <= num_sources:
        raise SourceSelectionError(f"fraction {fraction} of {num_sources} sources gives "
                                   f"{size} per subset")
    rng = np.random.default_rng(seed)
    out = np.zeros((m, num_sources), bool)
    for row in out:
        row[rng.choice(num_sources, size, replace=False)] = True
    return out


def ensemble_scores(subsets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per source: the mean of `values` over the subsets that contain it (NaN if none)."""
    subsets = np.asarray(subsets, np.float64)
    counts = subsets.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (subsets * np.asarray(values, np.float64)[:, None]).sum(axis=0) / counts


def ridge_scores(subsets: np.ndarray, values: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """Per source: its coefficient in a ridge fit values ~ b + sum_k beta_k [k in S]."""
    x = np.asarray(subsets, np.float64)
    y = np.asarray(values, np.float64)
    xc, yc = x - x.mean(axis=0), y - y.mean()
    return np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ yc)


def forward_selection(estimate: Callable[[np.ndarray], np.ndarray], num_sources: int,
                      size: int) -> list[int]:
    """Greedy: add the source whose addition gives the lowest estimated target loss,
    `size` times. `estimate(subsets [c, K]) -> losses [c]`."""
    chosen: list[int] = []
    for _ in range(size):
        rest = [k for k in range(num_sources) if k not in chosen]
        cand = np.zeros((len(rest), num_sources), bool)
        for row, k in zip(cand, rest, strict=True):
            row[chosen + [k]] = True
        chosen.append(rest[int(np.argmin(estimate(cand)))])
    return chosen


def forward_one_pass(estimate: Callable[[np.ndarray], np.ndarray],
                     num_sources: int) -> list[int]:
    """The reference's forward selection: one pass over the sources in index order, each
    added and kept if the estimated score (higher is better) of the set with it is at least
    the best so far (ties kept; the best starts at -inf). `estimate(subsets [c, K]) ->
    scores [c]`. The kept set, in index order (its size is what the pass keeps)."""
    chosen: list[int] = []
    best = -np.inf
    for k in range(num_sources):
        row = np.zeros((1, num_sources), bool)
        row[0, chosen + [k]] = True
        score = float(estimate(row)[0])
        if score >= best:
            chosen.append(k)
            best = score
    return chosen


def gradient_similarity(source: Features, source_of: np.ndarray, target: Features,
                        num_sources: int) -> np.ndarray:
    """Per source: cosine of its mean projected gradient with the target's (the baseline;
    higher is more similar)."""
    t = target.g.mean(axis=0)
    out = np.zeros(num_sources)
    for k in range(num_sources):
        s = source.g[np.asarray(source_of) == k].mean(axis=0)
        out[k] = float(s @ t / max(np.linalg.norm(s) * np.linalg.norm(t), 1e-30))
    return out


def top_sources(scores: np.ndarray, keep: int, lower_is_better: bool) -> list[int]:
    """The `keep` best sources by score (ties: the lower index), in rank order."""
    s = np.asarray(scores, np.float64)
    order = np.argsort(s if lower_is_better else -s, kind="stable")
    return [int(k) for k in order[:keep]]


def keep_count(num_sources: int, fraction: float) -> int:
    """How many sources `keep_fraction` keeps: round(fraction K), at least one."""
    return max(1, min(num_sources, int(math.floor(fraction * num_sources + 0.5))))
