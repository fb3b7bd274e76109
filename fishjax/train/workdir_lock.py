"""One run at a time per workdir: `<workdir>/.lock`, held with flock(2) while a run works.

Two runs on one workdir would interleave checkpoints and delete each other's temporary
folders. The first takes an exclusive, non-blocking flock on `<workdir>/.lock` and writes
its pid, host and start time there; a second run finds the lock held and stops at once
with a `WorkdirError` naming the first. The kernel drops a flock when its process dies, so
a crashed run never blocks the next one: the next run takes the lock over, with a warning
naming the dead process its file still records. Release removes the file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time

from fishjax.core.errors import WorkdirError

log = logging.getLogger("fishjax")
LOCK_FILE = ".lock"


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds the workdir for this process (see module doc)."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read(fd))
                os.close(fd)
                raise WorkdirError(
                    f"{self.workdir} is in use by another run ({holder}): wait for it to "
                    "finish, or use another workdir") from None
            # The holder before us may have removed the file between our open and our lock:
            # then we locked a deleted file; try again on the one at the path.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read(fd)
        if stale:
            log.warning("took over the lock of %s on %s, which ended without releasing it",
                        _describe(stale), self.workdir)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd

    def moved(self, new_workdir: str) -> None:
        """The workdir was renamed to `new_workdir` while locked (train.py --overwrite moves
        an old run aside): removes the lock file there and drops the lock; `acquire()`
        then locks a new folder at the old path."""
        self.release(os.path.join(new_workdir, LOCK_FILE))

    def release(self, lock_file: str | None = None) -> None:
        """Removes the lock file (`lock_file`, default ours) and drops the lock; a no-op
        if not held."""
        if self._fd is None:
            return
        try:
            os.unlink(lock_file or self.path)
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {"unreadable": True}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "a process that left no record"
    return (f"process {holder['pid']} on {holder.get('host', '?')}, started "
            f"{holder.get('since', '?')}")
