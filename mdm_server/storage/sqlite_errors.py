"""sqlite3 errors as storage errors: a full disk or database is `StorageFullError`, whose reason names no path.

Shared by the queue database and the admin document store, which both live in the data directory.
"""

from __future__ import annotations

import errno
import logging
import sqlite3

from .interface import StorageError, StorageFullError

log = logging.getLogger(__name__)


def is_full(exc: BaseException) -> bool:
    """SQLITE_FULL (a disk with no space, or PRAGMA max_page_count reached) or an OSError ENOSPC."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def storage_error(exc: sqlite3.Error, path: str) -> StorageError:
    """The StorageError to raise for `exc`; a full store is logged here, with its path, for the operator."""
    if is_full(exc):
        log.error("SQLite storage %s is full (%s): writes answer 503 until space is freed", path, exc)
        return StorageFullError()
    return StorageError(f"SQLite storage {path} failed: {exc}")
