"""X-PEFT's parameter transform: a frozen bank of N adapters, mixed per profile by scores.

A bank is one stacked adapter tree: the layout of a bottleneck-adapter PEFT tree
(`fishjax.params.peft`, `<slot>/adapter/{down,up}/{kernel,bias}`) with a leading axis of
size N on every leaf. A profile owns, per adapter slot l and side s (down- or
up-projection), a score vector S[l, s] in R^N, turned into mixing weights w[l, s]:

- `soft`: w = softmax(S);
- `hard`: the top K entries of S (ties: the lower adapter index), w = 1/K on them, 0
  elsewhere, i.e. the mean of the selected adapters; a straight-through estimator passes
  the gradient of softmax(S) to the scores (forward exactly the hard weights);
- `sigmoid`: the entries with S > 0 (sigmoid(S) > 1/2), w = their mean (0 if none);
  straight-through with sigmoid(S) normalised to sum 1.

Mixing (`mixing`, hard and sigmoid profiles): "mean" (the weights above: the selected
adapters' mean) or "sum" (weight 1 on each selected adapter; the straight-through
surrogate scaled to match: K softmax(S) for hard, sigmoid(S) itself for sigmoid). The
paper's retrievable text does not fix the normalisation. Measured on the random pool
(`python -m benchmarks.xpeft.mixing_effect`, MiniLM, 32 adapters, the same masks both ways;
Intel Xeon, 2026-12-04): the pooler output moves 27.9% with K=1 (both), 13.9% / 6.8% / 1.8%
with K=2 / 4 / 16 by the mean (about 1/K: the adapters' effects average out) and 60% /
108% / 199% by the sum (random adapters stack until they swamp the encoder). The default
is the mean, which keeps the encoder's features at every K; the sum is there for trained
banks, whose adapters need not cancel. A soft profile's softmax weights sum to 1 (a mean)
and have no "sum" form.

The adapter a slot runs is the weighted sum of the bank's adapters, weights applied to the
kernels and biases alike (`mix`): the compute of one adapter, plus O(N d r) to mix. A hard
profile is its bool mask (2 L N bits); a soft one its scores. All functions are pure and
traceable; `mix` under `jax.vmap` mixes per example (serving a batch of many profiles).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import PeftError
from fishjax.core.tree import PyTree, flatten_paths, unflatten_paths
from fishjax.models.architectures import ADAPTER_KEY
from fishjax.params.peft import PeftSpec, peft_shapes

VARIANTS = ("soft", "hard", "sigmoid")
MIXINGS = ("mean", "sum")
SIDES = ("down", "up")


def default_k(n: int) -> int:
    """K of the hard variant when not given: ceil(N / 2)."""
    return math.ceil(n / 2)


# -- the bank ------------------------------------------------------------------------------


def random_bank(base: PyTree, spec: PeftSpec, n: int, key: jax.Array,
                up_scale: float = 1.0) -> dict:
    """N random adapters of `spec` on `base`, stacked: down- and up-kernels both drawn
    U(+-1/sqrt(fan_in)) (the up-kernel times `up_scale`), biases 0. Unlike a fresh PEFT
    adapter (up = 0, the identity), every random adapter changes the function."""
    if spec.kind != "adapter":
        raise PeftError(f"an X-PEFT bank holds bottleneck adapters, not {spec.kind!r}")
    if n < 1:
        raise PeftError(f"a bank needs at least one adapter, got N={n}")
    shapes = peft_shapes(base, spec)
    kernels = [p for p in shapes if p[-1] == "kernel"]
    keys = dict(zip(kernels, jax.random.split(key, len(kernels)), strict=True))
    out = {}
    for p, shape in shapes.items():
        if p in keys:
            bound = (1.0 if p[-2] == "down" else up_scale) / math.sqrt(shape[0])
            out[p] = np.asarray(jax.random.uniform(keys[p], (n, *shape), jnp.float32,
                                                   -bound, bound))
        else:
            out[p] = np.zeros((n, *shape), np.float32)
    return unflatten_paths(out)


def stack_adapters(trees: list[PyTree]) -> dict:
    """A bank from N adapter trees of one spec (e.g. trained `adapter` runs)."""
    if not trees:
        raise PeftError("stacking a bank needs at least one adapter tree")
    flats = [flatten_paths(t) for t in trees]
    for i, f in enumerate(flats[1:], 1):
        if {p: np.shape(x) for p, x in f.items()} != {p: np.shape(x) for p, x in
                                                     flats[0].items()}:
            raise PeftError(f"adapter {i} has other leaves or shapes than adapter 0: a bank "
                            "stacks adapters of one spec (same slots and bottleneck)")
    return unflatten_paths({p: np.stack([np.asarray(f[p], np.float32) for f in flats])
                            for p in flats[0]})


def bank_size(bank: PyTree) -> int:
    """N, the number of adapters in a bank."""
    sizes = {np.shape(x)[0] for x in flatten_paths(bank).values()}
    if len(sizes) != 1:
        raise PeftError(f"bank leaves disagree on the number of adapters: {sorted(sizes)}")
    return sizes.pop()


def bank_slots(bank: PyTree) -> tuple[str, ...]:
    """The adapter slots of a bank (module paths), sorted: the order of a profile's rows."""
    slots = {p[:p.index(ADAPTER_KEY)] for p in flatten_paths(bank)}
    return tuple(sorted("/".join(s) for s in slots))


