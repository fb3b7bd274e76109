"""Per-example gradients from one batched backward: layer inputs and output cotangents.

Design note. For a dense layer y = x W + b applied at positions m of example i, example
i's weight gradient is sum_m x_im g_im^T, with g = dL/dy the output cotangent (Goodfellow,
"Efficient Per-Example Gradient Computations", arXiv 1510.01799; the same trick as
BackPACK and Opacus). One batched forward/backward of the summed loss gives every layer's
input x and cotangent g for all examples at once; only the outer products then run per
example, while the forward and the activation gradients run as batched matmuls. The
per-example engine (`fishjax.selection.per_example`) instead differentiates each example
on its own (a scan or vmap of `jax.grad`). Both give the same gradients up to rounding.

How it reaches the layers without knowing the model: `loss_fn(params, batch)` runs under
`flax.linen.intercept_methods`; every call of a `nn.Dense`, `nn.LayerNorm`, `nn.RMSNorm` or
`nn.Embed` records its input (the norms: the normalised input) and adds a zero
"perturbation" to its
output, whose gradient is the output cotangent. A second zero perturbation scales each
row's weight, so its gradient is each example's own loss (what the expected Fisher needs)
at no extra cost. The layer formulas, per example:
- Dense: kernel x^T g, bias sum_m g (inputs flattened to [positions, features]);
- LayerNorm (last-axis, as BERT's): scale sum_m xhat * g, bias sum_m g; RMSNorm (the
  decoders'): scale sum_m xhat * g with xhat = x / rms(x);
- Embed: the table's gradient, g added at each example's ids (dense, like `jax.grad`'s).
A module called more than once adds up its calls. When only the batch's sum of squared
gradients is wanted (FISH), `summed_squares` forms it without a per-example copy of an
embedding table: the positions of an example holding the same id are grouped first.

What it assumes (checked where it can be):
- `loss_fn` is the weighted mean of per-row losses over `batch["weights"]` (0/1), as the
  per-example engine requires, so the summed loss is loss * max(sum(weights), 1).
- Examples do not interact in the forward pass (no batch statistics): true of the
  encoders; not checkable here.
- Every differentiated leaf is a param of a captured layer call, used only inside it: a
  leaf no call covers is a `FisherError` at trace time; a param used outside its layer
  (tied embeddings, whose table is also the output layer through `attend`; params
  transformed before `apply`) is caught by `check_against_grad`,
  which the Fisher pass runs on its first batch (the sum of the captured per-example
  gradients must equal `jax.grad` of the summed loss).
- No lifted transform (`nn.scan`, `nn.remat`) wraps the captured layers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fishjax.core.errors import FisherError
from fishjax.core.tree import PyTree, flatten_paths, path_str, unflatten_paths

Batch = dict[str, Any]
LossFn = Callable[[PyTree, Batch], jax.Array]


@dataclasses.dataclass(frozen=True)
class LayerCall:
    kind: str  # "dense", "norm" or "embed"
    path: tuple[str, ...]  # the module's path in the params tree


def _layer_kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Dense):
        return "dense"
    if isinstance(module, nn.Embed):
        return "embed"
    for cls, kind in ((nn.LayerNorm, "norm"), (nn.RMSNorm, "rmsnorm")):
        if isinstance(module, cls):
            if module.reduction_axes != -1 or module.feature_axes != -1:
                raise FisherError(f"capture engine: {cls.__name__} {path_str(module.path)} "
                                  f"normalises over axes {module.reduction_axes}; only the "
                                  "last axis is supported (use engine='per_example')")
            return kind
    return None


def _normalised(x: jax.Array, epsilon: float, centred: bool = True) -> jax.Array:
    """LayerNorm's (centred) or RMSNorm's normalised input, before its scale."""
    x = x.astype(jnp.float32)
    if centred:
        x = x - jnp.mean(x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + epsilon)


def _run_recorded(loss_fn: LossFn, params: PyTree, batch: Batch,
                  perturbations: Sequence[jax.Array] | None
                  ) -> tuple[jax.Array, list[tuple[LayerCall, jax.Array, jax.Array]]]:
    """`loss_fn` under the interceptor: (loss, [(call, recorded input, output)]); the i-th
    captured output gets `perturbations[i]` added (None: nothing added)."""
    records: list[tuple[LayerCall, jax.Array, jax.Array]] = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        kind = _layer_kind(module) if context.method_name == "__call__" else None
        if kind is None:
            return next_fun(*args, **kwargs)
        x = args[0] if args else kwargs["inputs"]
        y = next_fun(*args, **kwargs)
        if perturbations is not None:
            y = y + perturbations[len(records)]
        recorded = _normalised(x, module.epsilon, kind == "norm") if kind in (
            "norm", "rmsnorm") else x
        records.append((LayerCall(kind, tuple(module.path)), recorded, y))
        return y

    with nn.intercept_methods(interceptor):
        loss = loss_fn(params, batch)
    return loss, records


def record_layers(loss_fn: LossFn, params: PyTree, batch: Batch) -> dict[str, Any]:
    """One batched backward of the summed loss: per-row layer records (traceable).

    Returns {"calls": {key: {"x": input [B, ...], "g": output cotangent [B, ...]}},
    "loss": each row's own loss [B] (0 on weight-0 rows)}; keys "<i>:<kind>:<path>" keep
    the calls in order. The loss is `loss_fn`'s weighted mean times max(sum(weights), 1).
    """
    weights = jnp.asarray(batch["weights"], jnp.float32)
    shapes = jax.eval_shape(lambda p, b: [y for _, _, y in _run_recorded(loss_fn, p, b, None)[1]],
                            params, batch)
    if not shapes:
        raise FisherError("capture engine: loss_fn calls no nn.Dense, LayerNorm, RMSNorm or Embed")

    def summed(perturbations, row_scale):
        scaled = {**batch, "weights": weights * (1.0 + row_scale)}
        loss, records = _run_recorded(loss_fn, params, scaled, perturbations)
        total = loss * jnp.maximum(jnp.sum(scaled["weights"]), 1.0)
        return total, [(call, x) for call, x, _ in records]

    zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    (cotangents, row_loss), records = jax.grad(summed, argnums=(0, 1), has_aux=True)(
        zeros, jnp.zeros_like(weights))
    calls = {f"{i}:{call.kind}:{'/'.join(call.path)}": {"x": x, "g": g}
             for i, ((call, x), g) in enumerate(zip(records, cotangents, strict=True))}
    return {"calls": calls, "loss": row_loss}


def _call_of(key: str) -> LayerCall:
    _, kind, path = key.split(":", 2)
    return LayerCall(kind, tuple(path.split("/")) if path else ())


def example_gradients(on: PyTree, calls: dict[str, dict[str, jax.Array]]) -> PyTree:
    """One example's gradient of every `on` leaf (float32, shaped like `on`) from its rows
    of `record_layers`' calls (no batch axis). A leaf no call covers is a FisherError."""
    on_flat = flatten_paths(on)
    grads: dict[tuple[str, ...], jax.Array] = {}

    def add(path: tuple[str, ...], value: jax.Array) -> None:
        if path in on_flat:
            grads[path] = grads[path] + value if path in grads else value

    for key, rec in calls.items():
        call = _call_of(key)
        g = rec["g"].astype(jnp.float32)
        g = g.reshape(-1, g.shape[-1])
        if call.kind == "embed":
            ids = rec["x"].reshape(-1)
            table = on_flat.get((*call.path, "embedding"))
            if table is not None:
                add((*call.path, "embedding"),
                    jnp.zeros(table.shape, jnp.float32).at[ids].add(g))
            continue
        x = rec["x"].astype(jnp.float32)
        x = x.reshape(-1, x.shape[-1])
        if call.kind == "dense" and (*call.path, "kernel") in on_flat:
            add((*call.path, "kernel"), x.T @ g)
        if call.kind in ("norm", "rmsnorm") and (*call.path, "scale") in on_flat:
            add((*call.path, "scale"), jnp.sum(x * g, axis=0))
        if (*call.path, "bias") in on_flat:
            add((*call.path, "bias"), jnp.sum(g, axis=0))
    missing = [path_str(p) for p in on_flat if p not in grads]
    if missing:
        raise FisherError(
            f"capture engine: {len(missing)} differentiated leaves are not params of an "
            f"nn.Dense, LayerNorm, RMSNorm or Embed call of loss_fn (e.g. {missing[:3]}); use "
            "engine='per_example' for them")
    return unflatten_paths(grads)


@functools.lru_cache(maxsize=16)
def _captured_and_direct(loss_fn: LossFn, merge: Callable[[PyTree, PyTree], PyTree]):
    """Jitted `(on, off, batch) -> (sum of captured per-example gradients, jax.grad of the
    summed loss)`, one per (loss_fn, merge)."""

    @jax.jit
    def both(on, off, batch):
        rec = record_layers(loss_fn, merge(on, off), batch)
        per_row = jax.vmap(example_gradients, in_axes=(None, 0))(on, rec["calls"])
        captured = jax.tree_util.tree_map(lambda g: jnp.sum(g, axis=0), per_row)
        n = jnp.maximum(jnp.sum(jnp.asarray(batch["weights"], jnp.float32)), 1.0)
        direct = jax.grad(lambda o: loss_fn(merge(o, off), batch) * n)(on)
        return captured, direct

    return both


# (loss_fn, merge, the differentiated leaves' paths and shapes) already checked.
_CHECKED: set[tuple[Any, ...]] = set()


def check_against_grad(loss_fn: LossFn, on: PyTree, off: PyTree, batch: Batch,
                       merge: Callable[[PyTree, PyTree], PyTree], rtol: float = 1e-3) -> None:
    """FisherError unless the captured per-example gradients of one batch sum to `jax.grad`
    of its summed loss (a param used outside its layer, or transformed before `apply`,
    would make them differ). Per leaf, the error is measured against the leaf's largest
    entry, floored at 1e-6 of the largest entry over all leaves. Runs once per loss_fn and
    set of differentiated leaves in a process (later calls return at once)."""
    key = (loss_fn, merge, tuple((p, np.shape(v)) for p, v in flatten_paths(on).items()))
    if key in _CHECKED:
        return
    captured, direct = jax.device_get(_captured_and_direct(loss_fn, merge)(on, off, batch))
    got, want = flatten_paths(captured), flatten_paths(direct)
    floor = 1e-6 * max((float(np.max(np.abs(w))) for w in want.values()), default=0.0)
    for path, w in want.items():
        scale = max(float(np.max(np.abs(w))), floor, 1e-30)
        err = float(np.max(np.abs(np.asarray(got[path]) - w))) / scale
        if err > rtol:
            raise FisherError(
                f"capture engine: the captured gradient of {path_str(path)} differs from "
                f"jax.grad by {err:.2g} of its scale: the param is used outside its layer "
                "call or transformed before apply; use engine='per_example'")
    _CHECKED.add(key)


def _grouped_embedding_squares(ids: jax.Array, g: jax.Array, shape: tuple[int, ...]
                               ) -> jax.Array:
    """sum_i of example i's squared table gradient, without a per-example table: the
    positions of an example holding the same id are grouped (a T x T equality matrix)
    and each adds (group sum)^2 / group size at its id, so every group adds its square
    once. ids [B, T], g [B, T, d]."""
    ids = ids.reshape(ids.shape[0], -1)
    g = g.astype(jnp.float32).reshape(ids.shape[0], ids.shape[1], -1)
    same = (ids[:, :, None] == ids[:, None, :]).astype(jnp.float32)
    grouped = jnp.einsum("bts,bsd->btd", same, g)
    contrib = jnp.square(grouped) / jnp.sum(same, axis=-1, keepdims=True)
    return jnp.zeros(shape, jnp.float32).at[ids.reshape(-1)].add(
        contrib.reshape(-1, g.shape[-1]))


def summed_squares(on: PyTree, calls: dict[str, dict[str, jax.Array]],
                   terms: Sequence[dict[str, jax.Array]], chunk_size: int) -> PyTree:
    """sum over terms t and rows i of (example i's gradient with cotangents terms[t])^2,
    per `on` leaf: the batch's Fisher sum with no per-example tree of an embedding table.

    `calls`: `record_layers(...)["calls"]` (their inputs are used); each term maps the
    same keys to cotangents [B, ...] (e.g. the recorded ones scaled per row). Embedding
    tables use `_grouped_embedding_squares`; the other leaves a scan over chunks of
    `chunk_size` rows of `example_gradients`, squared.
    """
    on_flat = flatten_paths(on)
    embed = {(*_call_of(k).path, "embedding") for k in calls if _call_of(k).kind == "embed"}
    repeated = [k for k in calls if _call_of(k).kind == "embed" and
                sum(_call_of(j).path == _call_of(k).path for j in calls) > 1]
    if repeated:
        raise FisherError(f"capture engine: embedding {repeated[0]} is called more than once")
    rest = unflatten_paths({p: v for p, v in on_flat.items() if p not in embed})
    out: dict[tuple[str, ...], jax.Array] = {}
    for term in terms:
        for key, g in term.items():
            path = (*_call_of(key).path, "embedding")
            if path in embed and path in on_flat:
                sq = _grouped_embedding_squares(calls[key]["x"], g, on_flat[path].shape)
                out[path] = out[path] + sq if path in out else sq
    if rest:
        b = next(iter(terms[0].values())).shape[0]
        if b % chunk_size:
            raise FisherError(f"batch size {b} is not a multiple of chunk_size {chunk_size}")
        split = lambda x: x.reshape(b // chunk_size, chunk_size, *x.shape[1:])
        per_row = jax.vmap(example_gradients, in_axes=(None, 0))

        def body(total, chunk):
            sq = jax.tree_util.tree_map(lambda g: jnp.sum(jnp.square(g), axis=0),
                                        per_row(rest, chunk))
            return jax.tree_util.tree_map(jnp.add, total, sq), None

        total = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), rest)
        for term in terms:
            rows = {k: {"x": calls[k]["x"], "g": term[k]} for k in calls
                    if _call_of(k).kind != "embed"}
            total = jax.lax.scan(body, total, jax.tree_util.tree_map(split, rows))[0]
        out.update(flatten_paths(total))
    return unflatten_paths(out)
