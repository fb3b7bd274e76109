"""XLA's CPU options against fishjax's two hot loops: the train step and the Fisher pass.

  python -m benchmarks.speed.xla_cpu_flags --json benchmarks/results/xla_cpu_flags.json

Each variant (`--variants`, names in VARIANTS: an XLA_FLAGS value) runs in a fresh process
(XLA reads its flags once, at start-up) and times, on `minilm-l6` at sequence length 128:
- the trainer's full fine-tuning step (`train_throughput.time_fishjax`: batch 32, dropout
  on with `--dropout_prng`, default threefry), the median of `--steps` steps after
  `--warmup`;
- the Fisher pass (`fisher_throughput.fisher_rate`: `--fisher_n` examples, chunk sizes
  `--chunks`).
Rates are examples/s; `speedup` is each rate over the `default` variant's, measured in the
same run. The JSON also records the CPU model (speed ratios differ by CPU).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from benchmarks.speed import fisher_throughput as ft
from benchmarks.speed import train_throughput as tt

# XLA_FLAGS per variant (flags the installed jaxlib knows; an unknown flag aborts XLA).
VARIANTS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "no_thunks": "--xla_cpu_use_thunk_runtime=false",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "single_eigen": "--xla_cpu_multi_thread_eigen=false",
}


def measure(model: str, steps: int, warmup: int, fisher_n: int, chunks: list[int],
            seq: int = 128, dropout_prng: str = "threefry") -> dict:
    """The child: train-step and Fisher rates under this process's XLA_FLAGS."""
    batch = 32
    times = tt.time_fishjax(model, steps, warmup, [f"train.dropout_prng={dropout_prng}"],
                            batch, seq)
    out = {"train_ex_per_s": batch / float(np.median(times)), "train_step_s": times}
    loaded, loss_fn = ft.load_model_and_loss(model)
    out["fisher_by_chunk"] = {str(c): ft.fisher_rate(loaded, loss_fn, fisher_n, c, seq)
                              for c in chunks}
    out["fisher_ex_per_s"] = max(out["fisher_by_chunk"].values())
    return out


def run_variant(name: str, args) -> dict:
    env = dict(os.environ, XLA_FLAGS=VARIANTS[name], HF_HUB_OFFLINE="1")
    cmd = ["--child", "--model", args.model, "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--fisher_n", str(args.fisher_n), "--chunks", args.chunks,
           "--seq_len", str(args.seq_len), "--dropout_prng", args.dropout_prng]
    done = cli.run_module(__spec__.name, cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr else
                f"exit {done.returncode}"}
    try:
        return cli.child_result(done.stdout)
    except cli.NoChildResult as e:
        return {"error": str(e)}


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--fisher_n", type=int, default=64)
    p.add_argument("--chunks", default="1,8")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--dropout_prng", default="threefry",
                   help="config.train.dropout_prng of the timed train step (the committed "
                   "figures: threefry)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    cli.add_json(p)
    args = p.parse_args(argv)
    chunks = [int(c) for c in args.chunks.split(",") if c]
    if args.child:
        cli.print_child_result(measure(args.model, args.steps, args.warmup, args.fisher_n,
                                       chunks, args.seq_len, args.dropout_prng))
        return {}
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or "default" not in names:
        raise SystemExit(f"--variants: unknown {unknown} or no `default` (known: "
                         f"{', '.join(VARIANTS)})")
    results = {}
    for name in ["default", *[n for n in names if n != "default"]]:
        results[name] = r = run_variant(name, args)
        base = results["default"]
        if "error" not in r and "error" not in base:
            r["speedup"] = {"train": r["train_ex_per_s"] / base["train_ex_per_s"],
                            "fisher": r["fisher_ex_per_s"] / base["fisher_ex_per_s"]}
            print(f"{name:12s} train {r['train_ex_per_s']:6.2f} ex/s "
                  f"({r['speedup']['train']:.2f}x)  fisher {r['fisher_ex_per_s']:6.2f} ex/s "
                  f"({r['speedup']['fisher']:.2f}x)", flush=True)
        elif "error" in r:
            print(f"{name:12s} failed: {r['error']}", flush=True)
        else:
            print(f"{name:12s} measured, no speedup: `default` failed", flush=True)
    out = {"variants": results, "flags": {n: VARIANTS[n] for n in results},
           "model": args.model, "steps": args.steps, "warmup": args.warmup,
           "fisher_n": args.fisher_n, "chunks": chunks, "seq_len": args.seq_len,
           "dropout_prng": args.dropout_prng, **machine()}
    cli.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
