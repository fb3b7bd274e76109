"""The command line the benchmark scripts share: their parser, the `--json` result file, the
`--readme` / `--report` README block, and child processes of a script.

Every script runs as a module from the repository root (`python -m benchmarks.speed.
step_cost --help`); a script that times in fresh processes starts them the same way
(`run_module`), importable from any working directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.common import readme_blocks
from fishjax.core.io import atomic_write_json, read_json

# The repository root: where `benchmarks` and `configs` import from.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLUE_DIR = os.path.join(REPO, "..", "shared", "data", "glue")


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser, described by the first line of its docstring; its usage line names
    the module when it runs as `python -m benchmarks...`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = f"python -m {spec.name}" if spec and spec.name.startswith("benchmarks.") else None
    return argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])


def add_json(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """`--json PATH`: where the result is written."""
    p.add_argument("--json", default=None, help=help or "write the result here (JSON)")


def add_readme(p: argparse.ArgumentParser, block: str, *, report: str | None = None,
               help: str | None = None) -> None:
    """`--readme PATH`: the README whose `block` is rewritten; with `report` (its help
    text), also `--report`, which reruns nothing."""
    p.add_argument("--readme", default=None,
                   help=help or f"rewrite this README's {block} block")
    if report is not None:
        p.add_argument("--report", action="store_true", help=report)


def write_json(path: str | None, result: dict) -> None:
    """Writes `result` to `path` (atomically) when a path was given."""
    if path:
        atomic_write_json(path, result)


def check_readme(readme: str | None, block: str, source: str) -> None:
    """Exits unless `readme` has the `block` for `source`: a run fails before its work, not
    after it."""
    if readme:
        try:
            readme_blocks.read(readme, block, source)
        except readme_blocks.ReadmeError as e:
            raise SystemExit(f"--readme: {e}") from None


def save_result(args: argparse.Namespace, result: dict, block: str,
                table: Callable[[dict], str]) -> None:
    """Writes `result` to `--json` and, with `--readme`, rewrites the README's `block`
    from that file."""
    write_json(args.json, result)
    if args.json and args.readme:
        readme_blocks.write(args.readme, block, args.json, table(result))


def report_from_json(args: argparse.Namespace, block: str,
                     table: Callable[[dict], str]) -> dict:
    """`--report`: rewrites the README's `block` from the existing `--json`; returns it."""
    result = read_json(args.json)
    readme_blocks.write(args.readme, block, args.json, table(result))
    return result


def module_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with the repository root first on PYTHONPATH."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def module_cmd(module: str, *args: str) -> list[str]:
    """The command line of `python -m module args` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def run_module(module: str, args: list[str], *, env: dict[str, str] | None = None,
               **kwargs: Any) -> subprocess.CompletedProcess:
    """Runs `python -m module args` in a fresh process (`subprocess.run`'s `kwargs`)."""
    return subprocess.run(module_cmd(module, *args), env=module_env(env), **kwargs)


def stop_file(workroot: str) -> str:
    """The file that asks a running grid to stop between cells (`touch` it): the cell in
    progress finishes and is recorded, no new one starts. A grid clears it when it starts."""
    return os.path.join(workroot, "STOP")


def clear_stop_file(workroot: str) -> None:
    """Makes `workroot` and removes a stop request left from an earlier run there
    (starting a grid means run it)."""
    os.makedirs(workroot, exist_ok=True)
    path = stop_file(workroot)
    if os.path.exists(path):
        os.remove(path)
        print(f"removed the stop request {path} left from an earlier run", file=sys.stderr)


def stop_requested(workroot: str) -> bool:
    return os.path.exists(stop_file(workroot))


RESULT = "RESULT"  # a child's result: one stdout line, this prefix then JSON


def print_child_result(result: Any) -> None:
    """A child process's answer to its parent (`child_result`)."""
    print(RESULT + json.dumps(result), flush=True)


class NoChildResult(ValueError):
    """A child process that printed no result line."""


def child_result(stdout: str) -> Any:
    """The result a child printed (`print_child_result`)."""
    line = next((x for x in stdout.splitlines() if x.startswith(RESULT)), None)
    if line is None:
        raise NoChildResult(f"the child printed no {RESULT} line")
    return json.loads(line[len(RESULT):])
