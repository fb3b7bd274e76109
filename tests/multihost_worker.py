"""One process of the multi-host tests (tests/test_multihost.py): a FISH run on the tiny model.

  PYTHONPATH=. python tests/multihost_worker.py --out=OUT.json --workdir=W --model_dir=M \
      --cache_dir=C --devices=2 [--process_id=0 --num_processes=2 --port=P] [--stop_after=N]

Records what the test checks: the results, a hash of the final train state, the mask,
the rows this process fed to the first train batches, its own share of the Fisher pass's
backward passes, and every fishjax file write it made.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("out", "workdir", "model_dir", "cache_dir"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--process_id", type=int, default=None)
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--stop_after", type=int, default=0)
    p.add_argument("--fisher_batch_size", type=int, default=8)
    p.add_argument("--heartbeat_timeout", type=int, default=100)
    p.add_argument("--die_at_step", type=int, default=0,
                   help="process 1 SIGKILLs itself at this step")
    args = p.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

    import signal

    import jax
    import numpy as np

    from benchmarks.common.tiny_model import make_tiny_config
    from fishjax.core import io as core_io
    from fishjax.core.tree import flatten_paths, tree_sha256
    from fishjax.selection import fisher, per_example
    from fishjax.train import trainer
    from fishjax.train.checkpoints import Checkpoints

    config = make_tiny_config(args.model_dir, args.cache_dir)
    config.method.name = "fish"
    config.method.keep_ratio = 0.05
    config.method.fisher.num_samples = 48
    config.method.fisher.batch_size = args.fisher_batch_size
    config.train.checkpoint_every_steps = 4
    if args.stop_after:
        config.train.stop_after_steps = args.stop_after
    if args.num_processes > 1:
        config.distributed.enabled = True
        config.distributed.coordinator_address = f"127.0.0.1:{args.port}"
        config.distributed.num_processes = args.num_processes
        config.distributed.process_id = args.process_id
        config.distributed.heartbeat_timeout = args.heartbeat_timeout

    record = {"writes": [], "fed": [], "fisher_local_backward_passes": [],
              "fisher_backward_passes": []}
    real_write = core_io.atomic_write

    def atomic_write(path, write):  # every fishjax file write of this process
        record["writes"].append(os.path.basename(os.fspath(path)))
        return real_write(path, write)

    core_io.atomic_write = atomic_write
    real_place = jax.make_array_from_process_local_data

    def place(sharding, local, global_shape=None):  # the rows this process feeds
        if len(record["fed"]) < 6 and np.ndim(local) == 2:
            record["fed"].append({"local": np.asarray(local).tolist(),
                                  "global_rows": int(global_shape[0])})
        return real_place(sharding, local, global_shape)

    jax.make_array_from_process_local_data = place
    real_pass = per_example.example_pass

    def example_pass(*a, **k):
        out = real_pass(*a, **k)
        record["fisher_local_backward_passes"].append(out.local_backward_passes)
        record["fisher_backward_passes"].append(out.backward_passes)
        return out

    fisher.example_pass = example_pass
    trainer_step = trainer.Trainer.step

    def step(self, batch):
        if (args.die_at_step and args.process_id == 1
                and int(self.state.step) + 1 == args.die_at_step):
            os.kill(os.getpid(), signal.SIGKILL)
        return trainer_step(self, batch)

    trainer.Trainer.step = step

    results = trainer.train_and_evaluate(config, args.workdir)
    ckpt = Checkpoints(args.workdir)
    state = ckpt.restore_latest(None)
    ckpt.close()
    keep = {k: results.get(k) for k in ("step", "finished", "final_eval", "best", "task",
                                        "method", "method_summary")}
    record.update({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "results": keep, "state_sha256": tree_sha256(state["trainable"])})
    with open(args.out, "w") as f:
        json.dump(record, f)
    # The final trainable params (replicated: every process holds them whole).
    params = flatten_paths(jax.tree_util.tree_map(
        lambda x: np.asarray(x.addressable_data(0)), state["trainable"]))
    np.savez(args.out + ".npz", **{"/".join(k): v for k, v in params.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
