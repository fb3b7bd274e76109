"""The feature pass of multi-source selection on a decoder vs one batched gradient, on CPU.

  python -m benchmarks.multisource.feature_speed \\
      --json benchmarks/results/multisource_feature_speed.json

The model (`--model`, SmolLM2-135M by default) with the meta-initialisation's LoRA of
`configs/select_sources.py:ni` (rank `--rank` on the attention and MLP projections; lora_B
made non-zero so the adapter is not at its start); one batch of `--batch` random rows of
`--seq_len` tokens, the second half of each row its target. Timed, median of `--steps`
calls after a compiling one:

- batched gradient: one `jax.grad` of the batch's mean target loss w.r.t. the adapter
  (what a training step differentiates);
- feature pass: `fishjax.selection.multisource.gradient_features` over the same rows:
  each row's answer log-odds and its adapter gradient projected to `--p` dimensions, the
  projection held whole (`held`) or regenerated from its key leaf by leaf inside each step
  (`regenerated`: no d x p matrix in memory).

Reported: examples/s of each, the ratio feature pass / batched gradient (goal >= 0.9, as
the Fisher pass's), the projection's bytes and the process's peak RSS.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine, peak_rss_mib
from benchmarks.speed.decoder import make_batch
from configs.select_sources import get_config
from fishjax.core.tree import split_tree
from fishjax.methods.peft.method import peft_combine
from fishjax.models import load_model
from fishjax.objectives import CausalLanguageModeling, make_feature_fn
from fishjax.params.peft import PeftSpec, find_targets, init_peft
from fishjax.selection import multisource as ms


def adapter_model(model_name: str, rank: int, seed: int = 0):
    """(output(params, batch), params {"trainable": {"peft"}, "frozen": base}, eligible)."""
    model = load_model(model_name, None, key=jax.random.PRNGKey(seed))
    lora = get_config("ni").method.peft
    spec = PeftSpec("lora", rank, find_targets(model.params, "lora", lora.lora_targets),
                    scaling=lora.alpha / lora.rank)
    tree = init_peft(model.params, spec, jax.random.PRNGKey(seed + 1))
    tree = jax.tree_util.tree_map(lambda x: x + 1e-3, tree)  # lora_B away from zero
    feature = make_feature_fn(model.module, CausalLanguageModeling())
    combine = peft_combine(spec)

    def output(params, batch):
        return feature(combine(params["trainable"], params["frozen"]), batch)

    params = {"trainable": {"peft": tree}, "frozen": model.params}
    eligible = {"trainable": {"peft": jax.tree_util.tree_map(lambda _: True, tree)},
                "frozen": jax.tree_util.tree_map(lambda _: False, model.params)}
    return output, params, eligible, model


def median_seconds(fn, steps: int) -> tuple[float, float]:
    """(first call's seconds, with compilation; median of `steps` further calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return first, float(np.median(runs))


def measure(args) -> dict[str, Any]:
    output, params, eligible, model = adapter_model(args.model, args.rank)
    vocab = model.config.vocab_size
    batch = make_batch(vocab, args.batch, args.seq_len)
    batch["example_ids"] = np.arange(args.batch)
    n = args.batch
    on, off = split_tree(params, eligible)
    adapter_entries = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(on))

    def mean_loss(on_params, off_params, b):  # the frozen base an argument, not a constant
        f = output({"trainable": on_params["trainable"], "frozen": off_params["frozen"]}, b)
        return jnp.mean(jax.nn.softplus(-f))

    grad = jax.jit(jax.grad(mean_loss))
    plain = {k: v for k, v in batch.items() if k != "example_ids"}
    first, grad_s = median_seconds(lambda: jax.block_until_ready(grad(on, off, plain)),
                                   args.steps)
    out: dict[str, Any] = {
        "model": args.model, "batch": n, "seq_len": args.seq_len, "rank": args.rank,
        "adapter_entries": adapter_entries, "p": args.p,
        "batched_grad": {"s": grad_s, "first_s": first, "ex_per_s": n / grad_s}}
    for mode in args.projection.split(","):
        max_bytes = (1 << 40) if mode == "held" else 0
        projection = ms.make_projection({"trainable": on["trainable"]}, args.p,
                                        jax.random.PRNGKey(0), max_bytes)

        def run(projection=projection):
            return ms.gradient_features(output, params, [dict(batch)], projection,
                                        eligible=eligible, chunk_size=args.chunk_size,
                                        progress=False)

        first, s = median_seconds(run, args.steps)
        out[mode] = {"s": s, "first_s": first, "ex_per_s": n / s,
                     "vs_batched_grad": grad_s / s,
                     "projection_bytes": 4 * adapter_entries * args.p if mode == "held" else 0}
        print(f"{mode}: {n / s:.2f} examples/s, {grad_s / s:.2f}x the batched gradient "
              f"({n / grad_s:.2f} examples/s)", flush=True)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = cli.parser(__doc__)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=160)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--p", type=int, default=200)
    p.add_argument("--chunk_size", default="auto")
    p.add_argument("--projection", default="held,regenerated",
                   help="comma-separated: held, regenerated")
    p.add_argument("--steps", type=int, default=2)
    cli.add_json(p)
    args = p.parse_args(argv)
    if args.chunk_size != "auto":
        args.chunk_size = int(args.chunk_size)
    out = {**measure(args), **machine()}
    cli.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