def check_bank(bank: PyTree, base: PyTree, spec: PeftSpec) -> None:
    """Raises PeftError unless every adapter of `bank` is a tree of `spec` on `base`."""
    want = {p: (bank_size(bank), *s) for p, s in peft_shapes(base, spec).items()}
    got = {p: tuple(np.shape(x)) for p, x in flatten_paths(bank).items()}
    if got != want:
        diff = sorted("/".join(p) for p in set(got) ^ set(want))
        shapes = [("/".join(p), got[p], want[p]) for p in sorted(set(got) & set(want))
                  if got[p] != want[p]]
        raise PeftError(f"the bank does not fit these params and spec (bottleneck "
                        f"{spec.size}, {len(spec.targets)} slots): leaves missing/unexpected "
                        f"{diff[:4]}, shape mismatches {shapes[:3]}")


# -- scores and weights ----------------------------------------------------------------------


def init_scores(num_slots: int, n: int, key: jax.Array, scale: float) -> jax.Array:
    """A profile's initial scores [slots, 2, N]: U(+-scale) (seeded); scale 0: all zero."""
    return jax.random.uniform(key, (num_slots, len(SIDES), n), jnp.float32, -scale, scale)


@jax.custom_vjp
def _straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
    return hard


def _st_fwd(hard, soft):
    return hard, None


def _st_bwd(_, g):
    return jnp.zeros_like(g), g


_straight_through.defvjp(_st_fwd, _st_bwd)


def top_k_mask(scores: jax.Array, k: int) -> jax.Array:
    """Bool mask with exactly k True entries along the last axis: the k highest scores
    (ties: the lower index)."""
    n = scores.shape[-1]
    if not 1 <= k <= n:
        raise PeftError(f"K must be in 1..{n}, got {k}")
    _, idx = jax.lax.top_k(scores, k)
    return jnp.sum(jax.nn.one_hot(idx, n, dtype=jnp.int32), axis=-2) > 0


def mask_weights(mask: jax.Array, mixing: str = "mean") -> jax.Array:
    """Mixing weights of a bool mask: the mean of the selected adapters (0 if none), or
    their sum (`mixing="sum"`: weight 1 each)."""
    m = mask.astype(jnp.float32)
    if mixing == "sum":
        return m
    if mixing != "mean":
        raise PeftError(f"X-PEFT mixing must be one of {MIXINGS}, got {mixing!r}")
    return m / jnp.maximum(jnp.sum(m, axis=-1, keepdims=True), 1.0)


def profile_mask(scores: jax.Array, variant: str, k: int | None) -> jax.Array:
    """The bool mask a hard or sigmoid profile stores."""
    if variant == "hard":
        return top_k_mask(scores, default_k(scores.shape[-1]) if k is None else k)
    if variant == "sigmoid":
        return scores > 0
    raise PeftError(f"a {variant!r} profile has no mask (only hard and sigmoid ones)")


