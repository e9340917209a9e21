"""SCEP challenges: one per enrollment profile, with an expiry and a use limit, kept as SHA-256 digests only.

`ChallengeStore` is the interface; `MemoryChallengeStore` serves tests and `--memory`, `SQLiteChallengeStore`
keeps them in `scep.sqlite3` in the data directory (0600) so a restart does not void profiles handed out.
"""

from __future__ import annotations

import enum
import hashlib
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from .storage.sqlite_schema import private_file

PURGE_EVERY = 1000  # challenges added between two deletions of the expired ones


class Redemption(enum.StrEnum):
    VALID = "valid"
    UNKNOWN = "unknown"  # never issued here (or purged long after it expired)
    EXPIRED = "expired"
    USED_UP = "used up"


@dataclass(frozen=True, slots=True)
class Challenge:
    digest: bytes
    expires_at: float
    uses_left: int
    user_id: str | None
    token_id: str | None = None  # the enrollment token the profile carrying it was fetched with


def challenge_digest(challenge: str) -> bytes:
    return hashlib.sha256(challenge.encode("utf-8")).digest()


class ChallengeStore(Protocol):
    def add(self, challenge: str, *, expires_at: float, uses: int, user_id: str | None = None,
            token_id: str | None = None) -> None: ...

    def check(self, challenge: str, now: float) -> tuple[Redemption, Challenge | None]:
        """What `redeem` would answer, changing nothing."""
        ...

    def redeem(self, challenge: str, now: float) -> tuple[Redemption, Challenge | None]:
        """Use the challenge once if it is valid (atomically); otherwise change nothing."""
        ...

    def close(self) -> None: ...


def _judge(found: Challenge | None, now: float) -> Redemption:
    if found is None:
        return Redemption.UNKNOWN
    if found.expires_at <= now:
        return Redemption.EXPIRED
    if found.uses_left <= 0:
        return Redemption.USED_UP
    return Redemption.VALID


class MemoryChallengeStore:
    def __init__(self) -> None:
        self._challenges: dict[bytes, Challenge] = {}

    def add(self, challenge: str, *, expires_at: float, uses: int, user_id: str | None = None,
            token_id: str | None = None) -> None:
        digest = challenge_digest(challenge)
        self._challenges[digest] = Challenge(digest, expires_at, uses, user_id, token_id)

    def check(self, challenge: str, now: float) -> tuple[Redemption, Challenge | None]:
        found = self._challenges.get(challenge_digest(challenge))
        return _judge(found, now), found

    def redeem(self, challenge: str, now: float) -> tuple[Redemption, Challenge | None]:
        verdict, found = self.check(challenge, now)
        if verdict is Redemption.VALID and found is not None:
            self._challenges[found.digest] = replace(found, uses_left=found.uses_left - 1)
        return verdict, found

    def close(self) -> None:
        self._challenges.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS scep_challenges (
    digest BLOB PRIMARY KEY,
    expires_at REAL NOT NULL,
    uses_left INTEGER NOT NULL,
    user_id TEXT,
    token_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scep_challenges_expiry ON scep_challenges (expires_at);
"""
# A file from before challenges named their enrollment token gains the column (its challenges name none).
_ADD_TOKEN = "ALTER TABLE scep_challenges ADD COLUMN token_id TEXT"


class SQLiteChallengeStore:
    """One small table in its own file: the storage package's schema stays the device channel's."""

    def __init__(self, path: Path | str) -> None:
        private_file(str(path))  # a store of secrets, never world-readable (its -wal and -shm follow the file)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(scep_challenges)")}
        if "token_id" not in columns:
            self._db.execute(_ADD_TOKEN)
        self._added = 0

    def add(self, challenge: str, *, expires_at: float, uses: int, user_id: str | None = None,
            token_id: str | None = None) -> None:
        self._db.execute("INSERT OR REPLACE INTO scep_challenges (digest, expires_at, uses_left, user_id, token_id)"
                         " VALUES (?, ?, ?, ?, ?)", (challenge_digest(challenge), expires_at, uses, user_id, token_id))
        self._added += 1
        if self._added % PURGE_EVERY == 0:
            # Expired a day ago: a late device still learns "expired" rather than "unknown" for a while.
            self._db.execute("DELETE FROM scep_challenges WHERE expires_at < ?", (expires_at - 2 * 86400,))

    def _find(self, digest: bytes) -> Challenge | None:
        row = self._db.execute("SELECT expires_at, uses_left, user_id, token_id FROM scep_challenges "
                               "WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else Challenge(digest, row[0], row[1], row[2], row[3])

    def check(self, challenge: str, now: float) -> tuple[Redemption, Challenge | None]:
        found = self._find(challenge_digest(challenge))
        return _judge(found, now), found

    def redeem(self, challenge: str, now: float) -> tuple[Redemption, Challenge | None]:
        digest = challenge_digest(challenge)
        # One statement decides and spends: two servers on one file cannot both spend the last use.
        cursor = self._db.execute(
            "UPDATE scep_challenges SET uses_left = uses_left - 1 WHERE digest = ? AND uses_left > 0 "
            "AND expires_at > ?", (digest, now))
        found = self._find(digest)
        if cursor.rowcount == 1 and found is not None:
            return Redemption.VALID, replace(found, uses_left=found.uses_left + 1)
        return _judge(found, now), found

    def close(self) -> None:
        self._db.close()
