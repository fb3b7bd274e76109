"""Trained X-PEFT pools: adapters trained on shards of other GLUE tasks, stacked into banks.

  python -m benchmarks.xpeft.xpeft_banks --glue_dir=../shared/data/glue --targets=rte,mrpc \\
      --per_source=16 --sizes=8,32

A trained pool of N adapters costs N adapter runs, so each adapter trains briefly on a
shard. For target task T the pool holds adapters of the other tasks of {rte, mrpc, sst2},
never of T (a profile for T must not see T's data through the pool). Adapter i of source
task S: the `adapter` method at X-PEFT's slots (`adapter_pfeiffer`: after each FFN,
bottleneck hidden/16 = 24 on minilm-l6), on `--shard_size` (1024) training examples of S
drawn with seed i (`data.max_train_samples`, `seed=i`: the seeded subset, the head init and
the data order; RTE's and MRPC's shards overlap, their training sets being 2,490 and
3,668 rows), `--epochs` (2) epochs (64 steps of 32), the grid's adapter learning rate
(1e-3), scored on `--eval_size` (128) dev examples of S (recorded in the manifest, not
used). Shorter shards do not train: 256 examples x 2 epochs (16 steps) left every shard
at its task's chance or majority score (a first build, discarded). The bank of (T, N)
stacks the first N/2 adapters of each source, sources interleaved
(`fishjax.methods.xpeft.bank_file.stack_peft_files`), written to `<out>/<T>-n<N>.safetensors`.

Shard runs are resumable: a shard whose workdir holds a finished `peft.safetensors` is not
trained again. `<out>/manifest.json` records every shard (its dev score, seconds, the
sha256 of its PEFT file) and every bank (its sources and fingerprint). The banks (3.6 MB at
N=8, 14.5 MB at N=32 on minilm-l6) and shard workdirs are not committed; the manifest is.
"""

from __future__ import annotations

import logging
import os
import time

from benchmarks.common import cli
from benchmarks.grid import glue
from fishjax.core.io import atomic_write_json, file_sha256, read_json
from fishjax.methods.peft.peft_file import PEFT_FILE
from fishjax.methods.xpeft.bank_file import save_bank, stack_peft_files
from fishjax.train.trainer import train_and_evaluate

log = logging.getLogger("fishjax.benchmarks")

DEFAULT_OUT = "benchmarks/results/xpeft_banks"
SOURCES = ("rte", "mrpc", "sst2")
SHARD_METHOD = "adapter_pfeiffer"


def shard_id(task: str, i: int) -> str:
    return f"{task}-s{i}"


def sources_for(target: str) -> list[str]:
    """The tasks a target's pool is trained on: every source task but the target."""
    return [s for s in SOURCES if s != target]


def shard_config(task: str, i: int, args):
    """The config of adapter i of source `task` (see the module docstring)."""
    grid_args = glue.parse_args([
        "--model", args.model, "--train_subset", "none",
        *(["--glue_dir", args.glue_dir] if args.glue_dir else []),
        "--set", f"data.max_train_samples={args.shard_size}",
        "--set", f"data.max_eval_samples={args.eval_size}",
        "--set", f"train.num_epochs={float(args.epochs)}", "--set", "train.export=False"])
    return glue.cell_config(task, SHARD_METHOD, i, grid_args)


def train_shard(task: str, i: int, args) -> dict:
    workdir = os.path.join(args.out, "shards", shard_id(task, i))
    peft_file = os.path.join(workdir, PEFT_FILE)
    t0 = time.perf_counter()
    if os.path.exists(peft_file) and os.path.exists(os.path.join(workdir, "results.json")):
        res = read_json(os.path.join(workdir, "results.json"))
    else:
        res = train_and_evaluate(shard_config(task, i, args), workdir)
    return {"task": task, "seed": i, "peft_file": peft_file, "peft_sha256": file_sha256(peft_file),
            "final_eval": res["final_eval"], "wall_s": time.perf_counter() - t0,
            "train_s": res.get("train_s")}


def bank_path(out: str, target: str, n: int) -> str:
    return os.path.join(out, f"{target}-n{n}.safetensors")


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=None)
    p.add_argument("--targets", default="rte,mrpc")
    p.add_argument("--sizes", default="8,32", help="bank sizes N (even)")
    p.add_argument("--per_source", type=int, default=None,
                   help="adapters per source task (default: max N / 2)")
    p.add_argument("--shard_size", type=int, default=1024)
    p.add_argument("--eval_size", type=int, default=128)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--compilation_cache", default=glue.DEFAULT_COMPILATION_CACHE)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("fishjax").setLevel(logging.INFO)
    glue.use_compilation_cache(args.compilation_cache)
    targets = args.targets.split(",")
    sizes = [int(n) for n in args.sizes.split(",")]
    if any(n % 2 or n < 2 for n in sizes):
        raise SystemExit(f"--sizes must be even (half of each bank per source task): {sizes}")
    per_source = args.per_source or max(sizes) // 2
    if per_source < max(sizes) // 2:
        raise SystemExit(f"--per_source={per_source} cannot fill a bank of {max(sizes)}")
    needed = sorted({s for t in targets for s in sources_for(t)})
    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = read_json(manifest_path) if os.path.exists(manifest_path) else {}
    manifest.update({"protocol": {"method": SHARD_METHOD, "shard_size": args.shard_size,
                                  "epochs": args.epochs, "eval_size": args.eval_size,
                                  "model": args.model, "sources": list(SOURCES)},
                     "shards": manifest.get("shards", {}), "banks": manifest.get("banks", {})})
    todo = [(s, i) for i in range(per_source) for s in needed]  # every task early
    for n, (task, i) in enumerate(todo):
        log.info("[%d/%d] adapter shard %s", n + 1, len(todo), shard_id(task, i))
        manifest["shards"][shard_id(task, i)] = train_shard(task, i, args)
        atomic_write_json(manifest_path, manifest)
    for target in targets:
        for size in sizes:
            shards = [manifest["shards"][shard_id(s, i)]
                      for i in range(size // 2) for s in sources_for(target)]
            files = [shard["peft_file"] for shard in shards]
            bank = stack_peft_files(files, [shard["final_eval"] for shard in shards])
            path = save_bank(bank_path(args.out, target, size), bank)
            manifest["banks"][f"{target}-n{size}"] = {
                "path": os.path.relpath(path), "size": bank.size, "sources": files,
                "fingerprint": bank.fingerprint, "bottleneck": bank.spec.size}
            print(f"{path}: {bank.size} adapters from {sources_for(target)}, fingerprint "
                  f"{bank.fingerprint[:12]}", flush=True)
    atomic_write_json(manifest_path, manifest)
    return manifest


if __name__ == "__main__":
    main()
