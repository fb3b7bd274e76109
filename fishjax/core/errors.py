"""Every error fishjax raises on bad input, in one place so that any layer can raise them.

Each names what is wrong (the config field, file, leaf or option) in its message. All are
`ValueError`s, under one base `FishjaxError`, so a caller can catch fishjax's own errors
apart from bugs.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

EXIT_BAD_INPUT = 2  # the exit status of a command line stopped by a fishjax error


class FishjaxError(ValueError):
    """Base of every fishjax error about bad input (config, files, shapes, masks)."""


class ConfigError(FishjaxError):
    """A config value (or workdir) that cannot be used."""


class DataError(FishjaxError):
    """Bad data or data configuration: the message names the task, file, row or column."""


class ModelError(FishjaxError):
    """A model, its files or its configuration cannot be used."""


class MaskError(FishjaxError):
    """A mask or mask file that does not fit the params, or bad selection arguments."""


class FisherError(FishjaxError):
    """Bad arguments to the Fisher computation."""


class SparseError(FishjaxError):
    """Indices or values that do not fit the params, or a malformed sparse increment."""


class DeltaError(FishjaxError):
    """A delta file that is malformed or does not fit the params it is applied to."""


class PeftError(FishjaxError):
    """A PEFT spec, tree or file that does not fit the params."""


class ShardingError(FishjaxError):
    """A mesh or sharding rule that cannot be realised on the available devices."""


class IRDError(FishjaxError):
    """Bad IRD options or arguments; `field` names the option at fault, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class CheckpointError(FishjaxError):
    """A damaged or unusable checkpoint; the message names its folder and what to do."""


class TrainingDiverged(FishjaxError):
    """A non-finite loss or gradient norm: the run stopped, nothing after it was kept.

    `step` is the first non-finite step; `record` what `results.json` says of it.
    """

    def __init__(self, message: str, step: int | None = None, record: dict | None = None):
        super().__init__(message)
        self.step = step
        self.record = record or {}


class WorkdirError(FishjaxError):
    """A workdir holding a run made with another config (or otherwise not resumable)."""


EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM, as a shell reports SIGINT
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def exit_status(main: Callable[[], Any], debug: bool = False) -> int:
    """Runs a command line's `main()`: 0 when it returns; a fishjax error (bad input, a
    diverged run) prints one `error: ...` line on stderr (a message of several lines
    joined) and gives EXIT_BAD_INPUT, with its traceback only if `debug`. A full disk is
    one line and EXIT_BAD_INPUT too; Ctrl-C or SIGTERM one line and EXIT_INTERRUPTED.
    Other exceptions (bugs) propagate with theirs."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops a run like Ctrl-C
    try:
        main()
    except FishjaxError as e:
        if debug:
            raise
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: every finished checkpoint is kept; rerun the same command to "
              "resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        if debug or e.errno not in _DISK_FULL:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: no space left on the device{where}: free some space and rerun the "
              "same command to resume from the last checkpoint", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
