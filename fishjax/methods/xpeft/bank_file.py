"""Bank files: N frozen adapters stacked for X-PEFT, bound to their base model.

A safetensors file with one tensor per bank leaf (`bank/<path>`, leading axis N) and JSON
metadata (key `fishjax_bank`): the adapters' `PeftSpec` (slots and bottleneck), N, a
fingerprint of the bank (`bank_fingerprint`, which every profile records), the fingerprint
of the base params the adapters were trained on (head excluded), the base model id and the
sources (the PEFT files stacked, or the random pool's seed) and, when the stacking was
given them, each adapter's scores on its own task (`adapter_scores`: one {metric: value}
per adapter, in bank order; what the adapter knows, so a bank of untrained or failed
adapters shows as such).

`stack_peft_files` builds a bank from the `peft.safetensors` of finished `adapter` runs
(same base, slots and bottleneck; their heads are dropped):

  python -m fishjax.methods.xpeft.bank_file --out bank.safetensors runs/*/peft.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

import jax

from fishjax.artifacts.fingerprint import base_fingerprint
from fishjax.core.errors import PeftError
from fishjax.core.safetensors_io import read_tagged, write_tagged
from fishjax.core.tree import PyTree, host_arrays, unflatten_paths
from fishjax.core.version import __version__
from fishjax.methods.peft.peft_file import load_peft_file
from fishjax.params.peft import PeftSpec
from fishjax.params.xpeft import bank_size, random_bank, stack_adapters

META_KEY = "fishjax_bank"
FORMAT_VERSION = 1


@dataclasses.dataclass
class Bank:
    """A loaded bank: the stacked adapters, their spec, and the file's metadata."""

    adapters: dict  # the stacked adapter tree (leading axis N)
    spec: PeftSpec  # one adapter's spec: slots (targets) and bottleneck (size)
    metadata: dict[str, Any]

    @property
    def size(self) -> int:
        return bank_size(self.adapters)

    @property
    def fingerprint(self) -> str:
        return self.metadata["bank_fingerprint"]


def bank_fingerprint(adapters: PyTree) -> str:
    """sha256 over the bank's leaves (path, dtype, shape, bytes): what a profile binds to."""
    return base_fingerprint(adapters)


def make_bank(adapters: PyTree, spec: PeftSpec, base_fp: str, *, base_model: str | None,
              sources: list[str] | str,
              adapter_scores: list[dict[str, float] | None] | None = None) -> Bank:
    """A `Bank` with its metadata (fingerprints computed here)."""
    extra = {} if adapter_scores is None else {"adapter_scores": list(adapter_scores)}
    return Bank(adapters=adapters, spec=spec, metadata={**extra,
        "format_version": FORMAT_VERSION, "spec": spec.to_dict(), "size": bank_size(adapters),
        "bank_fingerprint": bank_fingerprint(adapters), "base_fingerprint": base_fp,
        "base_model": base_model, "sources": sources, "fishjax_version": __version__})


# A random pool as a bank (and every profile on it) records it: `random(seed=0, n=32)`,
# with `, up_scale=0.5` when the up-projections' draw was scaled.
_RANDOM_POOL = re.compile(r"^random\(seed=(-?\d+), n=(\d+)(?:, up_scale=([^)]+))?\)$")


def random_pool_name(seed: int, n: int, up_scale: float = 1.0) -> str:
    """How a random pool is recorded in its bank's and its profiles' metadata."""
    scaled = "" if up_scale == 1.0 else f", up_scale={float(up_scale)!r}"
    return f"random(seed={seed}, n={n}{scaled})"


def make_random_bank(base: PyTree, spec: PeftSpec, seed: int, n: int, up_scale: float,
                     *, base_fp: str, base_model: str | None) -> Bank:
    """The seeded random pool of N untrained adapters on `base` (X-PEFT's `pool="random"`)."""
    adapters = random_bank(base, spec, n, jax.random.PRNGKey(seed), up_scale=up_scale)
    return make_bank(adapters, spec, base_fp, base_model=base_model,
                     sources=random_pool_name(seed, n, up_scale))


