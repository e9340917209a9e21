"""PostgreSQL statements and steps for enrollments and the queue, each run inside the caller's transaction.

Rows have SQLite's column order, so they become records through sqlite_queries' row readers; checks raise the
same errors, in the same order, as the other backends.
"""

from __future__ import annotations

from typing import Any

import psycopg

from .interface import EnrollmentState, NewCommand
from .postgres_schema import PENDING_SQL
from .rules import already_queued, checked_out_devices, secret_until, unknown_devices
from .sqlite_queries import DEVICE_COLUMNS

DEVICE_SELECT = f"SELECT {DEVICE_COLUMNS} FROM devices"
DEVICE_BY_ID = f"{DEVICE_SELECT} WHERE device_id = %s"
AUTHENTICATE = f"""INSERT INTO devices AS d (device_id, state, topic, facts, cert_sha256, authenticated_at,
        last_checkin_at, last_seen_at, user_id) VALUES (%s, 'authenticated', %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, topic = excluded.topic,
        facts = excluded.facts, cert_sha256 = excluded.cert_sha256,
        authenticated_at = excluded.authenticated_at, last_checkin_at = excluded.last_checkin_at,
        last_seen_at = excluded.last_seen_at, user_id = coalesce(excluded.user_id, d.user_id)
    RETURNING {DEVICE_COLUMNS}"""
# SPEC 1: a TokenUpdate without UnlockToken does not invalidate the one we hold.
TOKEN_UPDATE = f"""UPDATE devices SET state = 'enrolled', push_token = %s, push_magic = %s,
        unlock_token = coalesce(%s, unlock_token), last_checkin_at = %s, last_seen_at = %s
    WHERE device_id = %s AND state <> 'unenrolled' RETURNING {DEVICE_COLUMNS}"""
# One statement, so no transaction: nothing is written for a device that does not exist (rowcount 0).
PUSH_UPSERT = """INSERT INTO pushes (device_id, pushed_at, outcome, reason, token_invalid)
    SELECT d.device_id, %s, %s, %s, %s FROM devices AS d WHERE d.device_id = %s
    ON CONFLICT (device_id) DO UPDATE SET pushed_at = excluded.pushed_at,
    outcome = excluded.outcome, reason = excluded.reason, token_invalid = excluded.token_invalid"""
# A push to thousands of devices: every target in one read, every outcome in one write (push_batch.py).
PUSH_TARGETS = """SELECT d.device_id, d.state, d.push_token, d.push_magic, d.topic, p.pushed_at, p.outcome,
    p.reason, p.token_invalid FROM devices AS d LEFT JOIN pushes AS p USING (device_id)
    WHERE d.device_id = ANY (%s::text[])"""
PUSHES_UPSERT = """INSERT INTO pushes (device_id, pushed_at, outcome, reason, token_invalid)
    SELECT d.device_id, t.at, t.outcome, t.reason, t.invalid
    FROM unnest(%s::text[], %s::float8[], %s::text[], %s::text[], %s::bool[]) AS t (id, at, outcome, reason, invalid)
    JOIN devices AS d ON d.device_id = t.id
    ON CONFLICT (device_id) DO UPDATE SET pushed_at = excluded.pushed_at,
    outcome = excluded.outcome, reason = excluded.reason, token_invalid = excluded.token_invalid"""
PUSH_SELECT = "SELECT device_id, pushed_at, outcome, reason, token_invalid FROM pushes WHERE device_id = %s"
COMMAND_SELECT = """SELECT c.device_id, c.command_uuid, c.request_type, p.data, c.priority, c.status,
    c.timeout, c.queued_at, c.sent_at, c.result_at, c.result, c.not_now_count, c.seq
    FROM commands AS c JOIN payloads AS p USING (payload_id)"""
QUEUE_ORDER = "ORDER BY c.priority DESC, c.queued_at, c.seq"
EXPIRE_SENT = """UPDATE commands SET status = 'TimedOut', result_at = %s
    WHERE status = 'Sent' AND timeout IS NOT NULL AND sent_at + timeout <= %s"""
# Retention, oldest results first through the commands_finished index; the bodies that may now be unused.
PURGE_FINISHED = """DELETE FROM commands WHERE seq IN (SELECT seq FROM commands
    WHERE status IN ('Acknowledged', 'Error', 'CommandFormatError', 'TimedOut') AND result_at < %s
    ORDER BY result_at LIMIT %s) RETURNING payload_id"""
# A whole batch in one statement each: the bodies, then the commands (ON CONFLICT names the duplicates).
_NEW_PAYLOAD_IDS = "SELECT nextval(pg_get_serial_sequence('payloads', 'payload_id')) FROM generate_series(1, %s)"
_INSERT_PAYLOADS = "INSERT INTO payloads (payload_id, data) SELECT * FROM unnest(%s::bigint[], %s::bytea[])"
# One command per device per batch (plan_enqueue), so their order within the batch is no queue order.
_INSERT_COMMANDS = """INSERT INTO commands (device_id, command_uuid, request_type, payload_id, priority,
        status, timeout, queued_at, secret_until, redacted)
    SELECT d, u, r, p, %s, 'Queued', %s, %s, s, x FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[],
        %s::double precision[], %s::bytea[]) AS t (d, u, r, p, s, x)
    ON CONFLICT (device_id, command_uuid) DO NOTHING RETURNING device_id"""


