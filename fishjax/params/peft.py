"""PEFT modules as parameter trees, kept apart from the frozen base: LoRA, DoRA, adapters.

A PEFT tree is a nested dict of its own leaves, addressed like the base params; a
`PeftSpec` says what it is (kind, size, target module paths, LoRA scaling). The pure
function `apply_peft(base, tree, spec)` gives the params the model reads; it is traceable,
so methods call it inside the jitted loss and the model class stays untouched for LoRA and
DoRA. Layouts (flax kernels are [in, out], y = x W + b):

- LoRA on a 2-D kernel W0 [in, out] at module path P (e.g.
  `encoder/layer_0/attention/self/query`): tree[P] = {"lora_A": [in, r], "lora_B": [r, out]}
  and W = W0 + s * lora_A @ lora_B, s = `spec.scaling` (alpha / r). lora_A is drawn like
  peft's (kaiming-uniform with a = sqrt(5): U(+-1/sqrt(in))), lora_B is zero. PEFT's torch
  layout is the transpose: lora_A.weight [r, in] = lora_A.T, lora_B.weight [out, r] =
  lora_B.T, and torch's W.T = W0.T + s * lora_B.weight @ lora_A.weight.
- DoRA (Liu et al., ICML 2024) adds "lora_magnitude" [out]:
  W = lora_magnitude * V / ||V||_c with V = W0 + s * lora_A @ lora_B and ||V||_c the L2
  norm of each output column (axis 0 of the flax kernel; dim 1 of the torch weight, peft's
  `get_weight_norm`), treated as a constant by the gradient (DoRA section 4.3, as peft).
  The magnitude starts at ||W0||_c, so W = W0 at init (to rounding). PEFT key:
  `lora_magnitude_vector`.
- Bottleneck adapters at an encoder slot P (an `AddNorm`, HF's *Output block):
  tree[P/adapter] = {"down": {"kernel": [h, b], "bias": [b]}, "up": {"kernel": [b, h],
  "bias": [h]}}; the encoder applies h + up(act(down(h))) itself when the params carry it
  (`fishjax.models.encoder.Adapter`; the slots are the model's, `fishjax.models.adapter_slots`).
  down.kernel is drawn like lora_A, the rest is zero.

Merging: for LoRA/DoRA `apply_peft` *is* the merge (a dense tree of the base's shape, so
inference after merging costs exactly the base model); adapters cannot be merged (they are
nonlinear). `entry_count` gives the trainable entries of a spec by formula.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import PeftError
from fishjax.core.tree import Path, PyTree, flatten_paths, merge_trees, unflatten_paths
from fishjax.models.architectures import ADAPTER_KEY, adapter_slots, slot_width

KINDS = ("lora", "dora", "adapter")
LORA_A, LORA_B, MAGNITUDE = "lora_A", "lora_B", "lora_magnitude"


@dataclasses.dataclass(frozen=True)
class PeftSpec:
    """What a PEFT tree is: its kind, size (rank r or bottleneck b), targets, scaling."""

    kind: str  # "lora", "dora" or "adapter"
    size: int  # LoRA/DoRA rank, or adapter bottleneck width
    targets: tuple[str, ...]  # '/'-joined module paths (LoRA: of the kernel; adapter: slots)
    scaling: float = 1.0  # LoRA/DoRA: the multiplier s of lora_A @ lora_B

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PeftError(f"PEFT kind must be one of {KINDS}, got {self.kind!r}")
        try:
            ok = int(self.size) == self.size and self.size >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise PeftError(f"PEFT size (rank/bottleneck) must be a positive int, "
                            f"got {self.size!r}")
        if isinstance(self.targets, str):
            raise PeftError(f"PEFT targets must be a tuple of module paths, not the string "
                            f"{self.targets!r}")
        if not self.targets:
            raise PeftError(f"a {self.kind} spec needs at least one target module")

    def resized(self, size: int) -> PeftSpec:
        """The same module at another size (same scaling: see fishjax.methods.peft)."""
        return dataclasses.replace(self, size=int(size))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "size": self.size, "targets": list(self.targets),
                "scaling": self.scaling}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PeftSpec:
        return cls(kind=d["kind"], size=int(d["size"]), targets=tuple(d["targets"]),
                   scaling=float(d["scaling"]))


def _path(name: str) -> Path:
    return tuple(name.split("/"))


def find_targets(params: PyTree, kind: str, regex: str) -> tuple[str, ...]:
    """Module paths the PEFT modules attach to, in sorted order.

    LoRA/DoRA: the modules of the leaves whose `/`-joined path matches `regex` (e.g.
    r"attention/self/(query|value)/kernel$"); each must be a 2-D `kernel`. Adapters: the
    model's adapter slots (`fishjax.models.adapter_slots`) whose module path matches
    `regex` (e.g. `fishjax.models.ADAPTER_SITES["houlsby"]`).
    """
    flat = flatten_paths(params)
    pattern = re.compile(regex)
    if kind in ("lora", "dora"):
        hits = [p for p in flat if pattern.search("/".join(p))]
        bad = [("/".join(p), np.shape(flat[p])) for p in hits
               if p[-1] != "kernel" or np.ndim(flat[p]) != 2]
        if bad:
            raise PeftError(f"LoRA targets must be 2-D `kernel` leaves; regex {regex!r} also "
                            f"matches {bad[:3]}")
        out = sorted("/".join(p[:-1]) for p in hits)
    elif kind == "adapter":
        out = sorted("/".join(m) for m in adapter_slots(params) if pattern.search("/".join(m)))
    else:
        raise PeftError(f"PEFT kind must be one of {KINDS}, got {kind!r}")
    if not out:
        raise PeftError(f"no {kind} target matches {regex!r}")
    return tuple(out)


def _io_dims(base: PyTree, base_flat: dict[Path, Any], spec: PeftSpec,
             target: str) -> tuple[int, int]:
    """(in, out) of a LoRA target kernel, or (width, width) of an adapter slot."""
    if spec.kind == "adapter":
        if _path(target) not in adapter_slots(base):
            raise PeftError(f"adapter target {target!r} is not an adapter slot of the params")
        width = slot_width(base, _path(target))
        return width, width
    leaf = _path(target) + ("kernel",)
    if leaf not in base_flat:
        raise PeftError(f"{spec.kind} target {target!r} has no {'/'.join(leaf)!r} in the params")
    shape = np.shape(base_flat[leaf])
    return shape[0], shape[1]


def peft_shapes(base: PyTree, spec: PeftSpec) -> dict[Path, tuple[int, ...]]:
    """{leaf path: shape} of the PEFT tree of `spec` on `base` (in sorted path order)."""
    flat = flatten_paths(base)
    r = spec.size
    out: dict[Path, tuple[int, ...]] = {}
    for t in spec.targets:
        d_in, d_out = _io_dims(base, flat, spec, t)
        p = _path(t)
        if spec.kind == "adapter":
            a = p + (ADAPTER_KEY,)
            out.update({a + ("down", "kernel"): (d_in, r), a + ("down", "bias"): (r,),
                        a + ("up", "kernel"): (r, d_out), a + ("up", "bias"): (d_out,)})
        else:
            out.update({p + (LORA_A,): (d_in, r), p + (LORA_B,): (r, d_out)})
            if spec.kind == "dora":
                out[p + (MAGNITUDE,)] = (d_out,)
    return dict(sorted(out.items()))


def entry_count(base: PyTree, spec: PeftSpec) -> int:
    """Trainable entries of the PEFT tree, by formula (head not included).

    LoRA: sum over targets of r (in + out); DoRA: r (in + out) + out; adapter: per slot
    2 h b + b + h (down and up kernels and biases).
    """
    flat = flatten_paths(base)
    total = 0
    for t in spec.targets:
        d_in, d_out = _io_dims(base, flat, spec, t)
        r = spec.size
        total += {"lora": r * (d_in + d_out), "dora": r * (d_in + d_out) + d_out,
                  "adapter": 2 * d_in * r + r + d_in}[spec.kind]
    return total


def tensor_type(path: Path) -> str:
    """The type of a PEFT leaf: `lora_A`, `lora_B`, `lora_magnitude`, or `down/kernel`,
    `down/bias`, `up/kernel`, `up/bias` for adapters (per-type budgets and the split log)."""
    if len(path) >= 3 and path[-3] == ADAPTER_KEY:
        return "/".join(path[-2:])
    return path[-1]


def tensor_types(tree: PyTree) -> dict:
    """A tree shaped like `tree` holding each leaf's `tensor_type`."""
    return unflatten_paths({p: tensor_type(p) for p in flatten_paths(tree)})