def rebuild_random_bank(meta: dict, base: PyTree) -> Bank:
    """The random pool a profile (or a run) records in its metadata, drawn again on `base`
    (no bank file is written for a random pool: its seed makes it)."""
    hit = _RANDOM_POOL.match(str(meta.get("pool")))
    if hit is None:
        raise PeftError(f"the profile's pool {meta.get('pool')!r} is not a random pool: load "
                        "its bank file")
    spec = PeftSpec("adapter", int(meta["bottleneck"]), tuple(meta["slots"]))
    up_scale = float(hit.group(3)) if hit.group(3) else 1.0
    return make_random_bank(base, spec, int(hit.group(1)), int(hit.group(2)), up_scale,
                            base_fp=base_fingerprint(base), base_model=meta.get("base_model"))


def save_bank(path: str, bank: Bank) -> str:
    """Writes a bank file atomically; returns its absolute path."""
    tensors = {f"bank/{'/'.join(p)}": x for p, x in host_arrays(bank.adapters).items()}
    return write_tagged(path, tensors, META_KEY, bank.metadata)


def load_bank(path: str) -> Bank:
    """Reads a bank file; checks its tensors against its own fingerprint and spec."""
    tensors, meta = read_tagged(path, META_KEY, PeftError, "bank",
                                required=("format_version", "spec", "size", "bank_fingerprint",
                                          "base_fingerprint"))
    if meta["format_version"] != FORMAT_VERSION:
        raise PeftError(f"{path!r}: bank format {meta['format_version']!r} is not supported "
                        f"(expected {FORMAT_VERSION})")
    flat = {}
    for name, x in tensors.items():
        part, _, rest = name.partition("/")
        if part != "bank" or not rest:
            raise PeftError(f"{path!r}: unexpected tensor {name!r}")
        flat[tuple(rest.split("/"))] = x
    adapters = unflatten_paths(flat)
    if bank_fingerprint(adapters) != meta["bank_fingerprint"]:
        raise PeftError(f"{path!r}: the adapters do not match the bank's recorded fingerprint "
                        "(a modified or corrupt file)")
    try:
        spec = PeftSpec.from_dict(meta["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise PeftError(f"{path!r}: malformed spec {meta['spec']!r} ({e})") from None
    if bank_size(adapters) != meta["size"]:
        raise PeftError(f"{path!r}: {bank_size(adapters)} adapters, metadata says {meta['size']}")
    return Bank(adapters=adapters, spec=spec, metadata=meta)


def stack_peft_files(paths: list[str],
                     scores: list[dict[str, float] | None] | None = None) -> Bank:
    """A bank from the PEFT files of `adapter` runs on one base (heads dropped);
    `scores`: each run's scores on its own task, recorded in the bank's metadata."""
    if not paths:
        raise PeftError("stacking a bank needs at least one PEFT file")
    if scores is not None and len(scores) != len(paths):
        raise PeftError(f"{len(scores)} adapter scores for {len(paths)} PEFT files")
    trees, spec, base_fp, base_model = [], None, None, None
    for path in paths:
        tree, _, s, meta = load_peft_file(path)
        if s.kind != "adapter":
            raise PeftError(f"{path!r} holds a {s.kind} tree; a bank stacks adapters")
        if spec is None:
            spec, base_fp, base_model = s, meta["base_fingerprint"], meta.get("base_model")
        elif s != spec:
            raise PeftError(f"{path!r}: adapter spec {s.to_dict()} differs from the first "
                            f"file's {spec.to_dict()}")
        elif meta["base_fingerprint"] != base_fp:
            raise PeftError(f"{path!r} was trained on another base model than {paths[0]!r}")
        trees.append(tree)
    return make_bank(stack_adapters(trees), spec, base_fp, base_model=base_model,
                     sources=list(paths), adapter_scores=scores)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description="Stack the peft.safetensors of adapter runs into "
                                "an X-PEFT bank file.")
    p.add_argument("--out", required=True, help="the bank file to write")
    p.add_argument("peft_files", nargs="+")
    args = p.parse_args(argv)
    bank = stack_peft_files(args.peft_files)
    path = save_bank(args.out, bank)
    print(f"{path}: {bank.size} adapters, bottleneck {bank.spec.size}, "
          f"{len(bank.spec.targets)} slots, fingerprint {bank.fingerprint[:12]}")
    return path


if __name__ == "__main__":
    main()
