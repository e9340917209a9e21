"""The PostgreSQL statements of the command channel, the server's hot path, and the steps built on them.

The pick of a device's next command takes its row `FOR UPDATE SKIP LOCKED`: two server processes serving
the same device at once never send one command twice, and neither waits on the other's transaction.
"""

from __future__ import annotations

from typing import Any

import psycopg

from .interface import CommandStatus, QueuedCommand, ResultKind, ResultOutcome, StorageError
from .postgres_queries import forget_secrets
from .postgres_schema import PENDING_SQL
from .rules import result_kind, unknown_devices
from .sqlite_queries import command_from_row

# The identity check without the facts, what decides whether last_seen_at needs writing, and whether an
# Idle has NotNow'd commands to release.
VISIT = f"""SELECT d.state, d.cert_sha256, d.last_seen_at, p.pushed_at,
    EXISTS (SELECT 1 FROM commands AS c WHERE c.device_id = d.device_id AND c.status IN {PENDING_SQL}),
    EXISTS (SELECT 1 FROM commands AS c WHERE c.device_id = d.device_id AND c.held)
    FROM devices AS d LEFT JOIN pushes AS p USING (device_id) WHERE d.device_id = %s"""
SEEN = "UPDATE devices SET last_seen_at = %s WHERE device_id = %s"
RELEASE = "UPDATE commands SET held = false WHERE device_id = %s AND held"

COLUMNS = """c.device_id, c.command_uuid, c.request_type, p.data, c.priority, c.status, c.timeout,
    c.queued_at, c.sent_at, c.result_at, c.result, c.not_now_count"""
BY_SEQ = f"SELECT {COLUMNS} FROM commands AS c JOIN payloads AS p USING (payload_id) WHERE c.seq = %s"
FIND = "SELECT seq, status, secret_until FROM commands WHERE device_id = %s AND command_uuid = %s FOR UPDATE"
_OWNED = "SELECT 1 FROM commands WHERE command_uuid = %s LIMIT 1"
_RECORD = f"""UPDATE commands AS c SET status = %s, result = %s, result_at = %s,
    not_now_count = c.not_now_count + %s, held = %s FROM payloads AS p
    WHERE c.seq = %s AND p.payload_id = c.payload_id RETURNING {COLUMNS}"""
_COUNT_NOT_NOW = "UPDATE devices SET not_now_count = not_now_count + 1 WHERE device_id = %s"
_SEND = f"""UPDATE commands AS c SET status = 'Sent', sent_at = %s, held = false FROM payloads AS p
    WHERE c.seq = %s AND p.payload_id = c.payload_id RETURNING {COLUMNS}"""

# Every overdue Sent command of the device is marked TimedOut, and its next command (pending, not overdue,
# in queue order) is picked, in one statement. All parts read one snapshot, so the pick leaves out the
# overdue rows itself; the device's existence and its held commands come back on the same row.
_OVERDUE = """UPDATE commands SET status = 'TimedOut', result_at = %(now)s
        WHERE device_id = %(device)s AND status = 'Sent' AND timeout IS NOT NULL AND sent_at + timeout <= %(now)s"""
_PICK = f"""SELECT seq FROM commands WHERE device_id = %(device)s AND status IN {PENDING_SQL}
        AND (status <> 'Sent' OR timeout IS NULL OR sent_at + timeout > %(now)s){{where}}
        ORDER BY priority DESC, queued_at, seq LIMIT 1"""
_FLAGS = """EXISTS (SELECT 1 FROM devices WHERE device_id = %(device)s),
    EXISTS (SELECT 1 FROM commands WHERE device_id = %(device)s AND held)"""
# The command channel's turn: the pick is sent at once (Sent, no longer held) and returned.
SEND_NEXT = f"""WITH expired AS ({_OVERDUE}),
    sent AS (UPDATE commands AS c SET status = 'Sent', sent_at = %(now)s, held = false FROM payloads AS p
        WHERE c.seq = ({_PICK.format(where=" AND NOT held")} FOR UPDATE SKIP LOCKED)
            AND p.payload_id = c.payload_id RETURNING {COLUMNS})
    SELECT {_FLAGS}, sent.* FROM (SELECT 1) AS one LEFT JOIN sent ON true"""
# The tools' step: the pick (passing over `skip`) is only read.
PEEK_NEXT = f"""WITH expired AS ({_OVERDUE}),
    picked AS (SELECT {COLUMNS} FROM commands AS c JOIN payloads AS p USING (payload_id)
        WHERE c.seq = ({_PICK.format(where=" AND command_uuid <> ALL (%(skip)s::text[])")}))
    SELECT {_FLAGS}, picked.* FROM (SELECT 1) AS one LEFT JOIN picked ON true"""


def record(
    db: psycopg.Connection, device_id: str, uuid: str, status: CommandStatus, result: bytes | None, now: float
) -> ResultOutcome:
    """`record_result` inside the caller's transaction; the command's row stays locked until it ends."""
    found = db.execute(FIND, (device_id, uuid)).fetchone()
    if found is None:
        owned = db.execute(_OWNED, (uuid,)).fetchone()
        return ResultOutcome(ResultKind.OTHER_DEVICE if owned else ResultKind.UNKNOWN_COMMAND, None)
    seq, previous = found[0], CommandStatus(found[1])
    kind = result_kind(previous, status)
    if kind is not ResultKind.RECORDED:
        return ResultOutcome(kind, command_at(db, seq), previous)
    not_now = status is CommandStatus.NOT_NOW  # counted, and held until the device's next Idle
    row = db.execute(_RECORD, (status.value, result, now, int(not_now), not_now, seq)).fetchone()
    if not_now:
        db.execute(_COUNT_NOT_NOW, (device_id,))
    if status is CommandStatus.ACKNOWLEDGED and found[2] is not None:  # secrets at rest: the body goes now
        forget_secrets(db, [seq], now)
        return ResultOutcome(kind, command_at(db, seq), previous)
    return ResultOutcome(kind, command_from_row(_row(row)), previous)


def send_next(db: psycopg.Connection, device_id: str, now: float) -> tuple[QueuedCommand | None, bool]:
    """The device's next command, Sent (None: nothing to send), and whether held commands wait."""
    row = _row(db.execute(SEND_NEXT, {"device": device_id, "now": now}).fetchone())
    return _picked(row, device_id), row[1]


def peek_next(db: psycopg.Connection, device_id: str, skipped: frozenset[str], now: float) -> QueuedCommand | None:
    row = _row(db.execute(PEEK_NEXT, {"device": device_id, "now": now, "skip": sorted(skipped)}).fetchone())
    return _picked(row, device_id)


def _picked(row: tuple[Any, ...], device_id: str) -> QueuedCommand | None:
    if not row[0]:
        raise unknown_devices([device_id])
    return None if row[2] is None else command_from_row(row[2:])


def send(db: psycopg.Connection, seq: int, now: float) -> QueuedCommand:
    return command_from_row(_row(db.execute(_SEND, (now, seq)).fetchone()))


def command_at(db: psycopg.Connection, seq: int) -> QueuedCommand:
    return command_from_row(_row(db.execute(BY_SEQ, (seq,)).fetchone()))


def _row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:  # the statements above always answer a row; none means the row vanished under us
        raise StorageError("PostgreSQL storage answered no row for a command its transaction holds")
    return row
