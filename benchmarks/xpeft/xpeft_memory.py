"""X-PEFT's cost per profile: bytes on disk against adapter tuning, and serving throughput.

  python -m benchmarks.xpeft.xpeft_memory --json benchmarks/results/xpeft_memory.json \\
      --readme README.md

Bytes per profile (the task head listed apart: every method stores it):
- adapter tuning: the adapter tree at X-PEFT's slots (Pfeiffer, after every FFN;
  2 d r + r + d entries per layer) in float32;
- X-PEFT hard: the mask, ceil(2 L N / 8) bytes; soft: the 2 L N scores in float16;
- the profile file actually written (`fishjax.methods.xpeft.profile_file`, safetensors with its
  JSON header; minilm-l6 only).
for `minilm-l6` (L = 6, d = 384, bottleneck 24; N = 8 and 32) and a BERT-base-shaped
encoder (L = 12, d = 768, bottleneck 48, N = 32 and 100), counted from the parameter shapes.

Serving on `minilm-l6` (random token ids, length `--seq`, batch `--batch`, fixed seed):
examples/s of one batch whose examples belong to `--profiles` different X-PEFT profiles
(`fishjax.methods.xpeft.serve.ProfileServer`, one jitted call, a random bank of `--n`
adapters), against one batch through the model with a single plain adapter (the adapter
tuning deployment). Median of `--repeats` timed calls each, after one compiling call,
the two interleaved so that machine noise hits both alike. Goal: mixed / single <= 1.2.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import jax
import numpy as np

from benchmarks.common import cli
from benchmarks.common.machine import machine
from fishjax import objectives
from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.tree import count_params, merge_trees, split_tree
from fishjax.methods.xpeft.bank_file import make_bank
from fishjax.methods.xpeft.profile_file import save_profile
from fishjax.methods.xpeft.serve import ProfileServer
from fishjax.models import (
    ADAPTER_SITES,
    EncoderConfig,
    init_params,
    load_model,
)
from fishjax.params.peft import PeftSpec, entry_count, find_targets, init_peft
from fishjax.params.xpeft import profile_bytes, profile_from_scores, random_bank

HEAD = r"^classifier/"
BERT_BASE_NS = (32, 100)


def _abstract_params(config: EncoderConfig, num_labels: int = 2):
    return jax.eval_shape(lambda k: init_params(config, num_labels, k), jax.random.PRNGKey(0))


def profile_sizes(params, bottleneck: int, n: int) -> dict:
    """Bytes per profile of adapter tuning and X-PEFT hard/soft, head apart."""
    head, base = split_tree(params, HEAD)
    slots = find_targets(base, "adapter", ADAPTER_SITES["pfeiffer"])
    spec = PeftSpec("adapter", bottleneck, slots)
    shape = (len(slots), 2, n)
    adapter_bytes = 4 * entry_count(base, spec)
    return {"layers": len(slots), "bottleneck": bottleneck, "n": n,
            "adapter_tuning_bytes": adapter_bytes,
            "xpeft_hard_bytes": profile_bytes("hard", shape),
            "xpeft_soft_bytes": profile_bytes("soft", shape),
            "head_bytes": 4 * count_params(head),
            "bank_bytes": 4 * n * entry_count(base, spec),
            "adapter_vs_hard": adapter_bytes / profile_bytes("hard", shape),
            "adapter_vs_soft": adapter_bytes / profile_bytes("soft", shape)}


def profile_file_sizes(model, bottleneck: int, n: int) -> dict:
    """Bytes of the profile files written for a random bank on the real model."""
    head, base = split_tree(model.params, HEAD)
    slots = find_targets(base, "adapter", ADAPTER_SITES["pfeiffer"])
    scores = np.random.default_rng(0).normal(size=(len(slots), 2, n)).astype(np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("hard", "soft"):
            path = save_profile(os.path.join(tmp, f"{variant}.safetensors"),
                                profile_from_scores(scores, head, variant, math.ceil(n / 2)),
                                slots=slots, bank_fp="0" * 64, base_fp=base_fingerprint(base))
            out[f"{variant}_file_bytes"] = os.path.getsize(path)
    return out


def _batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000 if vocab > 2000 else 5, vocab, size=(batch, seq)).astype(np.int32)
    if vocab > 2000:  # BERT's [CLS] ... [SEP]
        ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int32),
            "token_type_ids": np.zeros((batch, seq), np.int32)}


def serving(model, n: int, profiles: int, batch: int, seq: int, repeats: int) -> dict:
    head, base = split_tree(model.params, HEAD)
    slots = find_targets(base, "adapter", ADAPTER_SITES["pfeiffer"])
    bottleneck = model.config.hidden_size // 16
    spec = PeftSpec("adapter", bottleneck, slots)
    bank = make_bank(random_bank(base, spec, n, jax.random.PRNGKey(0)), spec,
                     base_fingerprint(base), base_model=model.name, sources="random")
    server = ProfileServer(model, bank, head_regex=HEAD)
    rng = np.random.default_rng(1)
    for p in range(profiles):
        scores = rng.normal(size=(len(slots), 2, n)).astype(np.float32)
        server.add_profile(f"p{p}", profile_from_scores(scores, head, "hard", math.ceil(n / 2)))
    names = [f"p{i % profiles}" for i in range(batch)]
    x = _batch(batch, seq, model.config.vocab_size)

    adapter = jax.tree_util.tree_map(lambda a: a + 0.01, init_peft(base, spec,
                                                                   jax.random.PRNGKey(2)))
    single_params = jax.device_put(merge_trees(base, adapter, head))
    apply = jax.jit(objectives.make_apply_fn(model.module, objectives.SequenceClassification()))

    def run_single():
        return np.asarray(apply(single_params, x))

    def run_mixed():
        return server.outputs(x, names)

    run_single(), run_mixed()  # compile
    times: dict[str, list[float]] = {"single": [], "mixed": []}
    for _ in range(repeats):
        for name, fn in (("single", run_single), ("mixed", run_mixed)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    single, mixed = float(np.median(times["single"])), float(np.median(times["mixed"]))
    return {"n": n, "profiles_in_batch": profiles, "batch": batch, "seq": seq,
            "repeats": repeats, "single_adapter_s": single, "mixed_profiles_s": mixed,
            "single_adapter_ex_per_s": batch / single, "mixed_profiles_ex_per_s": batch / mixed,
            "mixed_vs_single": mixed / single, "goal_ok (<= 1.2)": mixed / single <= 1.2,
            "times": times, "compilations": server._forward._cache_size()}


README_BLOCK = "xpeft-memory"


def readme_table(result: dict) -> str:
    """The README's table of bytes per profile and the serving ratio, from a result."""
    rows = ["| encoder, bank | adapter tuning | X-PEFT hard | X-PEFT soft | hard profile file "
            "(with head, header) |", "|---|---|---|---|---|"]
    for name, s in sorted(result["sizes"].items()):  # JSON order: a function of the content
        file = f"{s['hard_file_bytes']:,} B" if "hard_file_bytes" in s else "–"
        rows.append(f"| {name} | {s['adapter_tuning_bytes']:,} B | {s['xpeft_hard_bytes']:,} B "
                    f"({s['adapter_vs_hard']:,.0f}x less) | {s['xpeft_soft_bytes']:,} B "
                    f"({s['adapter_vs_soft']:,.0f}x less) | {file} |")
    serve = result["serving"]
    rows.append("")
    rows.append(f"Serving ({result['cpu']}, {result['cpu_count']} cores, {result['date']}): a "
                f"batch of {serve['batch']} x {serve['seq']} tokens from "
                f"{serve['profiles_in_batch']} profiles over a bank of {serve['n']} takes "
                f"{serve['mixed_vs_single']:.2f}x the time of the same batch through one plain "
                f"adapter ({serve['mixed_profiles_ex_per_s']:.1f} vs "
                f"{serve['single_adapter_ex_per_s']:.1f} examples/s, median of "
                f"{serve['repeats']}; goal <= 1.2x), compiled once.")
    return "\n".join(rows) + "\n"


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--n", type=int, default=32, help="bank size for the serving figure")
    p.add_argument("--profiles", type=int, default=8, help="distinct profiles in the batch")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    cli.add_json(p)
    cli.add_readme(p, README_BLOCK, report="only rewrite --readme from the existing --json")
    args = p.parse_args(argv)
    if args.report:
        return cli.report_from_json(args, README_BLOCK, readme_table)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = load_model(args.model, 2, key=jax.random.PRNGKey(0))
    sizes = {f"{args.model} N={n}": {**profile_sizes(model.params, model.config.hidden_size // 16,
                                                     n),
                                     **profile_file_sizes(model, model.config.hidden_size // 16,
                                                          n)}
             for n in (8, 32)}
    for n in BERT_BASE_NS:
        sizes[f"bert-base-shaped N={n}"] = profile_sizes(_abstract_params(EncoderConfig()), 48,
                                                         n)
    for name, s in sizes.items():
        print(f"{name}: adapter tuning {s['adapter_tuning_bytes']:,} B, X-PEFT hard "
              f"{s['xpeft_hard_bytes']:,} B ({s['adapter_vs_hard']:,.0f}x less), soft "
              f"{s['xpeft_soft_bytes']:,} B; head {s['head_bytes']:,} B", flush=True)
    serve = serving(model, args.n, args.profiles, args.batch, args.seq, args.repeats)
    print(f"serving (batch {args.batch}, length {args.seq}): single adapter "
          f"{serve['single_adapter_ex_per_s']:.1f} ex/s, {args.profiles} profiles mixed "
          f"{serve['mixed_profiles_ex_per_s']:.1f} ex/s: {serve['mixed_vs_single']:.2f}x the "
          "time", flush=True)
    result = {"sizes": sizes, "serving": serve, "model": args.model, **machine()}
    cli.save_result(args, result, README_BLOCK, readme_table)
    print(json.dumps({k: v for k, v in serve.items() if k != "times"}, indent=2))
    return result


if __name__ == "__main__":
    main()
