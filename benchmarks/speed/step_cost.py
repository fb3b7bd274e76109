"""Cost of one train step per method on the real MiniLM at sequence length 128.

  python -m benchmarks.speed.step_cost --methods=full,fish,fish_sparse,sift,sift@0.005 \
      --json benchmarks/results/step_cost.json

Methods: `full`, `fish` (dense masked, keep ratio 0.5%), `fish_sparse` (the same mask
trained as a sparse increment, `method.sparse_storage=True`), `bitfit`, `random_mask`,
`sift` (rate 1%) and `sift@RATE` (SIFT at another rate, e.g. `sift@0.005`), and any other
registered method by name with its config defaults (e.g. `lora`, `lora_fish`, `adapter`).

Each method runs in a fresh process (so peak memory is its own): the trainer is built as
`train.py` builds it (quickstart sample, every batch padded to 128 tokens, batch 32), the
step is compiled and warmed up, then `--steps` steps are timed one by one. Reported per
method: `step_s` (median seconds per step), `step_ratio_vs_full`, `peak_rss_mb`,
`opt_state_bytes` (optimizer state), `trainable_entries`, and `artifact_bytes` (what must
be stored per task: every parameter for the dense methods; for the sparse-increment
methods the size of the delta file written by the trainer, i.e. int32 indices + float32
values + the dense head + its JSON header). With `full` in the list, `checks` compares
against the acceptance figures of the sparse path (SIFT at 1%: optimizer state <= 3% of
full's and step time <= 1.05x; task artefact of SIFT at 0.5% <= 1.5 MB) and, where run,
LoRA-FISH's step time against vanilla LoRA's (<= 1.05x). `forward_s` is the median time of
one jitted forward pass (batch 32, length 128) of the params a method exports
(`dense_params`: for LoRA/DoRA the merged kernels; None where the method cannot be merged
into the base architecture, e.g. adapters), so `forward_ratio_vs_full` is the inference
cost after merging relative to the base model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

import jax
import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from configs import quickstart
from fishjax.core.tree import tree_bytes
from fishjax.train.trainer import Trainer


def method_config(spec: str):
    """The quickstart config at seq 128 / batch 32 for a method spec (see module doc)."""
    config = quickstart.get_config()
    name, _, rate = spec.partition("@")
    if name == "fish_sparse":
        config.method.name = "fish"
        config.method.sparse_storage = True
    else:
        config.method.name = name
    if name == "sift":
        config.method.sift.rate = float(rate) if rate else 0.01
    elif rate:
        config.method.keep_ratio = float(rate)
    config.data.max_length = 128
    config.data.buckets = (128,)
    config.train.batch_size = 32
    config.method.fisher.num_samples = 64  # selection cost is not what is measured here
    return config


def measure(spec: str, steps: int) -> dict:
    config = method_config(spec)
    workdir = tempfile.mkdtemp(prefix=f"step-cost-{spec.replace('@', '-')}-")
    trainer = Trainer(config, workdir)
    batches = [trainer.place(b) for b in trainer.epoch_batches(0)]
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        metrics = trainer.step(batches[i % len(batches)])
        jax.block_until_ready(metrics["loss"])
        if i >= 2:  # the first two include compilation
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    forward_s = None
    if trainer.setup.exportable:  # the exported (merged) params on the plain model
        dense = jax.device_put(trainer.setup.dense_params(trainer.state.trainable))
        forward = jax.jit(trainer.apply_fn)
        fwd_times = []
        for i in range(steps + 2):
            t0 = time.perf_counter()
            jax.block_until_ready(forward(dense, batches[i % len(batches)]))
            if i >= 2:
                fwd_times.append(time.perf_counter() - t0)
        forward_s = float(np.median(fwd_times))
    summary = trainer.setup.summary()
    paths = trainer.save_artifacts()  # the files a finished run writes, if any
    if paths is not None:
        artifact = sum(os.path.getsize(p) for p in paths.values())
    else:
        artifact = tree_bytes(trainer.setup.dense_params(trainer.state.trainable))
    return {
        "step_s": float(np.median(times)),
        "step_s_all": times,
        "forward_s": forward_s,
        "peak_rss_mb": peak,
        "opt_state_bytes": tree_bytes(trainer.state.opt_state),
        "trainable_entries": summary["trainable_entries"],
        "sparse_entries": summary.get("sparse_entries"),
        "head_entries": summary.get("head_entries"),
        "artifact_bytes": artifact,
    }


def checks(per_method: dict) -> dict:
    """The acceptance figures of the sparse path, where the needed methods were run."""
    out = {}
    full = per_method.get("full")
    if full and "sift" in per_method:
        out["sift_opt_state_vs_full"] = (per_method["sift"]["opt_state_bytes"]
                                         / full["opt_state_bytes"])
        out["sift_opt_state_ok (<= 0.03)"] = out["sift_opt_state_vs_full"] <= 0.03
        out["sift_step_vs_full"] = per_method["sift"]["step_s"] / full["step_s"]
        out["sift_step_ok (<= 1.05)"] = out["sift_step_vs_full"] <= 1.05
    if "lora" in per_method and "lora_fish" in per_method:
        out["lora_fish_step_vs_lora"] = (per_method["lora_fish"]["step_s"]
                                         / per_method["lora"]["step_s"])
        out["lora_fish_step_ok (<= 1.05)"] = out["lora_fish_step_vs_lora"] <= 1.05
    if "sift@0.005" in per_method:
        out["sift_0.5%_artifact_mb"] = per_method["sift@0.005"]["artifact_bytes"] / 1e6
        out["sift_0.5%_artifact_ok (<= 1.5 MB)"] = out["sift_0.5%_artifact_mb"] <= 1.5
    return out


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--methods", default="full,fish,fish_sparse,sift,sift@0.005")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    cli.add_json(p)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        cli.print_child_result(measure(args.child, args.steps))
        return {}

    per_method = {}
    for m in args.methods.split(","):
        out = cli.run_module(__spec__.name, ["--child", m, "--steps", str(args.steps)],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{m} failed:\n{out.stderr[-3000:]}")
        per_method[m] = cli.child_result(out.stdout)
        print(f"{m}: {per_method[m]['step_s']:.3f} s/step, peak {per_method[m]['peak_rss_mb']:.0f}"
              f" MB, opt state {per_method[m]['opt_state_bytes'] / 2**20:.1f} MiB", flush=True)
    if "full" in per_method:
        full = per_method["full"]
        for r in per_method.values():
            r["step_ratio_vs_full"] = r["step_s"] / full["step_s"]
            if r.get("forward_s") and full.get("forward_s"):
                r["forward_ratio_vs_full"] = r["forward_s"] / full["forward_s"]

    result = {"model": "minilm-l6", "seq_len": 128, "batch": 32, "steps": args.steps,
              "methods": per_method, "checks": checks(per_method), **machine()}
    print(json.dumps({m: {k: v for k, v in r.items() if k != "step_s_all"}
                      for m, r in per_method.items()}, indent=2))
    print(json.dumps(result["checks"], indent=2))
    cli.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
