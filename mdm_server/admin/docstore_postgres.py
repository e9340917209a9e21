"""The admin model's documents in PostgreSQL: docstore.py's table and semantics, next to the queue storage.

Several server processes on one database then read the same settings, labels and users; every write also
notifies the schema's channel ("doc <kind> <id>", delivered at commit) so the others drop what they cached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..storage.postgres_schema import notice_channel, open_database


class PostgresDocumentStore:
    """`Documents` in the `admin_documents` table of a PostgreSQL database (its own connection)."""

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        self._db, _ = open_database(dsn, schema)  # the storage schema, admin_documents included
        self.channel = notice_channel(self._db)
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all of them land, or none (nested uses join the outer transaction, as in SQLite)."""
        if self._depth == 0:
            self._db.execute("BEGIN")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")

    def put(self, kind: str, doc_id: str, body: dict[str, Any]) -> None:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        # One statement: the write and its notice (NOTIFY is transactional: sent at commit, or never).
        self._db.execute(
            "WITH written AS (INSERT INTO admin_documents (kind, id, body) VALUES (%s, %s, %s) "
            "ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body RETURNING 1) "
            "SELECT pg_notify(%s, %s) FROM written",
            (kind, doc_id, text, self.channel, _notice(kind, doc_id)),
        )

    def get(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT body FROM admin_documents WHERE kind = %s AND id = %s", (kind, doc_id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._db.execute("SELECT id, body FROM admin_documents WHERE kind = %s ORDER BY id", (kind,))
        return [(doc_id, json.loads(body)) for doc_id, body in rows.fetchall()]

    def delete(self, kind: str, doc_id: str) -> bool:
        cursor = self._db.execute(
            "WITH gone AS (DELETE FROM admin_documents WHERE kind = %s AND id = %s RETURNING 1) "
            "SELECT pg_notify(%s, %s) FROM gone", (kind, doc_id, self.channel, _notice(kind, doc_id)))
        return cursor.fetchone() is not None

    def close(self) -> None:
        self._db.close()


def _notice(kind: str, doc_id: str) -> str:
    # Ids are URL parts without spaces (document_id), so words split on spaces; a longer id than a notice holds
    # is sent as the kind alone, which readers take as "reload the whole kind".
    notice = f"doc {kind} {doc_id}"
    return notice if len(notice) < 7900 and " " not in doc_id else f"doc {kind}"
