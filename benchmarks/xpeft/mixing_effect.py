"""How far a mixed X-PEFT adapter moves the encoder's sentence features, by K and mixing.

  python -m benchmarks.xpeft.mixing_effect --json benchmarks/results/xpeft_mixing_effect.json

The model (`--model`, all-MiniLM-L6-v2) with X-PEFT's random pool (`--pool_size` adapters
at the Pfeiffer sites, bottleneck hidden / 16, seed 0: `config.method.xpeft`'s defaults);
for each K in `--ks` and each mixing ("mean": weights 1/K; "sum": weights 1), `--draws`
random hard profiles (K adapters per slot and side, seeded) applied to the bundled
quickstart sentences. Reported per feature (`pooler`, `cls`, `mean`: as
`benchmarks/analysis/frozen_probe.py` reads them): the relative change |h - h0| / |h0|
from the base model's features h0, averaged over sentences and draws. This is the
measurement behind the design note's words on the mean shrinking a random adapter's effect
by about 1/K (fishjax/params/xpeft.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.analysis.frozen_probe import FEATURES, sentence_features
from benchmarks.common import cli
from benchmarks.common.machine import machine
from configs import default
from fishjax.core.tree import merge_trees, split_tree
from fishjax.data import get_task, index_batches, load_split, tokenize_split
from fishjax.models import ADAPTER_SITES, load_model, load_tokenizer, slot_width
from fishjax.params.peft import PeftSpec, find_targets
from fishjax.params.xpeft import MIXINGS, bank_slots, mask_weights, mix, random_bank


def relative_changes(model, base_feats: dict, params: Any, batches: list) -> dict[str, float]:
    """Mean over rows of |h - h0| / |h0| for each feature."""
    feats = sentence_features(dataclasses.replace(model, params=params), batches)
    return {name: float(np.mean(np.linalg.norm(feats[name] - base_feats[name], axis=1)
                                / np.linalg.norm(base_feats[name], axis=1)))
            for name in FEATURES}


def measure(args) -> dict[str, Any]:
    x = default.get_config().method.xpeft
    model = load_model(args.model, 2, key=jax.random.PRNGKey(0))
    head, base = split_tree(model.params, model.head_regex)
    slots = find_targets(base, "adapter", ADAPTER_SITES[x.adapter_variant])
    width = slot_width(base, tuple(slots[0].split("/")))
    spec = PeftSpec("adapter", max(1, width // x.reduction_factor), slots)
    bank = random_bank(base, spec, args.pool_size, jax.random.PRNGKey(x.pool_seed))
    task = get_task("quickstart")
    data = tokenize_split(load_split(task, "train"), load_tokenizer(model.model_dir),
                          max_length=64, buckets=(64,))
    batches = list(index_batches(data, np.arange(min(args.rows, len(data.lengths))), 16))
    base_feats = sentence_features(model, batches)
    rows = len(bank_slots(bank))
    rng = np.random.default_rng(args.seed)
    out: dict[str, Any] = {"model": args.model, "pool_size": args.pool_size,
                           "draws": args.draws, "sentences": int(len(base_feats["mean"])),
                           "by_k": {}}
    for k in args.ks:
        per_draw: dict[str, list] = {mixing: [] for mixing in MIXINGS}
        for _ in range(args.draws):  # the same masks for both mixings
            mask = np.zeros((rows, 2, args.pool_size), bool)
            for idx in np.ndindex(rows, 2):
                mask[idx][rng.choice(args.pool_size, k, replace=False)] = True
            for mixing in MIXINGS:
                params = merge_trees(base, mix(bank, mask_weights(jnp.asarray(mask), mixing)),
                                     head)
                per_draw[mixing].append(relative_changes(model, base_feats, params, batches))
        cell = {mixing: {name: float(np.mean([d[name] for d in draws])) for name in FEATURES}
                for mixing, draws in per_draw.items()}
        out["by_k"][str(k)] = cell
        print(f"K={k}: " + "; ".join(
            f"{m}: " + ", ".join(f"{n} {100 * cell[m][n]:.1f}%" for n in FEATURES)
            for m in MIXINGS), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = cli.parser(__doc__)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--pool_size", type=int, default=32)
    p.add_argument("--ks", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2, 4, 16])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--rows", type=int, default=64, help="quickstart sentences")
    p.add_argument("--seed", type=int, default=0)
    cli.add_json(p)
    args = p.parse_args(argv)
    out = {**measure(args), **machine()}
    cli.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
