"""The one per-example engine: a function of each example, reduced chunk by chunk.

`example_pass(example_fn, params, batches, ...)` runs `example_fn(on, off, example)` for
every row of the batches, `chunk_size` examples at a time with `jax.vmap` inside a
`lax.scan` over the batch, and feeds each chunk's results to a `reduce(carry, contrib,
rows, aux)` inside the jitted step: only the carry and small per-example outputs leave the
scan, so memory does not grow with the number of examples. `on`/`off`: the params split
into the leaves `example_fn` may differentiate (`eligible`) and the others
(`fishjax.core.tree.split_tree`); `example` has no batch dimension. Chunk 1 (a scan of
single-example functions) is fastest on CPU, where vmapped per-example gradient trees are
memory-bound; larger chunks win on GPU/TPU (`chunk_size="auto"`).

In a multi-process run (`jax.process_count() > 1`) each process runs every P-th row of
each batch and every process ends with the whole result (carries summed, per-example
outputs gathered back in pass order), so selection work per process falls as
1/processes.

Two hooks let an engine do batched work: `prepare` runs once per batch before the scan
(the scan then runs over its per-row results), and `batch_step` replaces the scan by one
update of the carry per batch; `fishjax.selection.capture` uses both.

Users: the Fisher passes of FISH and IRD (`fishjax.selection.fisher`: each example's
squared gradient) and multi-source selection's projected per-example gradients
(`fishjax.selection.multisource`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from fishjax.core.errors import FisherError
from fishjax.core.progress import progress_bar
from fishjax.core.tree import PyTree, match_tree, split_tree

Batch = dict[str, Any]
log = logging.getLogger("fishjax")

# reduce(carry, contrib, rows, aux) -> (carry, per-example outputs [c, ...] or None).
# `contrib`: the chunk's `example_fn` results (leading axis c); `rows`: per-row arrays of
# the chunk (`weights`, `sum_weights`); `aux`: a pytree constant over the pass (e.g. a mask
# over the `on` leaves, or a projection). Must be hashable (it keys the cache of compiled
# steps): a module-level function.
Reducer = Callable[[Any, Any, dict[str, jax.Array], Any], tuple[Any, Any]]


def auto_chunk_size(batch_size: int, backend: str | None = None) -> int:
    """1 on CPU (scan of single-example gradients); up to 8 (dividing the batch) elsewhere."""
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return 1
    return max(c for c in (8, 4, 2, 1) if batch_size % c == 0)


def resolve_eligible(params: PyTree, eligible: PyTree | str | None) -> PyTree:
    """A bool tree from a regex, a bool tree, or None (every leaf)."""
    if eligible is None:
        return jax.tree_util.tree_map(lambda _: True, params)
    if isinstance(eligible, str):
        return match_tree(params, eligible)
    return eligible


def zeros_like_tree(on: PyTree) -> PyTree:
    """float32 zeros shaped like every leaf: the default carry (a per-parameter sum)."""
    return jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), on)


# batch_step(chunk_size) -> step(carry, on, off, batch, rows, aux) -> (carry, None): a whole
# batch's update of the carry at once, replacing the per-example scan (the capture
# engine's Fisher sums). Hashable, like Reducer.
BatchStep = Callable[[int], Callable[..., tuple[Any, Any]]]
# prepare(on, off, batch) -> per-row arrays [b, ...]: batched work done once per batch
# before the scan (e.g. one batched backward, `fishjax.selection.capture`); `example_fn`
# then sees one row of its result instead of one row of the batch. Hashable, like Reducer.
Prepare = Callable[[Any, Any, dict[str, jax.Array]], Any]


def chunked_reduce(example_fn: Callable[..., Any], chunk_size: int, reduce: Reducer,
                   prepare: Prepare | None = None) -> Callable[..., tuple[Any, Any]]:
    """`f(carry, on, off, batch, rows, aux) -> (carry, per-example outputs [b, ...])`.

    A `lax.scan` over chunks of `chunk_size` examples, `vmap` of `example_fn` within each
    chunk, `reduce` applied to each chunk's results; only `carry` and the (small)
    per-example outputs leave the scan. The batch size must be a multiple of `chunk_size`.
    With `prepare`, the scan runs over the rows of `prepare(on, off, batch)`.
    """
    per_chunk = jax.vmap(example_fn, in_axes=(None, None, 0))

    def run(carry, on, off, batch, rows, aux):
        b = batch["labels"].shape[0]
        if b % chunk_size:
            raise FisherError(f"batch size {b} is not a multiple of chunk_size {chunk_size}")
        if prepare is not None:
            batch = prepare(on, off, batch)
        split = lambda x: x.reshape(b // chunk_size, chunk_size, *x.shape[1:])
        chunks = jax.tree_util.tree_map(split, (batch, rows))

        def body(carry, chunk):
            batch_c, rows_c = chunk
            return reduce(carry, per_chunk(on, off, batch_c), rows_c, aux)

        carry, outs = jax.lax.scan(body, carry, chunks)
        outs = jax.tree_util.tree_map(lambda y: y.reshape(b, *y.shape[2:]), outs)
        return carry, outs

    return run


def compiled_pass(example_fn: Callable[..., Any] | None, chunk_size: int,
                  reduce: Reducer | None, prepare: Prepare | None = None,
                  batch_step: BatchStep | None = None):
    """Jitted `carry, on, off, batch, rows, aux -> (carry, outputs)`, carry donated.

    Cached by (example_fn, chunk_size, reduce, prepare, batch_step), so repeated passes
    (FISH, every IRD round) compile once per batch shape and per carry/aux structure: pass
    the same function objects (module-level, or themselves cached) to reuse the
    compilations. With `batch_step`, the step is `batch_step(chunk_size)` instead.
    """
    return _compiled_pass(example_fn, chunk_size, reduce, prepare, batch_step)


@functools.lru_cache(maxsize=64)
def _compiled_pass(example_fn, chunk_size, reduce, prepare, batch_step):  # one key per kind
    if batch_step is not None:
        return jax.jit(batch_step(chunk_size), donate_argnums=0)
    return jax.jit(chunked_reduce(example_fn, chunk_size, reduce, prepare), donate_argnums=0)


@dataclasses.dataclass
class PassOutput:
    carry: Any  # the reduction's final carry
    example_ids: np.ndarray  # int64: ids of the real rows, in pass order
    outputs: Any  # the reduction's per-example outputs (numpy), aligned with example_ids
    num_examples: int  # real (weight > 0) examples processed (by all processes)
    backward_passes: int  # backward passes spent (examples x passes_per_example), in all
    seconds: float
    # This process's share of `backward_passes` (all of it in a single-process run).
    local_backward_passes: int = 0


def row_weights(batch: dict[str, Any]) -> np.ndarray:
    """A copy of the batch's `weights` (1 real row, 0 padding) as float32; all ones when
    the batch has none (e.g. a user's own batches, with no padding rows)."""
    if "weights" in batch:
        return np.asarray(batch["weights"], np.float32).copy()
    rows = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch) if np.ndim(x) > 0}
    if len(rows) != 1:
        raise FisherError(f"a batch without `weights` needs arrays of one row count, got "
                          f"row counts {sorted(rows)} (or give `weights`: 1 per real row)")
    return np.ones(rows.pop(), np.float32)


