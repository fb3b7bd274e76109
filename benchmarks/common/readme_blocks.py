"""Generated tables in a README, each between a pair of markers that name its source:

  <!-- glue-table:begin benchmarks/results/glue_gpu/results.json -->
  | method | ... |
  <!-- glue-table:end -->

`write` replaces a block's text (atomically) and `check` says how it differs from what the
source generates, so a README table can be proved to come from a results file and not be
typed. A README may hold several blocks of one kind; each names its source (a path relative
to the README's folder). A lone block without a source is taken for any source (older
READMEs).
"""

from __future__ import annotations

import difflib
import os
from typing import NamedTuple

from fishjax.core.io import atomic_write_text


class ReadmeError(ValueError):
    """A README without (or with malformed) markers for the wanted block."""


class Block(NamedTuple):
    begin: int  # line index of the begin marker
    end: int  # line index of the end marker
    source: str | None  # as written in the begin marker (relative to the README's folder)


def _begin(name: str) -> str:
    return f"<!-- {name}:begin"


def _end(name: str) -> str:
    return f"<!-- {name}:end -->"


def _lines(readme_path: str) -> list[str]:
    if not os.path.isfile(readme_path):
        raise ReadmeError(f"{readme_path}: no such file")
    return open(readme_path, encoding="utf-8").read().splitlines(keepends=True)


def blocks(readme_path: str, name: str, lines: list[str] | None = None) -> list[Block]:
    """Every `name` block of the README, in order; ReadmeError on unpaired markers."""
    lines = _lines(readme_path) if lines is None else lines
    found, open_at, source = [], None, None
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith(_begin(name)):
            if open_at is not None:
                raise ReadmeError(f"{readme_path}:{i + 1}: '{_begin(name)}' inside another block")
            rest = text[len(_begin(name)):].removesuffix("-->").strip()
            open_at, source = i, (rest if rest.endswith(".json") else None)
        elif text == _end(name):
            if open_at is None:
                raise ReadmeError(f"{readme_path}:{i + 1}: '{_end(name)}' without a begin")
            found.append(Block(open_at, i, source))
            open_at = None
    if open_at is not None:
        raise ReadmeError(f"{readme_path}:{open_at + 1}: '{_begin(name)}' is never closed")
    return found


def source_path(readme_path: str, block: Block) -> str | None:
    """The block's source as a path usable from the working directory."""
    if block.source is None:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(readme_path)),
                                         block.source))


def find(readme_path: str, name: str, source: str, lines: list[str] | None = None) -> Block:
    """The block whose marker names `source` (or the README's only block, if unnamed)."""
    found = blocks(readme_path, name, lines)
    want = os.path.normpath(os.path.abspath(source))
    named = [b for b in found if source_path(readme_path, b) == want]
    if len(named) == 1:
        return named[0]
    if not named and len(found) == 1 and found[0].source is None:
        return found[0]
    rel = os.path.relpath(want, os.path.dirname(os.path.abspath(readme_path)))
    raise ReadmeError(f"{readme_path}: expected one '{_begin(name)} {rel} -->' line followed "
                      f"by one '{_end(name)}' line, found {len(named)} such blocks "
                      f"({len(found)} '{name}' blocks in all)")


def read(readme_path: str, name: str, source: str) -> str:
    """The text between the markers of the block for `source`."""
    lines = _lines(readme_path)
    b = find(readme_path, name, source, lines)
    return "".join(lines[b.begin + 1:b.end])


def write(readme_path: str, name: str, source: str, text: str) -> None:
    """Replaces the text of the block for `source` (atomic: the README is never half
    written)."""
    lines = _lines(readme_path)
    b = find(readme_path, name, source, lines)
    atomic_write_text(readme_path, "".join(lines[:b.begin + 1]) + text + "".join(lines[b.end:]))


def check(readme_path: str, name: str, source: str, text: str) -> list[str]:
    """Problems with the block for `source` ([] when it is exactly `text`)."""
    try:
        have = read(readme_path, name, source)
    except ReadmeError as e:
        return [str(e)]
    if have == text:
        return []
    diff = difflib.unified_diff(have.splitlines(), text.splitlines(), "README", source,
                                lineterm="")
    return [f"{readme_path}: the {name} block differs from what {source} generates:", *diff]
