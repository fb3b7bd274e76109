"""How many entries a selection takes: FISH's global budget and SIFT's per-tensor one.

FISH (reference varunnair18/FISH): `keep_ratio` is a fraction of *all* parameters; with
`head_policy="in_budget"` the always-trained task head counts against it (head + selected
= keep_ratio x all), with `"outside"` the head is trained on top of it. SIFT (song-wx/SIFT):
each eligible tensor W gets floor(rate x n_W) + 1 entries.
"""

from __future__ import annotations

import math

from fishjax.core.errors import MaskError

HEAD_POLICIES = ("in_budget", "outside")
# keep_ratio x all -> entries: to the nearest ("round", ours) or truncated ("floor": the
# reference's int()).
ROUNDINGS = ("round", "floor")


def budget_k(num_params: int, keep_ratio: float, head_entries: int = 0,
             head_policy: str = "in_budget", rounding: str = "round") -> int:
    """Entries to select besides the head, for a keep ratio over all `num_params`."""
    if not 0.0 < keep_ratio <= 1.0:
        raise MaskError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    if head_policy not in HEAD_POLICIES:
        raise MaskError(f"head_policy must be one of {HEAD_POLICIES}, got {head_policy!r}")
    if rounding not in ROUNDINGS:
        raise MaskError(f"budget rounding must be one of {ROUNDINGS}, got {rounding!r}")
    exact = keep_ratio * num_params
    budget = int(round(exact)) if rounding == "round" else int(exact)
    if head_policy == "outside":
        return budget
    if budget < head_entries:
        raise MaskError(
            f"keep_ratio={keep_ratio} gives {budget} entries, fewer than the {head_entries} of "
            "the task head that head_policy='in_budget' counts against it")
    return budget - head_entries


def tensor_budget(n: int, rate: float) -> int:
    """SIFT's per-tensor budget: floor(rate * n) + 1 entries (at most n)."""
    return min(n, math.floor(rate * n) + 1)
