"""Time to estimate many subsets with the first-order multi-source estimator, on CPU.

  python -m benchmarks.multisource.multisource_speed \\
      --json benchmarks/results/multisource_speed.json
  python -m benchmarks.multisource.multisource_speed \\
      --features WORKDIR/features.safetensors  # real ones

`fishjax.selection.multisource.estimate_subsets` on `--subsets` (1000) random subsets of
`--sources` (20) sources holding half of them each: the per-subset logistic fits (one
vmapped, compiled call) and the target read-out. Features: a selection run's
`features.safetensors` (its source and target examples; sources = `--sources` equal
groups of its rows), or synthetic ones of MRPC's size (3,301 source and 367 target
examples, p = 200). Reports the first call (with compilation) and the median of
`--repeats` further calls. Goal: under 10 s for 1000 subsets.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from fishjax.core.errors import FishjaxError
from fishjax.core.safetensors_io import read_tagged
from fishjax.select_sources import FEATURES_KEY
from fishjax.selection import multisource as ms


def load_features(path: str | None, n: int, n_target: int, p: int, seed: int = 0):
    if path:
        t, meta = read_tagged(path, FEATURES_KEY, FishjaxError, "features")
        return (ms.Features(t["source_ids"], t["source_f"], t["source_g"], 0.0),
                ms.Features(t["target_ids"], t["target_f"], t["target_g"], 0.0),
                float(meta["phi_norm"]))
    rng = np.random.default_rng(seed)
    make = lambda k: ms.Features(np.arange(k), rng.normal(size=k).astype(np.float32),  # noqa
                                 (0.1 * rng.normal(size=(k, p))).astype(np.float32), 0.0)
    return make(n), make(n_target), 1.0


def measure(src, tgt, phi_norm: float, sources: int, subsets: int, repeats: int,
            c: float) -> dict:
    source_of = np.arange(len(src.f)) * sources // len(src.f)
    p = src.g.shape[1]
    gram = np.eye(p, dtype=np.float32) * (src.g.shape[0] / p)
    a = ms.sample_subsets(sources, subsets, 0.5, 0)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        est = ms.estimate_subsets(src, source_of, tgt, a, gram, 0.05 * phi_norm, c=c)
        times.append(time.perf_counter() - t0)
    return {"subsets": subsets, "sources": sources, "source_examples": len(src.f),
            "target_examples": len(tgt.f), "p": p, "C": c, "first_call_s": times[0],
            "median_s": float(np.median(times[1:])), "times_s": times,
            "per_subset_ms": 1000 * float(np.median(times[1:])) / subsets,
            "solver_last_step_max": float(np.max(est.last_step)),
            "goal_ok (< 10 s)": float(np.median(times[1:])) < 10.0}


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--features", default=None, help="a selection run's features.safetensors")
    p.add_argument("--subsets", type=int, default=1000)
    p.add_argument("--sources", type=int, default=20)
    p.add_argument("--n", type=int, default=3301, help="synthetic source examples")
    p.add_argument("--n_target", type=int, default=367, help="synthetic target examples")
    p.add_argument("--p", type=int, default=200, help="synthetic projection dimension")
    p.add_argument("--C", type=float, default=ms.DEFAULT_C)
    p.add_argument("--repeats", type=int, default=3)
    cli.add_json(p)
    args = p.parse_args(argv)
    src, tgt, phi_norm = load_features(args.features, args.n, args.n_target, args.p)
    out = measure(src, tgt, phi_norm, args.sources, args.subsets, args.repeats, args.C)
    out.update({"features": args.features or "synthetic", **machine()})
    print(f"{args.subsets} subsets of {args.sources} sources ({out['source_examples']} "
          f"examples, p={out['p']}): {out['median_s']:.2f} s ({out['per_subset_ms']:.2f} ms "
          f"per subset; first call with compilation {out['first_call_s']:.2f} s)", flush=True)
    cli.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
