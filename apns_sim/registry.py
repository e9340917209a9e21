"""The gateway's durable state: which token belongs to which topic (and since when it is unregistered),
and the one pending notification per token. Kept in memory, written to SQLite in batches.

SQLite rather than an append-only journal: upserts keep the file as large as the state, not as the history
(a fleet re-registers every token at each reconnect), one transaction makes a batch atomic, and the file can
be inspected with the sqlite3 shell. Writes are batched by `flush()` (the gateway calls it on a timer and at
shutdown): a crash loses at most the last interval's changes, a clean stop loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGISTRY_FILE = "apns-registry.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token BLOB PRIMARY KEY, topic TEXT NOT NULL, registered_at REAL NOT NULL,
    unregistered_at REAL, reason TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    token BLOB PRIMARY KEY, payload TEXT NOT NULL, apns_id TEXT NOT NULL, expiration INTEGER NOT NULL,
    priority INTEGER NOT NULL, accepted_at REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class Registration:
    topic: str
    registered_at: float
    unregistered_at: float | None = None  # when the token stopped being valid: APNs answers 410 from then on
    reason: str | None = None  # Unregistered or ExpiredToken


@dataclass(frozen=True, slots=True)
class HeldPush:
    """The notification APNs keeps for a token until it is delivered or `expiration` passes."""

    payload: dict[str, Any]
    apns_id: str
    expiration: int  # epoch seconds; 0: now or never
    priority: int
    accepted_at: float  # gateway clock, when the provider sent it

    def expired(self, now: float) -> bool:
        return self.expiration != 0 and now >= self.expiration


class TokenRegistry:
    """Tokens and pending notifications; `path` None keeps everything in memory (tests, in-process use)."""

    def __init__(self, path: Path | None = None) -> None:
        self.tokens: dict[bytes, Registration] = {}
        self.pending: dict[bytes, HeldPush] = {}
        self._dirty_tokens: set[bytes] = set()
        self._dirty_pending: set[bytes] = set()
        self._stored_pending: set[bytes] = set()  # rows in the file: a push delivered before a flush costs no write
        self._topics: dict[str, str] = {}  # one string object per topic: 100k registrations share a handful
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._load()

    def _load(self) -> None:
        assert self._db is not None
        for token, topic, registered_at, unregistered_at, reason in self._db.execute("SELECT * FROM tokens"):
            self.tokens[token] = Registration(self._topic(topic), registered_at, unregistered_at, reason)
        for token, payload, apns_id, expiration, priority, accepted_at in self._db.execute("SELECT * FROM pending"):
            self.pending[token] = HeldPush(json.loads(payload), apns_id, expiration, priority, accepted_at)
        self._stored_pending = set(self.pending)

    def _topic(self, topic: str) -> str:
        return self._topics.setdefault(topic, topic)

    def register(self, token: bytes, topic: str, now: float) -> None:
        """The device obtained `token` for `topic`; a token registered again is valid again."""
        current = self.tokens.get(token)
        if current is not None and current.topic == topic and current.unregistered_at is None:
            return  # re-registration at every reconnect: nothing to write
        self.tokens[token] = Registration(self._topic(topic), now)
        self._changed(self._dirty_tokens, token)

    def unregister(self, token: bytes, now: float, reason: str = "Unregistered") -> bool:
        current = self.tokens.get(token)
        if current is None:
            return False
        current.unregistered_at, current.reason = now, reason
        self._changed(self._dirty_tokens, token)
        self.hold(token, None)
        return True

    def hold(self, token: bytes, push: HeldPush | None) -> None:
        """Keep `push` as the token's one pending notification (None: there is none any more)."""
        if push is None:
            if self.pending.pop(token, None) is None:
                return
        else:
            self.pending[token] = push
        self._changed(self._dirty_pending, token)

    def _changed(self, dirty: set[bytes], token: bytes) -> None:
        if self._db is not None:  # in memory there is nothing to write later
            dirty.add(token)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty_tokens or self._dirty_pending)

    def flush(self) -> int:
        """Write the changes since the last flush in one transaction; returns how many rows it wrote."""
        if self._db is None or not self.dirty:
            self._dirty_tokens.clear()
            self._dirty_pending.clear()
            return 0
        tokens = [(t, r.topic, r.registered_at, r.unregistered_at, r.reason)
                  for t in self._dirty_tokens if (r := self.tokens.get(t)) is not None]
        held = [(t, json.dumps(p.payload), p.apns_id, p.expiration, p.priority, p.accepted_at)
                for t in self._dirty_pending if (p := self.pending.get(t)) is not None]
        gone = [(t,) for t in self._dirty_pending & self._stored_pending if t not in self.pending]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?, ?)", tokens)
            self._db.executemany("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)", held)
            self._db.executemany("DELETE FROM pending WHERE token = ?", gone)
        self._stored_pending.difference_update(t for (t,) in gone)
        self._stored_pending.update(row[0] for row in held)
        self._dirty_tokens.clear()
        self._dirty_pending.clear()
        return len(tokens) + len(held) + len(gone)

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None