def type_counts(shapes: Mapping[Path, tuple[int, ...]]) -> dict[str, int]:
    """Entries per tensor type, from {leaf path: shape} (`peft_shapes` or `shapes_of`)."""
    out: dict[str, int] = {}
    for p, shape in shapes.items():
        out[tensor_type(p)] = out.get(tensor_type(p), 0) + math.prod(shape)
    return dict(sorted(out.items()))


def shapes_of(tree: PyTree) -> dict[Path, tuple[int, ...]]:
    """{leaf path: shape} of a nested dict of arrays."""
    return {p: tuple(np.shape(x)) for p, x in flatten_paths(tree).items()}


def _column_norm(w: jax.Array) -> jax.Array:
    """L2 norm of each output column of a flax kernel [in, out] (peft's weight norm)."""
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=0))


def init_peft(base: PyTree, spec: PeftSpec, key: jax.Array) -> dict:
    """A fresh PEFT tree (float32): lora_A / adapter down-kernels ~ U(+-1/sqrt(in)), lora_B
    and adapter up-projections and biases 0, DoRA magnitudes ||W0||_c. With it,
    `apply_peft(base, tree, spec)` computes what `base` computes (exactly for LoRA and
    adapters, to rounding for DoRA)."""
    shapes = peft_shapes(base, spec)
    flat = flatten_paths(base)
    out: dict[Path, np.ndarray] = {}
    random_leaves = [p for p in shapes if p[-1] == LORA_A or p[-2:] == ("down", "kernel")]
    keys = dict(zip(random_leaves, jax.random.split(key, max(len(random_leaves), 1)),
                    strict=False))
    for p, shape in shapes.items():
        if p in keys:
            bound = 1.0 / math.sqrt(shape[0])
            out[p] = np.asarray(jax.random.uniform(keys[p], shape, jnp.float32, -bound, bound))
        elif p[-1] == MAGNITUDE:
            out[p] = np.asarray(jax.jit(_column_norm)(flat[p[:-1] + ("kernel",)]))
        else:
            out[p] = np.zeros(shape, np.float32)
    return unflatten_paths(out)


