"""The encoder evidence grid (`benchmarks/grid/evidence.py`) as parallel processes, for a
machine with more cores or an accelerator; its cells are merged into the same folders.

  python -m benchmarks.grid.evidence_parallel --glue_dir=../shared/data/glue \\
      --out=benchmarks/results/evidence --work=/tmp/evidence_shares --deadline_s=420
  python -m benchmarks.grid.evidence --out=benchmarks/results/evidence --report \\
      --readme README.md

A share is one part's glue.py command cut down to one task and one method, run in its own
folder under `--work`: it starts from the part's finished cells of that task and method
(so they are skipped) and from the part's validation-split files (written first in
`<out>/<part>/splits/`, so every share trains and chooses on the rows the part names).
Within a share the protocol is evidence's: every rate on seed 0 (and the extensions past
an edge), then seeds 1 and 2 at the chosen rate. Only shares with cells left start, at
most `--jobs` at once. `--deadline_s` after the start, `<work>/STOP` is touched: each
process finishes its running cell and ends (`touch <work>/STOP` does the same by hand);
`--kill_s` after the start, the shares still running are ended (their running cells lost).
Then each share's finished cells are merged into `<out>/<part>` by merge_results.py (a cell that
differs from one already there is an error and nothing is written), their `row_split`
pointed back at the part's split file (same sha256) and `merged_from` recorded, and the
part's selection and `results.md` rebuilt by `glue.py --report`. The parts wait as in
evidence.py: `budget` for main's SST-2 rates, `xpeft` for its variant (`--parts` picks).
Rerunning resumes; each cell records its `device`. `--merge_only` merges share folders
brought back from another machine (nothing runs). Never run this and evidence.py on one
`--out` at once: each rewrites a part's results.json from what it read.
`benchmarks/grid/device/` holds the scripts that run it on a lent GPU machine of this
workplace (bundle.sh says how).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import time
from typing import NamedTuple

from benchmarks.common import cli
from benchmarks.grid import evidence, glue, merge_results
from benchmarks.grid import validation_protocol as vp
from fishjax.core.io import atomic_write_json, read_json

log = logging.getLogger("fishjax.benchmarks")

class Share(NamedTuple):
    part: str
    task: str
    method: str
    lr_grid: str  # the part's --lr_grid ("" for its own grids)

    @property
    def name(self) -> str:
        return f"{self.part}-{self.task}-{self.method}"


def _part_args(args: argparse.Namespace, share: Share, out: str | None = None,
               stop_dir: str | None = None) -> list[str]:
    return evidence.part_argv(share.part, args, share.lr_grid, share.task, share.method,
                              out, stop_dir)


def _cells_left(cells: dict[str, dict], share: Share) -> int:
    _, _, seeds, lr_grid = evidence.part_plan(share.part, share.lr_grid)
    grids = vp.parse_lr_grid(lr_grid)
    rates_of = lambda m: vp.grid_of(m, glue.base_method(m), grids)  # noqa: E731
    seed_list = [int(s) for s in seeds.split(",")]
    planned = vp.todo([share.task], [share.method], seed_list, rates_of, cells)
    chosen = vp.choose_lr(cells, share.task, share.method, rates_of(share.method),
                          seed_list[0])[0]
    return len(planned) + (0 if chosen is not None else len(seed_list) - 1)


def plan(args: argparse.Namespace) -> list[Share]:
    """The shares of `args.parts` with cells left, in evidence's run order."""
    shares = []
    for part in args.parts.split(","):
        if part not in evidence.PARTS:
            raise SystemExit(f"--parts: unknown part {part!r} (one of {evidence.PARTS})")
        grid = evidence.part_grid(part, args.out)
        if grid is None:
            log.warning("%s: waiting for %s", part, evidence.WAITS_FOR[part])
            continue
        tasks, methods, _, _ = evidence.part_plan(part, grid)
        cells = evidence.part_state(args.out, part)["cells"]
        for task in tasks.split(","):
            for method in methods.split(","):
                share = Share(part, task, method, grid)
                if _cells_left(cells, share):
                    shares.append(share)
    return shares


def prepare(args: argparse.Namespace, share: Share) -> str:
    """The share's folder: the part's split file of its task, its finished cells and those
    the folder already holds."""
    gargs = glue.parse_args(_part_args(args, share))
    seed = int(evidence.part_plan(share.part, share.lr_grid)[2].split(",")[0])
    split = glue.validation_cell_config(share.task, share.method, 1e-3, seed,
                                        gargs).data.row_split  # written now if missing
    folder = os.path.join(args.work, share.name)
    os.makedirs(os.path.join(folder, "splits"), exist_ok=True)
    shutil.copyfile(split, os.path.join(folder, "splits", os.path.basename(split)))
    path = os.path.join(folder, "results.json")
    # a share folder left by an earlier run keeps its finished cells (not merged if that
    # run was cut short); the part's own are added
    cells = {cid: c for cid, c in (read_json(path)["cells"] if os.path.exists(path)
                                   else {}).items() if c.get("status") == "ok"}
    cells.update({cid: c for cid, c in evidence.part_state(args.out, share.part)["cells"]
                  .items() if c.get("task") == share.task and c.get("method") == share.method
                  and (c.get("status") == "ok" or cid not in cells)})
    atomic_write_json(path, {"cells": cells})
    return folder


