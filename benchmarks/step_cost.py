"""Cost of one train step per method on the real MiniLM at sequence length 128.

  python benchmarks/step_cost.py --methods=full,fish --json benchmarks/results/step_cost.json

Each method runs in a fresh process (so peak memory is its own): the trainer is built as
`train.py` builds it (quickstart sample, every batch padded to 128 tokens, batch 32), the
step is compiled and warmed up, then `--steps` steps are timed one by one. Reported per
method: `step_s` (median seconds per step), `step_ratio_vs_full`, `peak_rss_mb`,
`opt_state_bytes` (optimizer state), `trainable_entries`, and `artifact_bytes` (what
must be stored per task: for the dense methods here, every parameter).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(method: str, steps: int) -> dict:
    import jax

    from configs import quickstart
    from fishjax.sharding import put_batch
    from fishjax.trainer import Trainer, iterate_batches
    from fishjax.tree import tree_bytes

    config = quickstart.get_config()
    config.method.name = method
    config.data.max_length = 128
    config.data.buckets = (128,)
    config.train.batch_size = 32
    config.method.fisher.num_samples = 64  # selection cost is not what is measured here
    trainer = Trainer(config, tempfile.mkdtemp(prefix=f"step-cost-{method}-"))
    batches = [put_batch(b, trainer.mesh) for b in
               iterate_batches(trainer.data.train, 32, seed=0, epoch=0, shuffle=True)]
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        trainer.state, metrics = trainer.train_step(trainer.state, trainer.frozen,
                                                    batches[i % len(batches)])
        jax.block_until_ready(metrics["loss"])
        if i >= 2:  # the first two include compilation
            times.append(time.perf_counter() - t0)
    return {
        "step_s": float(np.median(times)),
        "step_s_all": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "opt_state_bytes": tree_bytes(trainer.state.opt_state),
        "trainable_entries": trainer.setup.summary()["trainable_entries"],
        "artifact_bytes": tree_bytes(trainer.setup.dense_params(trainer.state.trainable)),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="full,fish")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        print("RESULT" + json.dumps(measure(args.child, args.steps)))
        return {}

    per_method = {}
    for m in args.methods.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", m, "--steps", str(args.steps)],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{m} failed:\n{out.stderr[-3000:]}")
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
        per_method[m] = json.loads(line[len("RESULT"):])
        print(f"{m}: {per_method[m]['step_s']:.3f} s/step, peak {per_method[m]['peak_rss_mb']:.0f}"
              f" MB, opt state {per_method[m]['opt_state_bytes'] / 2**20:.1f} MiB", flush=True)
    if "full" in per_method:
        for r in per_method.values():
            r["step_ratio_vs_full"] = r["step_s"] / per_method["full"]["step_s"]

    import jax

    result = {"model": "minilm-l6", "seq_len": 128, "batch": 32, "steps": args.steps,
              "methods": per_method, "backend": jax.default_backend(),
              "cpu_count": os.cpu_count(), "platform": platform.platform(),
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps({m: {k: v for k, v in r.items() if k != "step_s_all"}
                      for m, r in per_method.items()}, indent=2))
    if args.json:
        from fishjax.io_utils import atomic_write_json

        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