def mixing_weights(scores: jax.Array, variant: str, k: int | None = None,
                   mixing: str = "mean") -> jax.Array:
    """Weights [..., N] from scores (see the module docstring); traceable."""
    if variant == "soft":
        if mixing != "mean":
            raise PeftError("a soft profile mixes by its softmax weights (a mean): "
                            "mixing='sum' needs variant 'hard' or 'sigmoid'")
        return jax.nn.softmax(scores, axis=-1)
    if variant not in VARIANTS:
        raise PeftError(f"X-PEFT variant must be one of {VARIANTS}, got {variant!r}")
    hard = mask_weights(jax.lax.stop_gradient(profile_mask(scores, variant, k)), mixing)
    n = scores.shape[-1]
    if variant == "hard":
        soft = jax.nn.softmax(scores, axis=-1)
        if mixing == "sum":
            soft = soft * (default_k(n) if k is None else k)
    else:
        soft = jax.nn.sigmoid(scores)
        if mixing == "mean":
            soft = soft / jnp.sum(soft, axis=-1, keepdims=True)
    return _straight_through(hard, soft)


def mix(bank: PyTree, weights: jax.Array) -> dict:
    """The adapter tree the model reads: per slot, the bank's adapters weighted by
    `weights[slot, side]` (down-projection: side 0, up: side 1), kernels and biases."""
    slots = bank_slots(bank)
    row = {s: i for i, s in enumerate(slots)}
    out = {}
    for p, leaf in flatten_paths(bank).items():
        i = p.index(ADAPTER_KEY)
        w = weights[row["/".join(p[:i])], SIDES.index(p[i + 1])]
        out[p] = jnp.tensordot(w, leaf, axes=1)
    return unflatten_paths(out)


# -- profiles --------------------------------------------------------------------------------


@dataclasses.dataclass
class Profile:
    """What one profile owns: its mask (hard, sigmoid) or scores (soft), and its head."""

    variant: str
    head: dict  # the task head leaves (nested dict)
    mask: np.ndarray | None = None  # bool [slots, 2, N]
    scores: np.ndarray | None = None  # float16 [slots, 2, N] as shipped (see profile_from_scores)
    k: int | None = None  # hard: adapters per (slot, side)
    mixing: str = "mean"  # hard, sigmoid: the selected adapters' "mean" or "sum"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise PeftError(f"X-PEFT variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.mixing not in MIXINGS or (self.variant == "soft" and self.mixing != "mean"):
            raise PeftError(f"a {self.variant} profile cannot mix by {self.mixing!r}")
        need = "scores" if self.variant == "soft" else "mask"
        if getattr(self, need) is None:
            raise PeftError(f"a {self.variant} profile needs its {need}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.scores if self.variant == "soft" else self.mask))

    def weights(self) -> jax.Array:
        """Mixing weights [slots, 2, N]: exactly the forward weights of training."""
        if self.variant == "soft":
            return jax.nn.softmax(jnp.asarray(self.scores, jnp.float32), axis=-1)
        return mask_weights(jnp.asarray(self.mask), self.mixing)


def profile_from_scores(scores: Any, head: PyTree, variant: str, k: int | None,
                        mixing: str = "mean") -> Profile:
    """The profile a trained (scores, head) pair ships: hard/sigmoid keep only the mask,
    soft its scores rounded to float16 (2 bytes a score: the mixing weights move by about
    1e-3 relative, and what is served is exactly what the file holds)."""
    scores = np.asarray(jax.device_get(scores), np.float32)
    head = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x), np.float32), head)
    if variant == "soft":
        return Profile("soft", head, scores=soft_scores_f16(scores))
    n = scores.shape[-1]
    k = (default_k(n) if k is None else k) if variant == "hard" else None
    return Profile(variant, head, mask=np.asarray(profile_mask(jnp.asarray(scores), variant, k)),
                   k=k, mixing=mixing)


def soft_scores_f16(scores: np.ndarray) -> np.ndarray:
    """Soft scores as shipped (float16); PeftError if one leaves float16's range."""
    with np.errstate(over="ignore"):  # an overflow is reported below, as an error
        half = np.asarray(scores, np.float32).astype(np.float16)
    if not np.all(np.isfinite(half)):
        raise PeftError(f"soft scores up to {float(np.max(np.abs(scores))):.3g} do not fit "
                        "float16 (|x| <= 65504): the score training diverged")
    return half


def profile_bytes(variant: str, shape: tuple[int, ...]) -> int:
    """Bytes a profile's selection takes on disk (head not included): ceil(bits / 8) for a
    mask, 2 per float16 score."""
    entries = int(np.prod(shape))
    return math.ceil(entries / 8) if variant != "soft" else 2 * entries
