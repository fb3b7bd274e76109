"""What a run shows: progress bars only where someone watches (a terminal, a notebook),
plain timed log lines, and a train-log cadence that suits short runs."""

from __future__ import annotations

import io
import logging
import re

from fishjax.core import progress
from fishjax.train.trainer import log_interval


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    piped = io.StringIO()
    monkeypatch.setattr("sys.stderr", piped)
    bar = progress.progress_bar(10, "train", "step")
    bar.update(3)
    bar.close()
    assert bar.disable and piped.getvalue() == ""  # a pipe or file gets no bar fragments
    tty = _Terminal()
    monkeypatch.setattr("sys.stderr", tty)
    bar = progress.progress_bar(10, "train", "step")
    bar.update(3)
    bar.refresh()
    assert not bar.disable and "train:" in tty.getvalue() and "3/10" in tty.getvalue()
    bar.close()
    assert progress.progress_bar(10, "train", "step", enabled=False).disable  # e.g. process 1


def test_show_logs_writes_plain_timed_lines():
    stream = io.StringIO()
    log = logging.getLogger("fishjax")
    try:
        progress.show_logs(stream)
        progress.show_logs(stream)  # idempotent: still one line per record
        log.info("step 3/10 | loss 0.6931")
        log.warning("only 96 examples available")
    finally:
        for h in [h for h in log.handlers if getattr(h, "_fishjax_lines", False)]:
            log.removeHandler(h)
        log.propagate = True
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\d\d:\d\d:\d\d step 3/10 \| loss 0\.6931", lines[0])
    assert re.fullmatch(r"\d\d:\d\d:\d\d warning: only 96 examples available", lines[1])


def test_log_interval_gives_short_runs_about_ten_lines():
    assert log_interval(20, 10_000) == 20  # long runs: the configured cadence
    assert log_interval(20, 76) == 8  # the quickstart: ~10 lines, not 3
    assert log_interval(20, 5) == 1
    assert log_interval(4, 24) == 3
