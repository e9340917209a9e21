"""The SQLite schema, versioned with `PRAGMA user_version`: opening a file and bringing it up to date.

A new version appends a step to MIGRATIONS; a file written by a newer mdmsim is refused, never guessed at.
"""

from __future__ import annotations

import os
import sqlite3

from .interface import SchemaVersionError, StorageError

SYNCHRONOUS = ("NORMAL", "FULL")

_PENDING = "('Queued', 'Sent', 'NotNow')"

_V1 = (
    """
    CREATE TABLE devices (
        device_id        TEXT PRIMARY KEY NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('authenticated', 'enrolled', 'unenrolled')),
        topic            TEXT NOT NULL,
        facts            BLOB NOT NULL,  -- binary plist of Authenticate's keys
        cert_sha256      TEXT NOT NULL UNIQUE,
        authenticated_at REAL NOT NULL,
        last_checkin_at  REAL NOT NULL,
        last_seen_at     REAL NOT NULL,
        push_token       BLOB,
        push_magic       TEXT,
        unlock_token     BLOB,
        user_id          TEXT,
        not_now_count    INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID
    """,
    "CREATE INDEX devices_by_user ON devices (user_id, device_id) WHERE user_id IS NOT NULL",
    # One row per distinct command body: a profile sent to 10,000 devices is stored once, not 10,000 times.
    """
    CREATE TABLE payloads (
        payload_id INTEGER PRIMARY KEY,
        data       BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE commands (
        seq           INTEGER PRIMARY KEY,  -- insertion order: FIFO within a priority
        device_id     TEXT NOT NULL REFERENCES devices (device_id),
        command_uuid  TEXT NOT NULL,
        request_type  TEXT NOT NULL,
        payload_id    INTEGER NOT NULL REFERENCES payloads (payload_id),
        priority      INTEGER NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('Queued', 'Sent', 'NotNow',
                          'Acknowledged', 'Error', 'CommandFormatError', 'TimedOut')),
        timeout       REAL,
        queued_at     REAL NOT NULL,
        sent_at       REAL,
        result_at     REAL,
        result        BLOB,
        not_now_count INTEGER NOT NULL DEFAULT 0,
        UNIQUE (device_id, command_uuid)
    )
    """,
    f"""
    CREATE INDEX commands_pending ON commands (device_id, priority DESC, queued_at, seq)
        WHERE status IN {_PENDING}
    """,
    "CREATE INDEX commands_by_uuid ON commands (command_uuid)",
    "CREATE INDEX commands_by_payload ON commands (payload_id)",
    "CREATE INDEX commands_deadline ON commands (sent_at + timeout) WHERE status = 'Sent'",
    """
    CREATE TABLE pushes (
        device_id     TEXT PRIMARY KEY NOT NULL REFERENCES devices (device_id),
        pushed_at     REAL NOT NULL,
        outcome       TEXT NOT NULL,
        reason        TEXT,
        token_invalid INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
)

# Version 2: only commands with a timeout are in the deadline index. Every command Sent without one was
# in it too (under NULL), which cost each Sent and each result a page write for an entry nothing reads.
_V2 = (
    "DROP INDEX commands_deadline",
    """
    CREATE INDEX commands_deadline ON commands (sent_at + timeout)
        WHERE status = 'Sent' AND timeout IS NOT NULL
    """,
)

# Version 3: a command NotNow'd since its device's last Idle is `held` (the command channel passes over it
# until the next Idle). Kept in the file, not in one server process's memory, so that every process on the
# database agrees. The index holds only the held commands: an Idle finds them without reading the queue.
_V3 = (
    "ALTER TABLE commands ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX commands_held ON commands (device_id) WHERE held = 1",
)

_FINAL = "('Acknowledged', 'Error', 'CommandFormatError', 'TimedOut')"

# Version 4: retention finds the finished commands by result time through their own index, so a purge batch
# reads only what it removes (the pending commands are never in it).
_V4 = (f"CREATE INDEX commands_finished ON commands (result_at) WHERE status IN {_FINAL}",)

# Version 5: user channels (Shared iPad, SPEC section 11), keyed by (device, user), apart from the device's
# own token and PushMagic in `devices`.
_V5 = (
    """
    CREATE TABLE user_channels (
        device_id        TEXT NOT NULL REFERENCES devices (device_id),
        user_id          TEXT NOT NULL,
        user_short_name  TEXT,
        push_token       BLOB NOT NULL,
        push_magic       TEXT NOT NULL,
        token_updated_at REAL NOT NULL,
        PRIMARY KEY (device_id, user_id)
    ) WITHOUT ROWID
    """,
)

# Version 6: secrets at rest. A command whose body holds keys or passwords has `secret_until` and its
# `redacted` body (the same command without its secrets), which replaces the body once it is acknowledged or at
# `secret_until` (+inf: only once acknowledged); both NULL for other commands and once replaced.
_V6 = (
    "ALTER TABLE commands ADD COLUMN secret_until REAL",
    "ALTER TABLE commands ADD COLUMN redacted BLOB",
    "CREATE INDEX commands_secret ON commands (secret_until) WHERE secret_until IS NOT NULL",
)

# MIGRATIONS[n] takes a file from version n to n + 1; version 0 is an empty (new) file.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
SCHEMA_VERSION = len(MIGRATIONS)
PENDING_SQL = _PENDING
FINAL_SQL = _FINAL
PRIVATE = 0o600  # the database holds identities and push tokens: the owner's alone (SQLite's -wal, -shm follow)


def migrate(db: sqlite3.Connection) -> int:
    """Bring the file to SCHEMA_VERSION, one transaction per step; return the version found on opening."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database schema version {found} is newer than this mdmsim understands ({SCHEMA_VERSION})"
        )
    for version in range(found, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            # user_version lives in the file header and is transactional, so a step is all or nothing.
            db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found


WAL_SIZE_LIMIT = 4 * 1024 * 1024  # bytes a WAL file is truncated to after a checkpoint


def open_database(path: str, synchronous: str) -> tuple[sqlite3.Connection, int]:
    """A connection in WAL mode with the schema up to date, and the schema version the file had."""
    if synchronous not in SYNCHRONOUS:
        raise StorageError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}")
    try:
        private_file(path)
        db = sqlite3.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        try:
            db.execute("PRAGMA journal_mode = WAL").fetchone()
            # A WAL file keeps the size of its busiest moment unless told otherwise; with this limit each
            # checkpoint that resets it truncates it back, so the database on disk stays bounded (the soak).
            db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}").fetchone()
            db.execute(f"PRAGMA synchronous = {synchronous}")
            db.execute("PRAGMA foreign_keys = ON")
            # Deleted rows are overwritten with zeros, not left in free pages: a dropped secret body is gone.
            db.execute("PRAGMA secure_delete = ON")
            # Another process (sqlite3 looking in) may hold the write lock briefly; wait a little, not forever.
            db.execute("PRAGMA busy_timeout = 2000")
            return db, migrate(db)
        except BaseException:
            db.close()
            raise
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open SQLite storage {path}: {exc}") from None


def private_file(path: str) -> None:
    """Create the database file as 0600 before SQLite does (it would follow the umask, usually 0644), and
    take an existing file back to 0600; SQLite gives its -wal and -shm files the database file's mode."""
    if path == ":memory:" or path.startswith("file:"):
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE))
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name) and os.stat(name).st_mode & 0o777 != PRIVATE:
            os.chmod(name, PRIVATE)
