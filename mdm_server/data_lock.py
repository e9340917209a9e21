"""The data directory's lock: one server process per directory, or two would silently diverge.

An exclusive flock on `mdmsim.lock`, held for the process's life; the kernel releases it however the process
ends (kill -9 included), so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .ca import private_directory

LOCK_FILE = "mdmsim.lock"


class DataDirLockedError(Exception):
    """Another process holds the data directory's lock."""


class DataDirLock:
    """`acquire()` takes the lock or raises DataDirLockedError saying which process has it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        private_directory(self.data_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLockedError(
                f"data directory {self.data_dir} is in use by another mdmsim serve (pid {holder}); "
                "stop that one or give this one another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        # The file stays: removing it would let a third process lock a new file while a second waits on the old.
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
