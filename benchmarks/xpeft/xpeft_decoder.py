"""X-PEFT on a decoder: a bank of adapters trained on Natural Instructions tasks, profiles
for tasks the bank never saw, scored by ROUGE-L.

  LD_PRELOAD=libtcmalloc_minimal.so.4 \\
      python -m benchmarks.xpeft.xpeft_decoder --out benchmarks/results/xpeft_decoder
  python -m benchmarks.xpeft.xpeft_decoder --out benchmarks/results/xpeft_decoder --report \\
      --readme README.md

Model: SmolLM2-135M-Instruct (`configs/instruct.py`: the chat template, the Definition as
the instruction, sequence length 224, batch 8, one epoch, splits with `split_seed` 0).
1. Bank: one Pfeiffer adapter (`adapter`, `adapter_variant=pfeiffer`: after each MLP,
   bottleneck 576 / 16 = 36, 1.26M entries) per task of `BANK_TASKS` (the instruction grid's
   10 trained tasks), each trained on its task alone (`BANK_ROWS` rows, one epoch, 35 steps,
   `BANK_LR`), scored by greedy generation on its own validation and test rows, and
   compared with the untuned model on the same 30 test rows (the instruction grid's
   zero-shot cell, `ZERO_SHOT_CELL`: the same `split_seed` and test count draw the same
   rows): an adapter that does not beat it brings no skill to the bank. The bank file
   (`<out>/bank.safetensors`) stacks them in `BANK_TASKS` order, with each adapter's
   validation and test macro scores as its `adapter_scores`.
2. Profiles: each task of `PROFILE_TASKS` (held-out tasks of the instruction grid: never
   in the bank, never trained on there) alone, `PROFILE_ROWS` training (one epoch, 30
   steps), 10 validation and 30 test rows.
   Methods: `zero_shot` (the untuned model); `adapter`, a fresh Pfeiffer adapter (what
   X-PEFT claims to match); X-PEFT over the bank (`xpeft_soft`; `xpeft_hard_k2_mean` and
   `xpeft_hard_k2_sum`: the top 2 of 10 adapters per slot, their mean or their sum). A
   decoder has no task head: a profile is its 2 x 30 x 10 scores alone (75 bytes hard).
   Learning rates (`PROFILE_METHODS`, seed 0) chosen by validation ROUGE-L (the answer
   log-likelihood breaks ties), then seed 1 at the chosen rate.
3. The verdict per profile task (`claims`): the X-PEFT variant best on validation against
   the fresh adapter (within `ADAPTER_TOLERANCE` ROUGE-L points: the claim) and against
   the untuned model (at least `FLOOR_MARGIN` better: a decoder's floor, as the head is an
   encoder's), test means over the seeds; with the share of the adapter's gain in test
   answer log-likelihood over the untuned model that the variant reaches (`loglik_share`:
   what the mix learns of the task, apart from what greedy decoding makes of it).
The bank adapters' PEFT files are copied from their workdirs under `--workroot` to
`<out>/adapters/` (5 MB each, committed: the grid spans sessions and a workdir does not
survive one); the bank file stacked from them (50 MB) is not committed (`bank.json`
records which adapter files it stacks, and a change of bank cells rebuilds it); each
X-PEFT cell records the fingerprint of the bank it mixed, and the report refuses cells
that mixed different banks (a bank retrained on another machine is not the one earlier
profiles learned).
Each cell runs in a fresh process (its peak memory is its own) and is written to
`<out>/cell_results/<id>.json` (benchmarks/instruct/instruct_grid.py's record: command,
macro and per-task scores, wall time, optimizer state, peak memory); a rerun skips finished
cells. `--report` rebuilds `<out>/report.json` and the README table from those files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any

import numpy as np

from benchmarks.common import cli, readme_blocks
from benchmarks.instruct import instruct_grid as ig
from configs import instruct
from fishjax.core.io import atomic_write_json, file_sha256, read_json
from fishjax.methods.peft.peft_file import PEFT_FILE
from fishjax.methods.xpeft.bank_file import load_bank, save_bank, stack_peft_files
from fishjax.methods.xpeft.profile_file import PROFILE_FILE, load_profile

README_BLOCK = "xpeft-decoder"
BANK_TASKS = instruct.NI10_TASKS
# Training rows per bank adapter: 35 steps of 8 (the first design's 100 rows were 13 steps,
# too few to be sure an adapter learns its task); subtask004 has 299 after its 40 held rows.
BANK_ROWS = 280
BANK_LR = 1e-3
# A sibling of bank tasks (013 ~ 004/010: MC-TACO answers), a sibling format (009 ~ 003:
# MC-TACO questions) and an unseen one (021: grammatical / logical yes-no).
PROFILE_TASKS = (
    "subtask013_mctaco_answer_generation_absolute_timepoint",
    "subtask009_mctaco_question_generation_event_ordering",
    "subtask021_mctaco_grammatical_logical",
)
PROFILE_ROWS = 240  # 30 steps of 8; subtask013 has 272 after its 40 held rows
# The untuned model's per-task test scores on the bank tasks' test rows.
ZERO_SHOT_CELL = "benchmarks/results/instruct/cell_results/zero_shot-s0.json"
ADAPTER_TOLERANCE, FLOOR_MARGIN = 1.0, 3.0  # ROUGE-L points
ADAPTER = ("method.name=adapter", "method.peft.adapter_variant=pfeiffer")
# method -> (its config overrides, learning rates tried on seed 0)
PROFILE_METHODS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "adapter": (ADAPTER, (3e-4, 1e-3)),
    "xpeft_soft": (("method.name=xpeft", "method.xpeft.variant=soft"), (1e-2, 3e-2)),
    **{f"xpeft_hard_k2_{mixing}": (("method.name=xpeft", "method.xpeft.variant=hard",
                                    "method.xpeft.k=2", f"method.xpeft.mixing={mixing}"),
                                   (1e-2, 3e-2)) for mixing in ("mean", "sum")},
}
SEEDS = (0, 1)
GRID_VERSION = 2  # 2: 280 bank rows, 240 profile rows


def task_overrides(task: str, train_rows: int) -> list[str]:
    """`configs/instruct.py:ni10` narrowed to one task, scored on its own rows."""
    return [f"data.instruct.tasks={json.dumps([task])}", "data.instruct.heldout_tasks=[]",
            f"data.instruct.train_per_task={train_rows}",
            f"method.fisher.num_samples={train_rows}",
            'instruct_eval.splits=["validation", "test"]']


def short(task: str) -> str:
    return task.split("_")[0]


def bank_cell(task: str, out: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    cid = f"bank-{short(task)}"
    return {"id": cid, "method": "adapter", "budget": None, "lr": BANK_LR, "seed": 0,
            "phase": "bank", "task": task,
            "overrides": [*ADAPTER, f"train.learning_rate={BANK_LR}", "seed=0",
                          *task_overrides(task, BANK_ROWS), *extra],
            "command": command(out, cid, extra)}


def profile_cell(task: str, method: str, lr: float | None, seed: int, out: str,
                 extra: tuple[str, ...] = ()) -> dict[str, Any]:
    cid = "-".join([short(task), method, *([f"lr{lr:.0e}"] if lr is not None else []),
                    f"s{seed}"])
    ov = task_overrides(task, PROFILE_ROWS)
    if method != "zero_shot":
        ov = [*PROFILE_METHODS[method][0], f"train.learning_rate={lr}", f"seed={seed}", *ov]
        if method.startswith("xpeft"):
            ov.append(f"method.xpeft.pool={bank_path(out)}")
    return {"id": cid, "method": method, "budget": None, "lr": lr, "seed": seed,
            "phase": "profile", "task": task, "overrides": [*ov, *extra],
            "command": command(out, cid, extra)}


def command(out: str, cid: str, extra: tuple[str, ...]) -> str:
    sets = "".join(f" --set '{x}'" for x in extra)
    return f"python -m benchmarks.xpeft.xpeft_decoder --out {out}{sets} --only {cid}"


def bank_path(out: str) -> str:
    return os.path.join(out, "bank.safetensors")


def load_cells(out: str) -> dict[str, dict[str, Any]]:
    cells = ig.load_cells(out)
    for cid, c in cells.items():
        if c.get("xpeft_decoder_version") != GRID_VERSION:
            raise SystemExit(f"{out}/cell_results/{cid}.json: not a cell of this grid "
                             f"(version {c.get('xpeft_decoder_version')}, this is "
                             f"{GRID_VERSION}): move it aside")
    return cells


def chosen_lr(task: str, method: str, cells: dict[str, dict[str, Any]]) -> float | None:
    """The rate of the best seed-0 validation cell once every rate has one."""
    tried = [cells.get(profile_cell(task, method, lr, 0, "")["id"])
             for lr in PROFILE_METHODS[method][1]]
    if any(c is None for c in tried):
        return None
    return max(tried, key=ig.validation_score)["lr"]


def planned(cells: dict[str, dict[str, Any]], out: str, extra: tuple[str, ...] = ()
            ) -> list[dict[str, Any]]:
    """The cells that can be defined now: the bank, then per profile task the zero-shot
    cell, every rate on seed 0, the chosen rate on the other seeds."""
    todo = [bank_cell(t, out, extra) for t in BANK_TASKS]
    if any(c["id"] not in cells for c in todo):
        return todo
    for task in PROFILE_TASKS:
        todo.append(profile_cell(task, "zero_shot", None, 0, out, extra))
        for m, (_, lrs) in PROFILE_METHODS.items():
            todo += [profile_cell(task, m, lr, SEEDS[0], out, extra) for lr in lrs]
            lr = chosen_lr(task, m, cells)
            if lr is not None:
                todo += [profile_cell(task, m, lr, s, out, extra) for s in SEEDS[1:]]
    return todo


def adapter_path(out: str, cid: str) -> str:
    return os.path.join(out, "adapters", f"{cid}.safetensors")


def keep_adapters(out: str, workroot: str, cells: dict[str, dict[str, Any]]) -> None:
    """Copy each finished bank cell's PEFT file from its workdir to `<out>/adapters/`
    (committed: the grid spans sessions and the workdirs do not survive one), checked
    against the sha256 its cell recorded."""
    for t in BANK_TASKS:
        cid = bank_cell(t, out)["id"]
        kept, trained = adapter_path(out, cid), os.path.join(workroot, cid, PEFT_FILE)
        if cid not in cells or os.path.exists(kept) or not os.path.exists(trained):
            continue
        if file_sha256(trained) != cells[cid]["peft_sha256"]:
            raise SystemExit(f"bank: {trained} is not the adapter cell {cid} scored")
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        shutil.copyfile(trained, kept + ".tmp")
        os.replace(kept + ".tmp", kept)


def build_bank(out: str, cells: dict[str, dict[str, Any]]) -> str:
    """The bank file: the bank adapters' kept PEFT files (`keep_adapters`, checked against
    the sha256 their cells recorded) stacked with their scores; rebuilt when the bank cells
    change, `<out>/bank.json` says from which."""
    ids = [bank_cell(t, out)["id"] for t in BANK_TASKS]
    shas = [cells[cid]["peft_sha256"] for cid in ids]
    meta_path = os.path.join(out, "bank.json")
    if os.path.exists(bank_path(out)) and os.path.exists(meta_path) \
            and read_json(meta_path).get("peft_sha256") == shas:
        return bank_path(out)
    files = [adapter_path(out, cid) for cid in ids]
    for cid, f, sha in zip(ids, files, shas, strict=True):
        if not os.path.exists(f) or file_sha256(f) != sha:
            raise SystemExit(f"bank: {f} is gone or is not the adapter cell {cid} scored: "
                             "move its cell file aside to retrain it")
    scores = [{f"{split}_{k}": v for split in ("validation", "test")
               for k, v in cells[cid]["macro"][split].items()} for cid in ids]
    bank = stack_peft_files(files, scores)
    path = save_bank(bank_path(out), bank)
    atomic_write_json(meta_path, {"cells": ids, "peft_sha256": shas,
                                  "fingerprint": bank.fingerprint})
    return path


def run_cell(cell: dict[str, Any], workroot: str) -> dict[str, Any]:
    """instruct_grid's cell record, tagged with this grid's version, the task and (X-PEFT)
    the fingerprint of the bank it mixed."""
    record = ig.run_cell(cell, workroot)
    extra: dict[str, Any] = {}
    if cell["method"].startswith("xpeft"):
        extra["bank_fingerprint"] = load_bank(bank_path_of(cell)).fingerprint
        extra["bank_use"] = bank_use(os.path.join(workroot, cell["id"], PROFILE_FILE),
                                     extra["bank_fingerprint"])
    if cell["phase"] == "bank":
        extra["peft_sha256"] = file_sha256(os.path.join(workroot, cell["id"], PEFT_FILE))
    return {**record, **extra, "task": cell["task"], "overrides": cell["overrides"],
            "xpeft_decoder_version": GRID_VERSION}


def bank_use(profile_path: str, bank_fp: str) -> list[float]:
    """Each bank adapter's share of a profile's mixing weight over all slots and sides, in
    bank order (`BANK_TASKS`); 1 / N each would be no preference: which skills the profile
    draws on."""
    profile, _ = load_profile(profile_path, bank_fp)
    weight = np.asarray(profile.weights(), np.float64).sum(axis=(0, 1))
    return (weight / weight.sum()).tolist()


def bank_path_of(cell: dict[str, Any]) -> str:
    return next(o.split("=", 1)[1] for o in cell["overrides"]
                if o.startswith("method.xpeft.pool="))


def check_one_bank(cells: dict[str, dict[str, Any]]) -> str | None:
    """The fingerprint every X-PEFT cell mixed; an error if they mixed different banks
    (a bank rebuilt on another machine is not the one the earlier profiles learned)."""
    prints = {c["id"]: c["bank_fingerprint"] for c in cells.values() if "bank_fingerprint" in c}
    if len(set(prints.values())) > 1:
        raise SystemExit("X-PEFT cells mixed different banks: " + ", ".join(
            f"{k}: {v[:12]}" for k, v in sorted(prints.items())))
    return next(iter(prints.values()), None)


def run_grid(args: argparse.Namespace) -> None:
    cli.clear_stop_file(args.workroot)
    while not cli.stop_requested(args.workroot):  # `touch <workroot>/STOP`: stop between cells
        cells = load_cells(args.out)
        keep_adapters(args.out, args.workroot, cells)
        plan = planned(cells, args.out, tuple(args.set))
        for c in plan:  # a finished cell is resumed only if it ran as planned now
            if c["id"] in cells and cells[c["id"]].get("overrides") != c["overrides"]:
                raise SystemExit(f"{args.out}/cell_results/{c['id']}.json ran with overrides "
                                 f"{cells[c['id']].get('overrides')}, this command plans "
                                 f"{c['overrides']}: use another --out")
        todo = [c for c in plan if c["id"] not in cells
                and (not args.only or c["id"] == args.only)]
        if not todo:
            break
        if todo[0]["phase"] == "profile":
            bank = load_bank(build_bank(args.out, cells)).fingerprint
            if check_one_bank(cells) not in (None, bank):
                raise SystemExit(f"{bank_path(args.out)} ({bank[:12]}) is not the bank the "
                                 "finished X-PEFT cells mixed: move them aside to rerun them")
        ig.run_one(todo[0], args, module="benchmarks.xpeft.xpeft_decoder")
        if args.only:
            break


def zero_shot_by_task(path: str = ZERO_SHOT_CELL) -> dict[str, float]:
    """The untuned model's test ROUGE-L per task of the instruction grid's zero-shot cell
    ({} when it is not there)."""
    if not os.path.exists(path):
        return {}
    tasks = read_json(path)["tasks"]
    return {t: v["rougeL"] for split in ("test", "heldout") for t, v in tasks[split].items()}


def report(cells: dict[str, dict[str, Any]],
           zero_shot: dict[str, float] | None = None) -> dict[str, Any]:
    """The bank adapters' own scores (and the untuned model's on the same test rows, from
    `zero_shot`: task -> test ROUGE-L); per profile task and method the chosen rate, every
    rate's validation ROUGE-L and the test scores over the seeds at that rate; the claims."""
    rep: dict[str, Any] = {"bank": {}, "profiles": {},
                           "bank_fingerprint": check_one_bank(cells)}
    for t in BANK_TASKS:
        c = cells.get(bank_cell(t, "")["id"])
        if c:
            rep["bank"][t] = {s: c["macro"][s] for s in ("validation", "test")}
            if t in (zero_shot or {}):
                rep["bank"][t]["zero_shot_test_rougeL"] = zero_shot[t]
    for t in PROFILE_TASKS:
        rows: dict[str, Any] = {}
        zero = cells.get(profile_cell(t, "zero_shot", None, 0, "")["id"])
        if zero:
            rows["zero_shot"] = {"lr": None, "validation_by_lr": {},
                                 "test": [zero["macro"]["test"]]}
        for m, (_, lrs) in PROFILE_METHODS.items():
            tried = {lr: cells.get(profile_cell(t, m, lr, 0, "")["id"]) for lr in lrs}
            lr = chosen_lr(t, m, cells)
            runs = [cells[cid] for s in SEEDS if lr is not None
                    for cid in [profile_cell(t, m, lr, s, "")["id"]] if cid in cells]
            rows[m] = {"lr": lr, "validation_by_lr": {
                f"{k:.0e}": c["macro"]["validation"]["rougeL"] for k, c in tried.items() if c},
                "test": [c["macro"]["test"] for c in runs],
                "trainable_entries": runs[0]["trainable_entries"] if runs else None}
            if runs and all("bank_use" in c for c in runs):
                rows[m]["bank_use"] = [c["bank_use"] for c in runs]
        rep["profiles"][t] = rows
    rep["claims"] = [c for t in PROFILE_TASKS if (c := claim(t, rep["profiles"][t]))]
    return rep


