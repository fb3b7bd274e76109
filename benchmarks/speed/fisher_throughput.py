"""Fisher-scoring throughput on the real MiniLM, against its practical limits.

  python -m benchmarks.speed.fisher_throughput --json benchmarks/results/fisher_throughput.json

On `minilm-l6` at sequence length 128 (random token ids, fixed seed; every example padded
to the full length), measures examples/s of:
- `fisher_scores` (empirical) at several chunk sizes (`--chunks`), batches of 32;
- a plain batched gradient (batch 32, mean loss) — the practical upper limit;
- a PyTorch loop over single examples as the FISH reference does it (backward per
  example, squared gradients summed), if torch is installed (interop extra).
Then peak RSS of `fisher_scores` in fresh processes for N = 256 and N = 1024 examples
(memory must not grow with N). Compilation is excluded from every rate (one warm-up).

JSON keys: fisher_ex_per_s (best chunk), fisher_by_chunk, batched_grad_ex_per_s,
torch_loop_ex_per_s, ratio_vs_batched, ratio_vs_torch_loop, peak_rss_mb (per N), and the
machine description.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import jax
import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from fishjax import objectives
from fishjax.models import load_model
from fishjax.selection.fisher import fisher_scores

SEQ, BATCH, MODEL = 128, 32, "minilm-l6"


def _batches(n: int, vocab: int, seed: int = 0, seq: int = SEQ):
    rng = np.random.default_rng(seed)
    for start in range(0, n, BATCH):
        b = min(BATCH, n - start)
        ids = rng.integers(1000 if vocab > 2000 else 5, vocab, size=(BATCH, seq)).astype(
            np.int32)
        if vocab > 2000:  # a BERT vocab (the tiny test model has its own)
            ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        w = np.zeros(BATCH, np.float32)
        w[:b] = 1.0
        yield {"input_ids": ids, "attention_mask": np.ones((BATCH, seq), np.int32),
               "token_type_ids": np.zeros((BATCH, seq), np.int32),
               "labels": rng.integers(0, 2, size=BATCH).astype(np.int32), "weights": w}


def load_model_and_loss(name: str = MODEL):
    """The model (2 labels) and its task loss."""
    model = load_model(name, 2, key=jax.random.PRNGKey(0))
    return model, objectives.make_loss_fn(model.module, objectives.SequenceClassification())


def fisher_rate(model, loss_fn, n: int, chunk: int, seq: int = SEQ) -> float:
    vocab = model.config.vocab_size
    fisher_scores(loss_fn, model.params, _batches(BATCH, vocab, seq=seq), chunk_size=chunk,
                  progress=False)  # compile
    res = fisher_scores(loss_fn, model.params, _batches(n, vocab, seq=seq), chunk_size=chunk,
                        progress=False)
    return res.num_examples / res.seconds


def batched_grad_rate(model, loss_fn, n: int) -> float:
    grad = jax.jit(jax.grad(loss_fn))
    batches = list(_batches(n, model.config.vocab_size))
    jax.block_until_ready(grad(model.params, batches[0]))
    t0 = time.perf_counter()
    for b in batches:
        jax.block_until_ready(grad(model.params, b))
    return n / (time.perf_counter() - t0)


def torch_loop_rate(model_dir: str, n: int) -> float | None:
    try:
        import torch
        from transformers import BertForSequenceClassification
    except ImportError:
        return None
    # Same device kind as the JAX side: a GPU figure is compared with PyTorch on that GPU.
    dev = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    net = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2).eval().to(dev)
    sums = [torch.zeros_like(p) for p in net.parameters()]
    examples = [(b["input_ids"][i], b["labels"][i]) for b in _batches(n, 30522)
                for i in range(BATCH)][:n]

    def one(ids, label):
        net.zero_grad()
        out = net(input_ids=torch.tensor(ids[None], dtype=torch.long, device=dev),
                  labels=torch.tensor([int(label)], device=dev))
        out.loss.backward()
        for s, p in zip(sums, net.parameters(), strict=True):
            s += p.grad.detach() ** 2

    one(*examples[0])  # warm-up
    if dev == "cuda":
        torch.cuda.synchronize()  # the warm-up's queued work is not timed
    t0 = time.perf_counter()
    for ids, label in examples:
        one(ids, label)
    if dev == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def child_peaks(n: int, chunk: int) -> dict:
    """Peak RSS and accelerator memory (MB; the latter None on CPU) of a fresh process
    that scores n examples."""
    out = cli.run_module(__spec__.name, ["--child_n", str(n), "--chunks", str(chunk)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--n", type=int, default=256, help="examples per throughput measurement")
    p.add_argument("--chunks", default="1,2,4,8")
    p.add_argument("--torch_n", type=int, default=64)
    p.add_argument("--memory_n", default="256,1024")
    p.add_argument("--child_n", type=int, default=None, help=argparse.SUPPRESS)
    cli.add_json(p)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    chunks = [int(c) for c in args.chunks.split(",")]
    model, loss_fn = load_model_and_loss()
    if args.child_n is not None:
        fisher_rate(model, loss_fn, args.child_n, chunks[0])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stats = jax.devices()[0].memory_stats() or {}  # None on CPU
        device_peak = stats.get("peak_bytes_in_use")
        print(json.dumps({"peak_rss_mb": peak, "peak_device_mb":
                          None if device_peak is None else device_peak / 2**20}))
        return {}

    by_chunk = {}
    for c in chunks:
        by_chunk[c] = fisher_rate(model, loss_fn, args.n, c)
        print(f"fisher chunk={c}: {by_chunk[c]:.2f} ex/s", flush=True)
    best_chunk = max(by_chunk, key=by_chunk.get)
    batched = batched_grad_rate(model, loss_fn, args.n)
    print(f"batched gradient (batch {BATCH}): {batched:.2f} ex/s", flush=True)
    torch_rate = torch_loop_rate(model.model_dir, args.torch_n)
    print(f"torch single-example loop: {torch_rate} ex/s", flush=True)
    children = {int(n): child_peaks(int(n), best_chunk) for n in args.memory_n.split(",")}
    peaks = {n: c["peak_rss_mb"] for n, c in children.items()}
    device_peaks = {n: c["peak_device_mb"] for n, c in children.items()}
    print(f"peak RSS by N: {peaks}; peak device memory by N: {device_peaks}", flush=True)

    result = {
        "model": MODEL, "seq_len": SEQ, "batch": BATCH, "n": args.n,
        "fisher_ex_per_s": by_chunk[best_chunk], "best_chunk": best_chunk,
        "fisher_by_chunk": {str(k): v for k, v in by_chunk.items()},
        "batched_grad_ex_per_s": batched,
        "torch_loop_ex_per_s": torch_rate,
        "ratio_vs_batched": by_chunk[best_chunk] / batched,
        "ratio_vs_torch_loop": None if torch_rate is None else by_chunk[best_chunk] / torch_rate,
        "peak_rss_mb": {str(k): v for k, v in peaks.items()},
        "peak_device_mb": {str(k): v for k, v in device_peaks.items()},
        "devices": [str(d) for d in jax.devices()], **machine(),
    }
    print(json.dumps(result, indent=2))
    cli.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
