"""Progress bars (tqdm) that show only where someone watches: a terminal or a notebook.

Piped or redirected output (CI logs, `> run.log`, a subprocess) gets no bar, only the log
lines: a bar there is a stream of carriage-return fragments.

Example:
  >>> bar = progress_bar(total=600, desc="fisher (empirical)", unit="ex")
  >>> bar.update(32); bar.close()
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


def watched() -> bool:
    """Whether stderr is a terminal or this runs in a Jupyter/Colab kernel."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def progress_bar(total: int | None, desc: str, unit: str, *, enabled: bool = True,
                 initial: int = 0) -> tqdm:
    """A tqdm bar, disabled unless `enabled` and `watched()` (a disabled bar's calls are
    no-ops, so callers never branch on it)."""
    return tqdm(total=total, desc=desc, unit=unit, initial=initial,
                disable=not (enabled and watched()), dynamic_ncols=True, leave=False)


@contextlib.contextmanager
def logs_above(bar: tqdm) -> Iterator[None]:
    """While `bar` shows, the console lines of fishjax's logger (`show_logs`) and of the
    root logger are written above it, not through it."""
    if bar.disable:
        yield
        return
    with logging_redirect_tqdm(loggers=[logging.root, logging.getLogger("fishjax")]):
        yield


class _Lines(logging.Formatter):
    """`10:42:07 message`; warnings and errors say so (`10:42:07 warning: ...`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, rest = line.partition(" ")
            line = f"{stamp} {record.levelname.lower()}: {rest}"
        return line


def show_logs(stream=None, level: int = logging.INFO) -> None:
    """Sends fishjax's log lines to `stream` (default stderr) as plain timed lines, and no
    longer through the root logger (absl's `I1204 10:42:07.123 ...` prefixes). Idempotent:
    calling it again replaces the stream, never adds a second handler."""
    log = logging.getLogger("fishjax")
    for h in [h for h in log.handlers if getattr(h, "_fishjax_lines", False)]:
        log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(_Lines())
    handler._fishjax_lines = True
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