def _mean_test(entry: dict[str, Any] | None, metric: str = "rougeL") -> float | None:
    scores = [s[metric] for s in (entry or {}).get("test", [])]
    return sum(scores) / len(scores) if scores else None


def loglik_share(x: float, adapter: float, zero: float) -> float | None:
    """The share of the fresh adapter's gain in test answer log-likelihood over the untuned
    model that X-PEFT reaches (None where the adapter gains nothing): how much of the
    task's likelihood the mixed bank learns, apart from whether greedy generation turns it
    into ROUGE-L."""
    return (x - zero) / (adapter - zero) if adapter > zero else None


def claim(task: str, rows: dict[str, Any]) -> dict[str, Any] | None:
    """The X-PEFT variant best on validation (at its chosen rate; never on test) against
    the fresh adapter and the untuned model, test ROUGE-L means; None until all three have
    test scores."""
    xpeft = {m: e["validation_by_lr"][f"{e['lr']:.0e}"] for m, e in rows.items()
             if m.startswith("xpeft") and e["lr"] is not None and e["test"]}
    adapter, zero = _mean_test(rows.get("adapter")), _mean_test(rows.get("zero_shot"))
    if not xpeft or adapter is None or zero is None:
        return None
    best = max(xpeft, key=xpeft.get)
    x = _mean_test(rows[best])
    lls = [_mean_test(rows[m], "answer_loglik") for m in (best, "adapter", "zero_shot")]
    uses = rows[best].get("bank_use") or []
    return {"task": task, "variant": best, "validation": xpeft[best], "xpeft_test": x,
            "seeds": len(rows[best]["test"]), "adapter_test": adapter, "zero_shot_test": zero,
            "test_answer_loglik": dict(zip(("xpeft", "adapter", "zero_shot"), lls,
                                           strict=True)),
            "loglik_share": loglik_share(*lls),
            # the variant's mean share of mixing weight per bank task, over its seeds
            "bank_use": dict(zip(BANK_TASKS, np.mean(uses, axis=0).tolist(), strict=True))
            if uses else None,
            "within_adapter": x - adapter >= -ADAPTER_TOLERANCE,
            "over_zero_shot": x - zero >= FLOOR_MARGIN,
            "holds": x - adapter >= -ADAPTER_TOLERANCE and x - zero >= FLOOR_MARGIN}