def launch(args: argparse.Namespace, shares: list[Share]) -> dict[str, int]:
    """Runs every share's glue.py (at most `args.jobs` at once) until done or the deadline;
    returns each share's exit code. Every share's folder is prepared before any starts (a
    split that does not match fails first); the children never outlive this function."""
    folders = {share.name: prepare(args, share) for share in shares}
    cli.clear_stop_file(args.work)
    start, waiting, running, codes = time.monotonic(), list(shares), {}, {}
    stopping = False  # once asked (deadline, kill time or a `touch`), for good
    try:
        while waiting or running:
            elapsed = time.monotonic() - start
            if not stopping and (cli.stop_requested(args.work) or elapsed > args.deadline_s
                                 or elapsed > args.kill_s):
                log.warning("stop (%s): no new cells", "asked" if cli.stop_requested(
                    args.work) else f"after {elapsed:.0f}s")
                stopping = True
                waiting.clear()
            if stopping and not cli.stop_requested(args.work):
                # a share that starts clears its stop file (glue.py): ask again
                open(cli.stop_file(args.work), "w").close()
            while waiting and len(running) < args.jobs:
                share = waiting.pop(0)
                with open(os.path.join(args.work, share.name + ".log"), "ab") as logf:
                    running[share.name] = subprocess.Popen(
                        cli.module_cmd("benchmarks.grid.glue", *_part_args(
                            args, share, folders[share.name], args.work)),
                        stdout=logf, stderr=subprocess.STDOUT, env=cli.module_env())
                log.info("started %s (%d waiting)", share.name, len(waiting))
            if elapsed > args.kill_s and running:
                # a hard end (a lent machine's time): the running cells are lost, every
                # finished one is in its share's results.json already
                log.warning("kill time (%ds): ending %d shares", args.kill_s, len(running))
                _end(running)
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    codes[name] = proc.returncode
                    del running[name]
                    log.info("%s ended (exit %d), %d running", name, proc.returncode,
                             len(running))
            if waiting or running:
                time.sleep(args.poll_s)
    finally:
        _end(running)  # an error or Ctrl-C here: no share runs on unseen
    return codes


def _end(running: dict[str, subprocess.Popen]) -> None:
    for proc in running.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in running.values():
        proc.wait()


def merge(out: str, part: str, folders: list[str]) -> int:
    """Merges the finished cells of the share `folders` into `<out>/<part>` (merge_results:
    a conflicting cell is an error, each cell's row split checked against the part's);
    returns how many cells were new."""
    def finished() -> int:
        cells = evidence.part_state(out, part)["cells"].values()
        return sum(c.get("status") == "ok" for c in cells)

    before = finished()
    merge_results.merge(os.path.join(out, part), folders)
    return finished() - before


def main(argv=None) -> dict[str, int]:
    p = cli.parser(__doc__)
    p.add_argument("--glue_dir", default=None)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--out", default=evidence.DEFAULT_OUT)
    p.add_argument("--work", default="/tmp/evidence_shares",
                   help="the shares' folders and logs (resumable)")
    p.add_argument("--parts", default="main,rte,xpeft,reference,budget",
                   help="comma list of evidence parts")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="shares running at once (default: cores - 1)")
    p.add_argument("--deadline_s", type=float, default=float("inf"),
                   help="seconds after which no new cell starts")
    p.add_argument("--kill_s", type=float, default=float("inf"),
                   help="seconds after which running shares are ended (their running cells "
                   "are lost), then the finished cells merged")
    p.add_argument("--merge_only", action="store_true",
                   help="run nothing: merge the share folders under --work into --out and "
                   "rebuild each part's selection (shares brought back from another machine)")
    p.add_argument("--poll_s", type=float, default=5.0)
    p.add_argument("--set", action="append", default=[],
                   help="config override key=value for every cell")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("fishjax").setLevel(logging.INFO)
    if args.merge_only:  # the share folders under --work, e.g. brought back from a GPU
        shares = [Share(*name.split("-", 2), evidence.part_grid(name.split("-")[0], args.out))
                  for name in sorted(os.listdir(args.work)) if os.path.exists(
                      os.path.join(args.work, name, "results.json"))]
        codes = {}
    else:
        shares = plan(args)
        log.info("%d shares with cells left: %s", len(shares),
                 ", ".join(s.name for s in shares))
        codes = launch(args, shares)
    merged = {}
    for part, grid in dict.fromkeys((s.part, s.lr_grid) for s in shares):
        folders = [os.path.join(args.work, s.name) for s in shares if s.part == part
                   and os.path.exists(os.path.join(args.work, s.name, "results.json"))]
        if not any(c.get("status") == "ok" for f in folders for c in read_json(
                os.path.join(f, "results.json"))["cells"].values()):
            continue  # no finished cell in its shares: the part stays as it was
        merged[part] = merge(args.out, part, folders)
        glue.main(evidence.part_argv(part, args, grid) + ["--report"])  # its selection
        log.info("%s: %d new cells merged into %s", part, merged[part],
                 os.path.join(args.out, part))
    failed = {n: c for n, c in codes.items() if c not in (0, -signal.SIGTERM)}  # not ended
    if failed:  # by --kill_s: a crash
        raise SystemExit(f"shares that exited with an error (see {args.work}/<share>.log, "
                         f"their finished cells are merged): {failed}")
    return merged


if __name__ == "__main__":
    main()
