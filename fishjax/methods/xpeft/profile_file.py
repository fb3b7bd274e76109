"""Profile files: what one X-PEFT profile owns, bound to its bank and base model.

- a hard (or sigmoid) profile: its bool mask [slots, 2, N] bit-packed, exactly
  ceil(2 L N / 8) bytes (`mask_bits`, uint8, row-major, `np.packbits` order);
- a soft profile: its scores [slots, 2, N] as float16 (`scores`; files written before
  float16 hold float32, read alike);
- the task head (`head/<path>`, float32), stored and counted apart from the selection.

JSON metadata (key `fishjax_profile`): variant, K, the mask's shape and the slots in row
order, the bank's fingerprint and the base params' fingerprint (head excluded), the base
model id, the objective's metadata, task, seed. `load_profile(path, bank_fp, base_fp)` rejects a
profile made for another bank or another base with a clear error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fishjax.core.errors import PeftError
from fishjax.core.safetensors_io import read_tagged, write_tagged
from fishjax.core.tree import host_arrays, unflatten_paths
from fishjax.core.version import __version__
from fishjax.params.xpeft import Profile, profile_bytes, soft_scores_f16

META_KEY = "fishjax_profile"
FORMAT_VERSION = 1
PROFILE_FILE = "profile.safetensors"


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """A bool array as ceil(size / 8) bytes (row-major, most significant bit first)."""
    return np.packbits(np.asarray(mask, bool).reshape(-1))


def unpack_mask(bits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `pack_mask`."""
    size = int(np.prod(shape))
    if bits.dtype != np.uint8 or bits.ndim != 1 or bits.size != -(-size // 8):
        raise PeftError(f"mask bits {bits.dtype}{list(bits.shape)} do not hold a mask of shape "
                        f"{list(shape)} ({-(-size // 8)} bytes expected)")
    return np.unpackbits(bits, count=size).astype(bool).reshape(shape)


def save_profile(path: str, profile: Profile, *, slots: tuple[str, ...], bank_fp: str,
                 base_fp: str, metadata: dict[str, Any] | None = None) -> str:
    """Writes a profile file atomically; returns its absolute path."""
    if len(slots) != profile.shape[0]:
        raise PeftError(f"{len(slots)} slots for a profile of {profile.shape[0]} rows")
    if profile.variant == "soft":
        tensors = {"scores": soft_scores_f16(profile.scores)}
    else:
        tensors = {"mask_bits": pack_mask(profile.mask)}
    tensors.update({f"head/{'/'.join(p)}": x.astype(np.float32)
                    for p, x in host_arrays(profile.head).items()})
    meta = {**(metadata or {}), "format_version": FORMAT_VERSION, "variant": profile.variant,
            "k": profile.k, "mixing": profile.mixing, "shape": list(profile.shape),
            "slots": list(slots),
            "bank_fingerprint": bank_fp, "base_fingerprint": base_fp,
            "selection_bytes": profile_bytes(profile.variant, profile.shape),
            "fishjax_version": __version__}
    return write_tagged(path, tensors, META_KEY, meta)


def load_profile(path: str, bank_fp: str | None = None, base_fp: str | None = None
                 ) -> tuple[Profile, dict[str, Any]]:
    """(profile, metadata) of a profile file; with `bank_fp` / `base_fp`, raises PeftError
    unless the profile was made for that bank and that base model."""
    tensors, meta = read_tagged(path, META_KEY, PeftError, "profile",
                                required=("format_version", "variant", "shape", "slots",
                                          "bank_fingerprint", "base_fingerprint"))
    if meta["format_version"] != FORMAT_VERSION:
        raise PeftError(f"{path!r}: profile format {meta['format_version']!r} is not "
                        f"supported (expected {FORMAT_VERSION})")
    if bank_fp is not None and meta["bank_fingerprint"] != bank_fp:
        raise PeftError(f"profile {path!r} was trained on another adapter bank (fingerprint "
                        f"{meta['bank_fingerprint'][:12]}, this bank {bank_fp[:12]}): load the "
                        "bank it was made with")
    if base_fp is not None and meta["base_fingerprint"] != base_fp:
        raise PeftError(f"profile {path!r} was trained on base model "
                        f"{meta.get('base_model', '?')!r} (fingerprint "
                        f"{meta['base_fingerprint'][:12]}), these params differ (fingerprint "
                        f"{base_fp[:12]})")
    shape = tuple(meta["shape"])
    head = {}
    for name, x in tensors.items():
        if name.startswith("head/"):
            head[tuple(name[len("head/"):].split("/"))] = x
        elif name not in ("scores", "mask_bits"):
            raise PeftError(f"{path!r}: unexpected tensor {name!r}")
    if meta["variant"] == "soft":
        scores = tensors.get("scores")
        if scores is None or tuple(scores.shape) != shape:
            raise PeftError(f"{path!r}: a soft profile needs scores of shape {list(shape)}")
        profile = Profile("soft", unflatten_paths(head), scores=scores)
    else:
        if "mask_bits" not in tensors:
            raise PeftError(f"{path!r}: a {meta['variant']} profile needs its mask bits")
        mask = unpack_mask(tensors["mask_bits"], shape)
        k = meta.get("k")
        if k is not None and not np.all(mask.sum(axis=-1) == k):
            raise PeftError(f"{path!r}: the mask does not select exactly K={k} adapters per "
                            "(slot, side)")
        # files from before the setting mixed by the mean
        profile = Profile(meta["variant"], unflatten_paths(head), mask=mask, k=k,
                          mixing=meta.get("mixing", "mean"))
    return profile, meta