def checks_text(rep: dict[str, Any]) -> str:
    """Under the table: the bank adapters against the untuned model, then each task's
    claim with its verdict."""
    lines = []
    gains = {t: b["test"]["rougeL"] - b["zero_shot_test_rougeL"]
             for t, b in rep["bank"].items() if "zero_shot_test_rougeL" in b}
    if gains:
        lines.append(f"- bank: {len(rep['bank'])} adapters, test ROUGE-L over the untuned "
                     "model on their own tasks' test rows: " + ", ".join(
                         f"{short(t)} {g:+.1f}" for t, g in gains.items())
                     + f" ({sum(g > 0 for g in gains.values())} of {len(gains)} above it).")
    for c in rep.get("claims", []):
        lines.append(
            f"- {short(c['task'])}: {c['variant']} (best on validation, "
            f"{c['validation']:.1f}) test {c['xpeft_test']:.1f} (n={c['seeds']}) vs fresh "
            f"adapter {c['adapter_test']:.1f} ({c['xpeft_test'] - c['adapter_test']:+.1f}; "
            f"within {ADAPTER_TOLERANCE:g}: {'yes' if c['within_adapter'] else 'no'}) and "
            f"zero-shot {c['zero_shot_test']:.1f} ({c['xpeft_test'] - c['zero_shot_test']:+.1f};"
            f" >= +{FLOOR_MARGIN:g}: {'yes' if c['over_zero_shot'] else 'no'}): the claim "
            + ("holds" if c["holds"] else "does not hold") + _loglik_text(c) + ".")
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def _loglik_text(c: dict[str, Any]) -> str:
    text = ""
    if c.get("loglik_share") is not None:
        ll = c["test_answer_loglik"]
        text += (f"; test answer log-likelihood {ll['xpeft']:.2f} vs {ll['adapter']:.2f} and "
                 f"{ll['zero_shot']:.2f}: {100 * c['loglik_share']:.0f}% of the adapter's gain")
    if c.get("bank_use"):
        top = sorted(c["bank_use"].items(), key=lambda kv: -kv[1])[:2]
        text += ("; its mix draws most on " + ", ".join(f"{short(t)} ({u:.2f})" for t, u in top)
                 + f" (even: {1 / len(c['bank_use']):.2f})")
    return text


