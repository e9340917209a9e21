"""The PostgreSQL schema, versioned in a `mdmsim_schema` table: connecting and bringing a schema up to date.

The tables mirror SQLite's version 6 (sqlite_schema.py); a database written by a newer mdmsim is refused.
"""

from __future__ import annotations

import re

import psycopg

from .interface import SchemaVersionError, StorageError

PENDING_SQL = "('Queued', 'Sent', 'NotNow')"

# Ids are compared byte by byte (COLLATE "C"), as SQLite does: the directory's pages (ORDER BY device_id,
# `after`) must not depend on the server's locale.
_V1 = (
    """
    CREATE TABLE devices (
        device_id        text COLLATE "C" PRIMARY KEY,
        state            text NOT NULL CHECK (state IN ('authenticated', 'enrolled', 'unenrolled')),
        topic            text NOT NULL,
        facts            bytea NOT NULL,  -- binary plist of Authenticate's keys
        cert_sha256      text COLLATE "C" NOT NULL UNIQUE,
        authenticated_at double precision NOT NULL,
        last_checkin_at  double precision NOT NULL,
        last_seen_at     double precision NOT NULL,
        push_token       bytea,
        push_magic       text,
        unlock_token     bytea,
        user_id          text COLLATE "C",
        not_now_count    integer NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX devices_by_user ON devices (user_id, device_id) WHERE user_id IS NOT NULL",
    # One row per distinct command body: a profile sent to 10,000 devices is stored once.
    "CREATE TABLE payloads (payload_id bigserial PRIMARY KEY, data bytea NOT NULL)",
    """
    CREATE TABLE commands (
        seq           bigserial PRIMARY KEY,  -- insertion order: FIFO within a priority
        device_id     text COLLATE "C" NOT NULL REFERENCES devices (device_id),
        command_uuid  text COLLATE "C" NOT NULL,
        request_type  text NOT NULL,
        payload_id    bigint NOT NULL REFERENCES payloads (payload_id),
        priority      integer NOT NULL,
        status        text NOT NULL CHECK (status IN ('Queued', 'Sent', 'NotNow',
                          'Acknowledged', 'Error', 'CommandFormatError', 'TimedOut')),
        timeout       double precision,
        queued_at     double precision NOT NULL,
        sent_at       double precision,
        result_at     double precision,
        result        bytea,
        not_now_count integer NOT NULL DEFAULT 0,
        held          boolean NOT NULL DEFAULT false,  -- NotNow'd since the device's last Idle
        UNIQUE (device_id, command_uuid)
    )
    """,
    f"""
    CREATE INDEX commands_pending ON commands (device_id, priority DESC, queued_at, seq)
        WHERE status IN {PENDING_SQL}
    """,
    "CREATE INDEX commands_by_uuid ON commands (command_uuid)",
    "CREATE INDEX commands_by_payload ON commands (payload_id)",
    "CREATE INDEX commands_deadline ON commands ((sent_at + timeout)) WHERE status = 'Sent' AND timeout IS NOT NULL",
    "CREATE INDEX commands_held ON commands (device_id) WHERE held",
    """
    CREATE TABLE pushes (
        device_id     text COLLATE "C" PRIMARY KEY REFERENCES devices (device_id),
        pushed_at     double precision NOT NULL,
        outcome       text NOT NULL,
        reason        text,
        token_invalid boolean NOT NULL
    )
    """,
    # The admin model's JSON documents (admin/docstore_postgres.py), in the same database.
    """
    CREATE TABLE admin_documents (
        kind text COLLATE "C" NOT NULL,
        id   text COLLATE "C" NOT NULL,
        body text NOT NULL,
        PRIMARY KEY (kind, id)
    )
    """,
)

# Version 2: retention finds finished commands by result time through their own index (as SQLite's version 4).
_V2 = (
    "CREATE INDEX commands_finished ON commands (result_at)"
    " WHERE status IN ('Acknowledged', 'Error', 'CommandFormatError', 'TimedOut')",
)

# Version 3: user channels (Shared iPad, SPEC section 11), as SQLite's version 5.
_V3 = (
    """
    CREATE TABLE user_channels (
        device_id        text COLLATE "C" NOT NULL REFERENCES devices (device_id),
        user_id          text COLLATE "C" NOT NULL,
        user_short_name  text,
        push_token       bytea NOT NULL,
        push_magic       text NOT NULL,
        token_updated_at double precision NOT NULL,
        PRIMARY KEY (device_id, user_id)
    )
    """,
)

# Version 4: secrets at rest (as SQLite's version 6): a secret command's body is replaced by `redacted` once
# acknowledged, or at `secret_until` ('Infinity': only once acknowledged); both NULL otherwise and after.
_V4 = (
    "ALTER TABLE commands ADD COLUMN secret_until double precision",
    "ALTER TABLE commands ADD COLUMN redacted bytea",
    "CREATE INDEX commands_secret ON commands (secret_until) WHERE secret_until IS NOT NULL",
)

# MIGRATIONS[n] takes a schema from version n to n + 1; version 0 is an empty (new) schema.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Two processes opening a new database at once must not both create it: the migration holds this lock.
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('mdmsim schema ' || current_schema()))"
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('mdmsim schema ' || %s))"


def check_schema(schema: str | None) -> str | None:
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise StorageError(f"schema must be a lowercase SQL identifier, not {schema!r}")
    return schema


def migrate(db: psycopg.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION in one transaction; return the version found on opening."""
    with db.transaction():
        db.execute(_MIGRATION_LOCK)
        db.execute("CREATE TABLE IF NOT EXISTS mdmsim_schema (version integer NOT NULL)")
        row = db.execute("SELECT version FROM mdmsim_schema").fetchone()
        found = 0 if row is None else row[0]
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database schema version {found} is newer than this mdmsim understands ({SCHEMA_VERSION})"
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
        if row is None:
            db.execute("INSERT INTO mdmsim_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif found != SCHEMA_VERSION:
            db.execute("UPDATE mdmsim_schema SET version = %s", (SCHEMA_VERSION,))
    return found


def open_database(dsn: str, schema: str | None) -> tuple[psycopg.Connection, int]:
    """An autocommit connection (writes open their own transactions) with the schema up to date."""
    schema = check_schema(schema)
    try:
        db = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to PostgreSQL storage {redacted(dsn)}: {exc}") from None
    try:
        if schema is not None:
            with db.transaction():  # CREATE SCHEMA IF NOT EXISTS races with itself: take the schema's lock first
                db.execute(_SCHEMA_LOCK, (schema,))
                db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # a checked identifier: no injection
            db.execute(f"SET search_path TO {schema}")
        return db, migrate(db)
    except psycopg.Error as exc:
        db.close()
        raise StorageError(f"cannot open PostgreSQL storage {redacted(dsn)}: {exc}") from None
    except BaseException:
        db.close()
        raise


def redacted(dsn: str) -> str:
    """The connection string without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", re.sub(r"(password=)\S+", r"\1***", dsn))


def notice_channel(db: psycopg.Connection) -> str:
    """The LISTEN/NOTIFY channel of the connection's schema: processes sharing a schema hear each other
    (mdm_server/workers/notices.py), other schemas on the same server (tests, other deployments) do not."""
    row = db.execute("SELECT 'mdmsim_' || current_schema()").fetchone()
    return str(row[0]) if row and row[0] else "mdmsim_public"