def example_pass(
    example_fn: Callable[..., Any],
    params: PyTree,
    batches: Iterable[Batch],
    *,
    reduce: Reducer,
    init: Callable[[PyTree], Any] = zeros_like_tree,
    aux: Any = None,
    eligible: PyTree | str | None = None,
    num_samples: int | None = None,
    chunk_size: int | str = "auto",
    progress: bool = True,
    desc: str = "per-example pass",
    passes_per_example: int = 1,
    prepare: Prepare | None = None,
    check_first: Callable[[Any, Any, dict[str, Any]], None] | None = None,
    batch_step: BatchStep | None = None,
) -> PassOutput:
    """One pass of `example_fn` over every real example of `batches`, through `reduce`.

    `init(on)` builds the initial carry from the eligible leaves (`on`: a nested dict of
    only those leaves); `reduce` and `aux` are described at `Reducer`. Batches may carry
    two host-side keys: `example_ids` (an id per row; default: the running position among
    real rows) and `sum_weights` (a per-row weight handed to `reduce`; default `weights`).
    Rows with weight 0 (padding) produce no id and no output (`example_fn` sees weight 0
    there); a batch without `weights` has every row real. Stops once `num_samples` real
    rows were processed (rows past it get weight 0). In a multi-process run each process
    runs every P-th row of each batch and the carries are summed over the processes at the
    end, so `init` must give a carry that sums (zeros, or None): a nonzero init would be
    counted P times. `prepare` (see `Prepare`) runs batched work before each batch's
    scan; `check_first(on, off, batch)` is called once, on the first batch this process
    runs, and may raise. `batch_step` (see `BatchStep`) replaces `example_fn`, `reduce`
    and `prepare` by one update of the carry per batch.
    """
    if num_samples is not None and num_samples <= 0:
        raise FisherError(f"num_samples must be positive, got {num_samples}")
    eligible = resolve_eligible(params, eligible)
    if not any(jax.tree_util.tree_leaves(eligible)):
        raise FisherError("no parameter is eligible for the per-example pass")
    on, off = split_tree(params, eligible)
    carry = init(on)
    share, shares = jax.process_index(), jax.process_count()
    bar = progress_bar(num_samples, desc, "ex", enabled=progress)
    seen, own, t0 = 0, 0, time.perf_counter()
    ids: list[np.ndarray] = []
    outs: list[tuple[Any, np.ndarray]] = []
    positions: list[np.ndarray] = []  # the pass position of each of this process's rows
    for batch in batches:
        if num_samples is not None and seen >= num_samples:
            break
        batch = dict(batch)
        row_ids = batch.pop("example_ids", None)
        sum_weights = batch.pop("sum_weights", None)
        weights = row_weights(batch)
        if num_samples is not None:  # keep only the first (num_samples - seen) real rows
            real = np.cumsum(weights > 0)
            weights[real > num_samples - seen] = 0.0
        real = weights > 0
        n_real = int(real.sum())
        if n_real == 0:
            continue
        sw = weights if sum_weights is None else np.asarray(sum_weights, np.float32) * real
        position = np.full(len(weights), -1, np.int64)  # pass position of each real row
        position[real] = np.arange(seen, seen + n_real)
        if row_ids is None:
            row_ids = position
        if shares == 1:
            mine, part, w_mine, sw_mine = np.arange(len(weights)), batch, weights, sw
        else:
            # Each process runs every `shares`-th row of the batch, padded with weight-0
            # rows to ceil(B / shares), so every process compiles and runs the same shapes.
            mine = np.arange(share, len(weights), shares)
            pad = -(-len(weights) // shares) - len(mine)
            index = np.concatenate([mine, np.zeros(pad, np.int64)])
            part = {k: np.asarray(v)[index] for k, v in batch.items()}
            w_mine = np.concatenate([weights[mine], np.zeros(pad, np.float32)])
            sw_mine = np.concatenate([sw[mine], np.zeros(pad, np.float32)])
        c = auto_chunk_size(len(w_mine)) if chunk_size == "auto" else int(chunk_size)
        step = compiled_pass(example_fn, c, reduce, prepare, batch_step)
        if check_first is not None:
            check_first(on, off, {**part, "weights": w_mine})
            check_first = None
        carry, out = step(carry, on, off, {**part, "weights": w_mine},
                          {"weights": w_mine, "sum_weights": sw_mine}, aux)
        real_mine = real[mine]
        ids.append(np.asarray(row_ids, np.int64)[mine][real_mine])
        positions.append(position[mine][real_mine])
        if out is not None:
            outs.append((out, np.concatenate([real_mine, np.zeros(len(w_mine) - len(mine),
                                                                  bool)])))
        own += int(real_mine.sum())
        seen += n_real
        bar.update(n_real)
    bar.close()
    jax.block_until_ready(carry)
    if seen == 0:
        raise FisherError("no examples were processed (empty batches?)")
    if num_samples is not None and seen < num_samples:
        log.warning("%s: only %d examples available, fewer than num_samples=%d", desc, seen,
                    num_samples)
    outputs = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs),
                                     *[jax.tree_util.tree_map(lambda o, r=r: np.asarray(o)[r],
                                                              o) for o, r in outs]) \
        if outs else None
    example_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    if shares > 1:
        carry, example_ids, outputs = _combine_processes(
            carry, example_ids, outputs,
            np.concatenate(positions) if positions else np.zeros(0, np.int64))
    return PassOutput(carry=carry, example_ids=example_ids, outputs=outputs,
                      num_examples=seen, backward_passes=seen * passes_per_example,
                      seconds=time.perf_counter() - t0,
                      local_backward_passes=own * passes_per_example)