def _by_rate(scores: dict[str, float]) -> list[tuple[str, float]]:
    """Validation scores by ascending rate (report.json sorts "1e-03" before "3e-04")."""
    return sorted(scores.items(), key=lambda kv: float(kv[0]))


def table(rep: dict[str, Any]) -> str:
    """Rows: profile methods; per profile task: test ROUGE-L (mean over seeds, n) and the
    chosen rate with every rate's validation ROUGE-L."""
    # PROFILE_TASKS order: report.json is written with sorted keys
    tasks = [t for t in PROFILE_TASKS if t in rep["profiles"]] + sorted(
        set(rep["profiles"]) - set(PROFILE_TASKS))
    head = []
    for t in tasks:
        head += [f"{short(t)} test ROUGE-L", f"{short(t)} lr (validation ROUGE-L)"]
    lines = ["| profile | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for m in ("zero_shot", *PROFILE_METHODS):
        row = [m]
        for t in tasks:
            e = rep["profiles"][t].get(m)
            mean = _mean_test(e)
            row.append("–" if mean is None else f"{mean:.1f} (n={len(e['test'])})")
            tried = ", ".join(f"{k}: {v:.1f}" for k, v in _by_rate((e or {}).get(
                "validation_by_lr", {})))
            if not e or e["lr"] is None:
                row.append("–" if m == "zero_shot" else tried or "–")
            else:
                row.append(f"{e['lr']:.0e} ({tried})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n" + checks_text(rep)


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--out", default="benchmarks/results/xpeft_decoder")
    parser.add_argument("--workroot", default="/tmp/fishjax-xpeft-decoder",
                        help="the cells' workdirs (the bank adapters' PEFT files stay here)")
    parser.add_argument("--only", default=None, help="run only this cell id")
    parser.add_argument("--set", action="append", default=[],
                        help="config override key=value (JSON value) added to every cell")
    parser.add_argument("--report", action="store_true",
                        help="rebuild report.json and the README table; run nothing")
    parser.add_argument("--cell_json", help=argparse.SUPPRESS)
    cli.add_readme(parser, README_BLOCK)
    args = parser.parse_args(argv)
    if args.cell_json:
        cli.print_child_result(run_cell(json.loads(args.cell_json), args.workroot))
        return
    if not args.report:
        run_grid(args)
    # The zero-shot cell scored the default model on the default splits: with other
    # settings (--set) its rows or model may differ, so it is not compared then.
    rep = report(load_cells(args.out), {} if args.set else zero_shot_by_task())
    atomic_write_json(os.path.join(args.out, "report.json"), rep)
    if args.readme:
        readme_blocks.write(args.readme, README_BLOCK, os.path.join(args.out, "report.json"),
                            table(rep))
    print(table(rep))


if __name__ == "__main__":
    main()
