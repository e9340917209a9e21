"""A small durable document store for the admin model: JSON documents by (kind, id) in SQLite.

The admin model changes rarely and is read whole, so one table of JSON documents is enough. `Documents` is
what the admin parts use; docstore_postgres.py keeps the same table in PostgreSQL.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..storage.sqlite_errors import is_full, storage_error
from ..storage.sqlite_schema import private_file
from .contracts import AdminError

SCHEMA = """
CREATE TABLE IF NOT EXISTS admin_documents (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
)
"""


class Documents(Protocol):
    def transaction(self) -> AbstractContextManager[None]: ...
    def put(self, kind: str, doc_id: str, body: dict[str, Any]) -> None: ...
    def get(self, kind: str, doc_id: str) -> dict[str, Any] | None: ...
    def list(self, kind: str) -> list[tuple[str, dict[str, Any]]]: ...
    def delete(self, kind: str, doc_id: str) -> bool: ...
    def close(self) -> None: ...


class DocumentStore:
    """JSON documents keyed by (kind, id); writes are transactional; one instance per thread (the reactor)."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.path = str(path)
        private_file(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # survives a process kill; see storage/sqlite.py
            self._db.execute("PRAGMA secure_delete=ON")  # a purged private key is zeroed, not left in free pages
        self._db.execute(SCHEMA)
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all of them land, or none (nested uses join the outer transaction)."""
        with self._full_as_storage_error():
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
                if self._depth == 1:
                    self._db.execute("COMMIT")
            except BaseException:
                if self._depth == 1 and self._db.in_transaction:  # a failed COMMIT too (disk full)
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth -= 1

    @contextmanager
    def _full_as_storage_error(self) -> Iterator[None]:
        # A full disk is the one sqlite3 error callers handle (a 503 that names no path); the rest stay as they are.
        try:
            yield
        except sqlite3.Error as exc:
            if is_full(exc):
                raise storage_error(exc, self.path) from None
            raise

    def put(self, kind: str, doc_id: str, body: dict[str, Any]) -> None:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        with self._full_as_storage_error():
            self._db.execute(
                "INSERT INTO admin_documents (kind, id, body) VALUES (?, ?, ?) "
                "ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body",
                (kind, doc_id, text),
            )

    def get(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT body FROM admin_documents WHERE kind = ? AND id = ?", (kind, doc_id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._db.execute("SELECT id, body FROM admin_documents WHERE kind = ? ORDER BY id", (kind,))
        return [(doc_id, json.loads(body)) for doc_id, body in rows]

    def delete(self, kind: str, doc_id: str) -> bool:
        cursor = self._db.execute("DELETE FROM admin_documents WHERE kind = ? AND id = ?", (kind, doc_id))
        return cursor.rowcount > 0

    def close(self) -> None:
        self._db.close()


def document_id(body: Any) -> str:
    """The id an admin gave a new label or policy in its JSON body, or a fresh one; ids become URL parts."""
    value = body.get("id")
    if value is None:
        return str(uuid.uuid4())
    if not isinstance(value, str) or not value or "/" in value:
        raise AdminError("id must be a non-empty string without '/'")
    return value