def sum_over_processes(tree: Any) -> Any:
    """The sum over processes of each process's `tree` (same structure and shapes on every
    process; None stays None), on every process. One jitted all-reduce over a [processes]
    axis: each device holds its process's term and the sum, not a copy of every term."""
    if tree is None or jax.process_count() == 1:
        return tree
    devices = np.asarray(jax.devices()).reshape(jax.process_count(), jax.local_device_count())
    mesh = jax.sharding.Mesh(devices, ("processes", "local"))
    spec = jax.sharding.PartitionSpec("processes")
    stacked = multihost_utils.host_local_array_to_global_array(
        jax.tree_util.tree_map(lambda x: np.asarray(x)[None], tree), mesh, spec)
    out = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    total = jax.jit(lambda t: jax.tree_util.tree_map(lambda x: x.sum(axis=0), t),
                    out_shardings=out)(stacked)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(
        x.addressable_data(0))), total)


def _combine_processes(carry: Any, ids: np.ndarray, outputs: Any, positions: np.ndarray
                       ) -> tuple[Any, np.ndarray, Any]:
    """Every process's share of a pass, on every process: the carries summed (a carry is
    a sum over examples, or None), the ids and per-example outputs gathered and put back
    in pass order (as one process would have produced them)."""
    carry = sum_over_processes(carry)
    counts = np.asarray(multihost_utils.process_allgather(np.array([len(ids)], np.int64)))
    width = int(counts.max())

    def gather_rows(x: np.ndarray) -> np.ndarray:  # [rows, ...] of each process, padded
        padded = np.zeros((width, *x.shape[1:]), x.dtype)
        padded[:len(x)] = x
        every = np.asarray(multihost_utils.process_allgather(padded))
        return np.concatenate([every[p, :int(n)] for p, n in enumerate(counts.reshape(-1))])

    order = np.argsort(gather_rows(positions), kind="stable")
    ids = gather_rows(ids)[order]
    if outputs is not None:
        outputs = jax.tree_util.tree_map(lambda o: gather_rows(np.asarray(o))[order], outputs)
    return carry, ids, outputs
