"""Full fine-tuning throughput: fishjax's train step vs PyTorch/transformers, same model.

  python -m benchmarks.speed.train_throughput --json benchmarks/results/train_throughput.json

On `minilm-l6` (`--model`), batch 32 (`--batch`), sequence length 128 (`--seq_len`;
random token ids, fixed seed, every example the full length), one full fine-tuning step
(forward, backward, AdamW) is timed, in a fresh process per framework:
- fishjax: the trainer's own compiled `train_step` (a `Trainer` built as `train.py` builds
  it, method `full`: dropout on, gradient clipping at 1.0, AdamW with weight decay and
  the warmup/linear-decay schedule), fed the benchmark's batches;
- torch (the `interop` extra): transformers' `BertForSequenceClassification` loaded from the
  same weight folder (`train()` mode, dropout on), `torch.optim.AdamW` (lr 1e-4, weight
  decay 0.01), `clip_grad_norm_(1.0)`, with `torch.set_num_threads(--threads)`.
The classifier heads are initialised independently (irrelevant to speed). The first
`--warmup` steps (compilation, allocator warm-up) are excluded; the rate is batch / the
median of the next `--steps` step times.

JSON keys: `fishjax_ex_per_s`, `torch_ex_per_s`, `ratio_vs_torch` (fishjax / torch; null
without torch), `fishjax_step_s` / `torch_step_s` (every timed step), the settings (model,
batch, seq_len, steps, warmup, threads, fishjax overrides), versions and the machine.
`--fishjax_set key=value` overrides the fishjax config (e.g. `model.dtype=bfloat16`,
`model.attention_dropout=0.0`) to see what moves the rate.

`--dropout_prngs threefry,rbg,unsafe_rbg,off` also times fishjax once per dropout PRNG
(`config.train.dropout_prng`; `off`: dropout 0, the ceiling), each in its own process in
the same run; JSON key `dropout_prngs`: {name: {ex_per_s, ratio_vs_torch, step_s}}.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import tempfile
import time

import jax
import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from benchmarks.grid.glue import apply_override
from configs import quickstart
from fishjax.models import resolve_model_dir
from fishjax.train.trainer import Trainer

LR = 1e-4


def make_batches(n: int, vocab: int, batch: int = 32, seq: int = 128,
                 seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`n` batches of random full-length examples (BERT vocab: [CLS] ... [SEP]; 2 labels)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(1000 if vocab > 2000 else 5, vocab, size=(batch, seq)).astype(np.int32)
        if vocab > 2000:
            ids[:, 0], ids[:, -1] = 101, 102
        out.append({"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int32),
                    "token_type_ids": np.zeros((batch, seq), np.int32),
                    "labels": rng.integers(0, 2, size=batch).astype(np.int32),
                    "weights": np.ones(batch, np.float32)})
    return out


def fishjax_config(model: str, overrides: list[str], batch: int = 32, seq: int = 128):
    config = quickstart.get_config()
    config.method.name = "full"
    config.model.name = model
    config.data.max_length = seq
    config.data.buckets = (seq,)
    config.train.batch_size = batch
    config.train.learning_rate = LR
    config.train.num_steps = 1000  # the schedule's length; only a few steps are run
    for assignment in overrides:
        apply_override(config, assignment)
    return config


def time_fishjax(model: str, steps: int, warmup: int, overrides: list[str], batch: int = 32,
                 seq: int = 128) -> list[float]:
    """Seconds per step of the trainer's compiled train step (after `warmup` steps)."""
    trainer = Trainer(fishjax_config(model, overrides, batch, seq),
                      tempfile.mkdtemp(prefix="train-throughput-"))
    batches = [trainer.place(b) for b in
               make_batches(min(steps + warmup, 8), trainer.model.config.vocab_size, batch,
                            seq)]
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        # One compiled program: its outputs (metrics and new state) are ready together.
        jax.block_until_ready(trainer.step(batches[i % len(batches)]))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def time_torch(model: str, steps: int, warmup: int, threads: int, batch: int = 32,
               seq: int = 128) -> list[float] | None:
    """Seconds per step of BertForSequenceClassification + AdamW, or None without torch."""
    try:
        import torch
        from transformers import BertForSequenceClassification
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = BertForSequenceClassification.from_pretrained(resolve_model_dir(model),
                                                        num_labels=2).train()
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.01, eps=1e-8)
    batches = [{k: torch.tensor(v, dtype=torch.long) for k, v in b.items() if k != "weights"}
               for b in make_batches(min(steps + warmup, 8), net.config.vocab_size, batch, seq)]
    times = []
    for i in range(warmup + steps):
        b = batches[i % len(batches)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = net(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


# What each --dropout_prngs name sets on top of --fishjax_set.
PRNG_SETS = {"threefry": ["train.dropout_prng=threefry"], "rbg": ["train.dropout_prng=rbg"],
             "unsafe_rbg": ["train.dropout_prng=unsafe_rbg"],
             "off": ["model.attention_dropout=0.0", "model.hidden_dropout=0.0"]}


def run_child(framework: str, args, extra_sets: list[str] = ()) -> list[float] | None:
    """Times one framework in a fresh process (its own threads and memory)."""
    cmd = ["--child", framework, "--model", args.model, "--batch", str(args.batch),
           "--seq_len", str(args.seq_len), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--threads", str(args.threads)]
    for s in [*args.fishjax_set, *extra_sets]:
        cmd += ["--fishjax_set", s]
    out = cli.run_module(__spec__.name, cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{framework} failed:\n{out.stderr[-3000:]}")
    return cli.child_result(out.stdout)


def _versions() -> dict[str, str | None]:
    out = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "torch", "transformers"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def rate(times: list[float] | None, batch: int) -> float | None:
    return None if not times else batch / float(np.median(times))


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--model", default="minilm-l6", help="alias, hub id or HF folder (BERT)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per framework")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch.set_num_threads (default: every core)")
    p.add_argument("--frameworks", default="fishjax,torch")
    p.add_argument("--fishjax_set", action="append", default=[],
                   help="fishjax config override key=value")
    p.add_argument("--dropout_prngs", default="",
                   help="comma list of threefry, rbg, unsafe_rbg, off: fishjax timed per PRNG")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    cli.add_json(p)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.seq_len < 2:
        raise SystemExit("need --steps >= 1, --warmup >= 0, --batch >= 1, --seq_len >= 2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        timer = {"fishjax": lambda: time_fishjax(args.model, args.steps, args.warmup,
                                                 args.fishjax_set, args.batch, args.seq_len),
                 "torch": lambda: time_torch(args.model, args.steps, args.warmup, args.threads,
                                             args.batch, args.seq_len)}
        cli.print_child_result(timer[args.child]())
        return {}

    frameworks = args.frameworks.split(",")
    unknown = set(frameworks) - {"fishjax", "torch"}
    if unknown:
        raise SystemExit(f"--frameworks: unknown {sorted(unknown)} (fishjax, torch)")
    prngs = [x for x in args.dropout_prngs.split(",") if x]
    if set(prngs) - set(PRNG_SETS):
        raise SystemExit(f"--dropout_prngs: unknown {sorted(set(prngs) - set(PRNG_SETS))} "
                         f"({', '.join(PRNG_SETS)})")
    times = {}
    for fw in frameworks:
        times[fw] = run_child(fw, args)
        r = rate(times[fw], args.batch)
        print(f"{fw}: " + ("not installed" if r is None else
                           f"{r:.2f} ex/s (median {np.median(times[fw]):.3f} s/step)"),
              flush=True)
    fj, th = rate(times.get("fishjax"), args.batch), rate(times.get("torch"), args.batch)
    by_prng = {}
    for name in prngs:  # after torch: every variant compared with the same torch figure
        t = run_child("fishjax", args, PRNG_SETS[name])
        r = rate(t, args.batch)
        ratio = None if th is None or r is None else r / th
        by_prng[name] = {"ex_per_s": r, "ratio_vs_torch": ratio, "step_s": t}
        print(f"fishjax dropout {name}: " + ("no steps" if r is None else f"{r:.2f} ex/s") + (
            "" if ratio is None else f" ({ratio:.2f}x torch)"), flush=True)
    result = {
        "fishjax_ex_per_s": fj, "torch_ex_per_s": th,
        "ratio_vs_torch": None if fj is None or th is None else fj / th,
        "fishjax_step_s": times.get("fishjax"), "torch_step_s": times.get("torch"),
        "dropout_prngs": by_prng,
        "model": args.model, "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps,
        "warmup": args.warmup, "threads": args.threads, "fishjax_overrides": args.fishjax_set,
        "versions": _versions(), **machine(),
    }
    print(json.dumps({k: v for k, v in result.items()
                      if not k.endswith("_step_s") and k != "dropout_prngs"}, indent=2))
    cli.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