def require_device(db: psycopg.Connection, device_id: str) -> None:
    if db.execute("SELECT 1 FROM devices WHERE device_id = %s", (device_id,)).fetchone() is None:
        raise unknown_devices([device_id])


def update_device(db: psycopg.Connection, device_id: str, assignments: str, args: tuple[Any, ...]) -> None:
    query = f"UPDATE devices SET {assignments} WHERE device_id = %s"
    if db.execute(query, (*args, device_id)).rowcount == 0:
        raise unknown_devices([device_id])


def updated_row(db: psycopg.Connection, device_id: str, assignments: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`update_device`, answering with the row as written."""
    query = f"UPDATE devices SET {assignments} WHERE device_id = %s RETURNING {DEVICE_COLUMNS}"
    row = db.execute(query, (*args, device_id)).fetchone()
    if row is None:
        raise unknown_devices([device_id])
    return row


def check_targets(db: psycopg.Connection, device_ids: list[str]) -> None:
    """Every target exists and has not checked out, its row share-locked until the batch commits (so no
    CheckOut slips between the check and the insert); same checks, same order as the in-memory backend."""
    rows = db.execute(
        "SELECT device_id, state FROM devices WHERE device_id = ANY (%s::text[]) FOR SHARE", (device_ids,)
    )
    states = dict(rows.fetchall())
    missing = [device_id for device_id in device_ids if device_id not in states]
    if missing:
        raise unknown_devices(missing)
    gone = [device_id for device_id in device_ids if states[device_id] == EnrollmentState.UNENROLLED]
    if gone:
        raise checked_out_devices(gone)


def insert_commands(
    db: psycopg.Connection, plan: tuple[tuple[str, NewCommand], ...], priority: int, timeout: float | None,
    now: float,
) -> None:
    """Queue a checked plan; each distinct body is stored once however many devices get it."""
    bodies = list(dict.fromkeys(new.payload for _, new in plan))
    ids = [row[0] for row in db.execute(_NEW_PAYLOAD_IDS, (len(bodies),))]
    db.execute(_INSERT_PAYLOADS, (ids, bodies))
    payload_ids = dict(zip(bodies, ids, strict=True))
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
    for device_id, new in plan:
        row = (device_id, new.command_uuid, new.request_type, payload_ids[new.payload], secret_until(new),
               new.redacted)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    inserted = {row[0] for row in db.execute(_INSERT_COMMANDS, (priority, timeout, now, *columns))}
    if len(inserted) < len(plan):  # the caller's transaction rolls the rest of the batch back
        raise already_queued((d, new.command_uuid) for d, new in plan if d not in inserted)


def clear_pending(db: psycopg.Connection, device_id: str) -> int:
    rows = db.execute(
        f"DELETE FROM commands WHERE device_id = %s AND status IN {PENDING_SQL} RETURNING payload_id",
        (device_id,),
    ).fetchall()
    if rows:
        collect_payloads(db, list({row[0] for row in rows}))
    return len(rows)


def collect_payloads(db: psycopg.Connection, payload_ids: list[int]) -> None:
    """Drop command bodies no command refers to any more (a shared profile stays while anyone holds it)."""
    db.execute(
        """DELETE FROM payloads AS p WHERE p.payload_id = ANY (%s::bigint[])
        AND NOT EXISTS (SELECT 1 FROM commands AS c WHERE c.payload_id = p.payload_id)""",
        (payload_ids,),
    )


# Secrets at rest: the due secret bodies, soonest first; the redacted body becomes a payload of its own.
SECRETS_DUE = "SELECT seq FROM commands WHERE secret_until <= %s ORDER BY secret_until LIMIT %s FOR UPDATE"
_FORGET = f"""WITH dropped AS (
        SELECT seq, payload_id, redacted, nextval(pg_get_serial_sequence('payloads', 'payload_id')) AS kept
        FROM commands WHERE seq = ANY (%(seqs)s::bigint[]) AND secret_until IS NOT NULL),
    bodies AS (INSERT INTO payloads (payload_id, data) SELECT kept, redacted FROM dropped)
    UPDATE commands AS c SET payload_id = d.kept, secret_until = NULL, redacted = NULL,
        status = CASE WHEN c.status IN {PENDING_SQL} THEN 'TimedOut' ELSE c.status END,
        result_at = CASE WHEN c.status IN {PENDING_SQL} THEN %(now)s ELSE c.result_at END,
        held = false
    FROM dropped AS d WHERE c.seq = d.seq RETURNING d.payload_id"""


def forget_secrets(db: psycopg.Connection, seqs: list[int], now: float) -> int:
    """Replace the secret bodies of these commands by their redacted ones (a pending one is given up,
    TimedOut); answers how many."""
    old = [row[0] for row in db.execute(_FORGET, {"seqs": seqs, "now": now}).fetchall()]
    if old:
        collect_payloads(db, old)
    return len(old)
