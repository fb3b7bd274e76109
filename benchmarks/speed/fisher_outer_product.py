"""The Fisher pass's two engines on the real MiniLM: per-example gradients vs capture.

  python -m benchmarks.speed.fisher_outer_product \\
      --json benchmarks/results/fisher_outer_product.json

`fisher_scores(..., engine="per_example")` differentiates each example on its own (a scan,
or a vmap of `chunk` examples); `engine="capture"` (`fishjax.selection.capture`) runs one
batched forward/backward, records each Dense/LayerNorm/Embed layer's input and output
cotangent, and forms the per-example gradients from them (only the outer products run per
example). The script first checks that both engines give the same scores (relative error
per leaf, against the leaf's largest entry floored at 1e-6 of the top score, and the
overlap of the top-0.5% masks) on the tiny random model and on MiniLM, then times on
`minilm-l6` at sequence length 128 (random ids, batches of 32, compilation excluded):
each engine at `--chunks`, a plain batched gradient (the practical upper limit) and the
capture engine's batched forward/backward alone (its part that is not per example).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from benchmarks.speed.fisher_throughput import BATCH, _batches, batched_grad_rate
from fishjax import objectives
from fishjax.core.tree import flatten_paths, numpy_leaves
from fishjax.models import (
    EncoderConfig,
    SequenceClassifier,
    init_params,
    load_model,
)
from fishjax.selection import capture
from fishjax.selection.fisher import fisher_scores
from fishjax.selection.topk import top_k_mask


class TinyModel:
    """The random tiny encoder of the unit tests, with the fields used here."""

    def __init__(self):
        self.config = EncoderConfig.tiny()
        self.module = SequenceClassifier(self.config, 2)
        self.params = init_params(self.config, 2, jax.random.PRNGKey(0))


def agreement(model, loss_fn, n: int, seq: int, keep: float = 0.005) -> dict:
    """Max relative error and top-k overlap of the capture scores vs the per-example ones."""
    vocab = model.config.vocab_size
    run = lambda engine: fisher_scores(loss_fn, model.params, _batches(n, vocab, seq=seq),
                                       engine=engine, progress=False).scores
    ref, got = flatten_paths(run("per_example")), flatten_paths(run("capture"))
    # A leaf whose true gradient is 0 (the attention key bias: softmax ignores it) holds
    # rounding noise in both; its error is measured against the floor.
    floor = 1e-6 * max(float(np.max(v)) for v in ref.values())
    err = max(float(np.max(np.abs(np.asarray(got[p]) - np.asarray(v))))
              / max(float(np.max(v)), floor) for p, v in ref.items())
    k = max(1, int(keep * sum(np.size(v) for v in ref.values())))
    masks = [np.concatenate([m.ravel() for m in numpy_leaves(top_k_mask(s, k))])
             for s in (ref, got)]
    return {"max_rel_err": err, "topk_overlap": float(np.sum(masks[0] & masks[1]) / k),
            "k": k, "n": n, "seq": seq}


def engine_rate(model, loss_fn, engine: str, chunk: int, n: int, seq: int) -> float:
    vocab = model.config.vocab_size
    fisher_scores(loss_fn, model.params, _batches(BATCH, vocab, seq=seq), engine=engine,
                  chunk_size=chunk, progress=False)  # compile (and the capture check)
    res = fisher_scores(loss_fn, model.params, _batches(n, vocab, seq=seq), engine=engine,
                        chunk_size=chunk, progress=False)
    return res.num_examples / res.seconds


def records_rate(model, loss_fn, n: int, seq: int) -> float:
    """The capture engine's batched forward/backward alone (no per-example work)."""
    record = jax.jit(lambda p, b: capture.record_layers(loss_fn, p, b))
    batches = list(_batches(n, model.config.vocab_size, seq=seq))
    jax.block_until_ready(record(model.params, batches[0]))
    t0 = time.perf_counter()
    for b in batches:
        jax.block_until_ready(record(model.params, b))
    return n / (time.perf_counter() - t0)


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--n", type=int, default=128, help="examples per throughput measurement")
    p.add_argument("--chunks", default="1,8", help="chunk sizes to time for each engine")
    p.add_argument("--seq", type=int, default=128)
    cli.add_json(p)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    tiny = TinyModel()
    tiny_loss = objectives.make_loss_fn(tiny.module, objectives.SequenceClassification())
    checks = {"tiny": agreement(tiny, tiny_loss, 64, 32)}
    model = load_model("minilm-l6", 2, key=jax.random.PRNGKey(0))
    loss_fn = objectives.make_loss_fn(model.module, objectives.SequenceClassification())
    checks["minilm-l6"] = agreement(model, loss_fn, BATCH, 64)
    print(f"agreement: {checks}", flush=True)

    rates = {}
    for engine in ("per_example", "capture"):
        for c in [int(c) for c in args.chunks.split(",")]:
            rates[f"{engine}_chunk{c}"] = engine_rate(model, loss_fn, engine, c, args.n,
                                                      args.seq)
            print(f"{engine} chunk={c}: {rates[f'{engine}_chunk{c}']:.2f} ex/s", flush=True)
    rates["batched_grad"] = batched_grad_rate(model, loss_fn, args.n)
    print(f"batched gradient (batch {BATCH}): {rates['batched_grad']:.2f} ex/s", flush=True)
    rates["capture_records_only"] = records_rate(model, loss_fn, args.n, args.seq)
    print(f"capture's batched forward/backward alone: {rates['capture_records_only']:.2f} "
          "ex/s", flush=True)
    best = {e: max(v for k, v in rates.items() if k.startswith(f"{e}_chunk"))
            for e in ("per_example", "capture")}
    result = {
        "model": "minilm-l6", "seq_len": args.seq, "batch": BATCH, "n": args.n,
        "agreement": checks, "ex_per_s": rates,
        "capture_vs_per_example": best["capture"] / best["per_example"],
        "capture_vs_batched_grad": best["capture"] / rates["batched_grad"],
        "per_example_vs_batched_grad": best["per_example"] / rates["batched_grad"],
        **machine(),
    }
    print(result)
    cli.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
