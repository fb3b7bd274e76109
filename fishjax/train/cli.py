"""What `train.py` shows and does around `train_and_evaluate`: listings, help, exit codes.

- `config_fields(path)`: every `config.<field> = <default>` of a config file with the
  comment written above it (the docs of `configs/default.py`, shown by `train.py --help`).
- `listing(what, configs_dir)`: the methods, configs or tasks one can name.
- `parse_flags(argv)`: absl's flag parsing (the `flags_parser` of `app.run`) under the
  same contract as a run: a missing config file, an unknown flag or config field, a bad
  value or an error raised by the config file itself (e.g. an unknown task after
  `glue.py:`) is one `error: ...` line on stderr and exit status 2.
- `run(config, workdir, ...)`: a run whose fishjax errors (bad config, data, files, a
  diverged run, a workdir of another config) end in one clear line and exit status 2
  (`fishjax.core.errors.exit_status`); a traceback only with `debug`, or for bugs.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import logging
import os
import re
import sys

import ml_collections
from absl import flags

from fishjax.core.errors import EXIT_BAD_INPUT, FishjaxError, exit_status
from fishjax.core.progress import show_logs
from fishjax.data.tasks import TASKS, get_task
from fishjax.methods import available_methods, get_method
from fishjax.train.trainer import closing_summary, train_and_evaluate

log = logging.getLogger("fishjax")
LISTINGS = ("methods", "configs", "tasks", "fields")
# `config.<field> = <default>` in a config file, `block.<field> = <default>` in a method's
# options.py (`fishjax/methods/<name>/options.py`, taken by `<name>_options.defaults()`).
_ASSIGN = re.compile(r"^\s*(?:config|block)\.([\w.]+)\s*=\s*(.+?)\s*(?:#\s*(.*))?$")
_METHOD_BLOCK = re.compile(r"^(\w+)_options\.defaults\(\)$")


@dataclasses.dataclass(frozen=True)
class ConfigField:
    name: str  # dotted, e.g. "train.learning_rate"
    default: str  # the source text of its value
    doc: str  # the comment lines above it (and any trailing comment), joined


def config_fields(path: str, prefix: str = "") -> list[ConfigField]:
    """The fields a config file sets, in file order, with their comments; a method's block
    (`config.method.<name> = <name>_options.defaults()`) with the fields of its folder's
    options.py."""
    fields, comment = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            stripped = line.strip()
            if stripped.startswith("#"):
                comment.append(stripped.lstrip("#").strip())
                continue
            m = _ASSIGN.match(line)
            block = _METHOD_BLOCK.match(m.group(2)) if m else None
            if block:
                fields += config_fields(_options_file(block.group(1)), f"{prefix}{m.group(1)}.")
            elif m and "ConfigDict()" not in m.group(2):
                doc = " ".join(comment + ([m.group(3)] if m.group(3) else []))
                fields.append(ConfigField(prefix + m.group(1), m.group(2), doc))
            comment = []
    return fields


def _options_file(method: str) -> str:
    spec = importlib.util.find_spec(f"fishjax.methods.{method}.options")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"fishjax/methods/{method}/options.py")
    return spec.origin


def fields_help(path: str, width: int = 88) -> str:
    """`config_fields` as help text: `--config.<field>` (default) and its comment."""
    out = [f"config fields (from {os.path.relpath(path)}; override any with "
           "--config.<field>=<value>):"]
    for field in config_fields(path):
        out.append(f"  {field.name} = {field.default}")
        if field.doc:
            out += _wrap(field.doc, "      ", width)
    return "\n".join(out)


def _wrap(text: str, indent: str, width: int) -> list[str]:
    lines, line = [], indent
    for word in text.split():
        if len(line) + len(word) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += word + " "
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _first_doc_line(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def listing(what: str, configs_dir: str) -> str:
    """The names one can use for `what` (one of LISTINGS), one per line with a note."""
    if what == "methods":
        return "\n".join(f"{name:16s} {_method_line(name)}" for name in available_methods())
    if what == "tasks":
        return "\n".join(f"{name:12s} {spec.describe()}" for name, spec in TASKS.items())
    if what == "configs":
        rows = []
        for name in sorted(os.listdir(configs_dir)):
            if name.endswith(".py") and not name.startswith("_"):
                rows.append(f"{os.path.join(configs_dir, name):28s} "
                            f"{_first_doc_line(os.path.join(configs_dir, name))}")
        rows.append(f"{os.path.join(configs_dir, 'glue.py') + ':<task>':28s} any GLUE task "
                    "(see --list=tasks), e.g. configs/glue.py:mrpc")
        return "\n".join(rows)
    if what == "fields":
        return fields_help(os.path.join(configs_dir, "default.py"))
    raise FishjaxError(f"--list={what!r}: choose one of {', '.join(LISTINGS)}")


def _method_line(name: str) -> str:
    """A method's `description`, else the first line of its module's design note."""
    method = get_method(name)
    if getattr(method, "description", None):
        return method.description
    doc = (sys.modules[type(method).__module__].__doc__ or "").strip()
    first = doc.splitlines()[0] if doc else ""
    return first.split(": ", 1)[-1].rstrip(".")  # "`fish`: FISH Mask, ..." -> "FISH Mask, ..."


def parse_flags(argv: list[str]) -> list[str]:
    """`flags.FLAGS(argv)`; any error in it (see module doc) prints one line on stderr and
    exits with status 2. Returns the arguments left after the flags."""
    try:
        missing = _missing_config_file(argv)
        if missing:
            raise FishjaxError(f"config file not found: {missing} (--list=configs shows the "
                               "configs)")
        return flags.FLAGS(argv)
    except Exception as e:  # absl, ml_collections and the config file's own errors
        print(f"error: {flag_error_line(e, argv)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _missing_config_file(argv: list[str]) -> str | None:
    """The path of `--config=PATH[:ARG]` if that file does not exist (ml_collections would
    only fail later, with a traceback)."""
    for i, arg in enumerate(argv[1:], start=1):
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        path = value.split(":", 1)[0]
        return None if os.path.isfile(path) else path
    return None


_DID_YOU_MEAN = re.compile(r'Did you mean "(\w+)"')
_MISSING_KEY = re.compile(r"^\W*'?(\w+)")


def flag_error_line(e: BaseException, argv: list[str]) -> str:
    """One line for an error raised while parsing `argv`'s flags."""
    text = str(e)
    if isinstance(e, AttributeError | KeyError):  # ml_collections: an unknown config field
        name = _MISSING_KEY.match(text.strip("\"'"))
        name = name.group(1) if name else "?"
        arg = next((a.split("=", 1)[0] for a in argv
                    if a.startswith("--config.") and re.search(rf"\.{name}(\.|=|$)", a)),
                   f"--config...{name}")
        hint = _DID_YOU_MEAN.search(text)
        return (f"{arg}: no config field {name!r}"
                + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
                + "; --list=fields shows them")
    lines = [x.strip() for x in text.splitlines()
             if x.strip() and not x.strip().startswith("Pass --help")]
    if any(x.startswith("Traceback") for x in lines):  # an error the config file raised
        message = re.sub(r"^[A-Za-z_.]*(Error|Exception): ", "", lines[-1])
        where = lines[0].removeprefix("flag ").split(": Error", 1)[0]  # --config=<path:arg>
        path = where.split("=", 1)[-1].split(":", 1)[0]
        return message if path and message.startswith(path) else f"{where}: {message}"
    return " ".join(lines) or type(e).__name__


def run(config: ml_collections.ConfigDict | None, workdir: str | None, *,
        overwrite: bool = False, debug: bool = False) -> int:
    """Runs `train_and_evaluate`; returns the process exit status (0, or 2 for bad input,
    with the reason printed as one line on stderr)."""
    show_logs()  # plain timed lines on stderr; the summary goes to stdout

    def main() -> None:
        if config is None or not workdir:
            raise FishjaxError("--config and --workdir are required (see --help; "
                               "--list=configs shows the configs)")
        results = train_and_evaluate(config, workdir, overwrite=overwrite)
        print(closing_summary(results, os.path.abspath(workdir),
                              get_task(config.task).main_metric), flush=True)

    return exit_status(main, debug)