def check_tree(base: PyTree, tree: PyTree, spec: PeftSpec) -> None:
    """Raises PeftError unless `tree` has exactly the leaves and shapes of `spec` on `base`."""
    want = peft_shapes(base, spec)
    got = shapes_of(tree)
    if got != want:
        diff = sorted("/".join(p) for p in set(got) ^ set(want))
        shapes = sorted(("/".join(p), got[p], want[p]) for p in set(got) & set(want)
                        if got[p] != want[p])
        raise PeftError(f"{spec.kind} tree does not fit its spec (size {spec.size}): leaves "
                        f"missing/unexpected {diff[:5]}, shape mismatches {shapes[:5]}")


def apply_peft(base: PyTree, tree: PyTree, spec: PeftSpec) -> dict:
    """The params the model reads (pure, traceable).

    LoRA/DoRA: `base` with each target kernel replaced by its merged weight (see the
    module docstring), a tree of the base's own shapes: this is also the merge for
    export. Adapters: `base` plus the adapter subtrees, which the encoder applies.
    """
    if spec.kind == "adapter":
        return merge_trees(base, tree)
    flat = flatten_paths(base)
    peft = flatten_paths(tree)
    for t in spec.targets:
        p = _path(t)
        w0 = flat[p + ("kernel",)]
        v = w0 + spec.scaling * (peft[p + (LORA_A,)] @ peft[p + (LORA_B,)])
        if spec.kind == "dora":
            # Floored: a zero column (a dead unit, magnitude 0) stays 0 instead of 0/0 = NaN.
            norm = jnp.maximum(_column_norm(v), jnp.finfo(v.dtype).tiny)
            v = v * (peft[p + (MAGNITUDE,)] / jax.lax.stop_gradient(norm))
        flat[p + ("kernel",)] = v
    return unflatten_paths(flat)
