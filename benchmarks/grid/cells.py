"""The cells of a benchmark grid (benchmarks/grid/glue.py) and what is read off them.

A cell is one run: (task, method, seed), recorded in `<out>/results.json` under its
`cell_id`. Its reported score is the final dev main metric (`score_of`); its trainable
fraction is its trainable entries over the model's parameters (`trainable_fraction`).
Shared by the grid, its plots and its reports, so that each reads cells one way.
"""

from __future__ import annotations

# Display order of the derived tables (README); tasks/methods not listed follow, sorted.
TASK_ORDER = ("rte", "mrpc", "sst2", "cola", "stsb", "qnli", "qqp", "mnli", "wnli")
METHOD_ORDER = ("full", "head_only", "bitfit", "random_mask", "fish", "ird", "sift",
                "lora", "lora_fish", "lora_fish_warmup", "lora_fish_random",
                "lora_fish_reversed", "adapter", "adapter_fish", "adapter_fish_warmup",
                "adapter_fish_random", "adapter_fish_reversed", "dora", "dora_fish",
                "dora_fish_warmup", "dora_fish_random", "dora_fish_reversed",
                "adapter_pfeiffer",
                *(f"xpeft_{pool}_{variant}_n{n}" for pool in ("random", "trained")
                  for n in (8, 32) for variant in ("soft", "hard")),
                "fish_reference",
                *(f"{m}_b{p}" for m in ("fish", "random_mask", "ird", "sift")
                  for p in ("0.1", "2", "5")),
                "xpeft_soft", "xpeft_hard_k1", "xpeft_hard_k2_mean", "xpeft_hard_k2_sum",
                "xpeft_hard_k4_mean", "xpeft_hard_k4_sum")


def cell_id(task: str, method: str, seed: int) -> str:
    return f"{task}-{method}-s{seed}"


def score_of(cell: dict) -> float | None:
    """The reported score of a cell: its final dev main metric (no dev-set model picking)."""
    final = cell.get("final") or {}
    key = cell["main_metric"]
    if key not in final:  # prefixed by the eval split (MNLI; the validation protocol's
        # dev/ beside validation/): the first dev split's, never the validation rows'
        key = next((k for k in final if k.endswith("/" + cell["main_metric"])
                    and not k.startswith("validation/")), None)
    return None if key is None else float(final[key])


def total_params_of(cell: dict, cells: dict[str, dict]) -> int | None:
    """The model's parameter count for a cell: its own record, else the trainable count of
    an ok `full` cell of the same task (full fine-tuning trains every parameter)."""
    if cell.get("total_params"):
        return int(cell["total_params"])
    full = [c for c in cells.values() if c.get("method") == "full" and c.get("status") == "ok"
            and c.get("task") == cell.get("task") and c.get("trainable_entries")]
    return int(full[0]["trainable_entries"]) if full else None


def trainable_fraction(cell: dict, cells: dict[str, dict]) -> float | None:
    total = total_params_of(cell, cells)
    n = cell.get("trainable_entries")
    return None if not total or n is None else n / total


def ordered(names: set[str], order: tuple[str, ...]) -> list[str]:
    """`names` in the display `order`, then the ones it does not list, sorted."""
    return [n for n in order if n in names] + sorted(names - set(order))
