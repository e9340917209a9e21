"""The SQLite statements of the command channel, the server's hot path: few statements, constant texts.

sqlite3 caches prepared statements by their text, so every text here is built once, at import.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import NamedTuple

from .interface import CommandStatus, QueuedCommand, ResultKind, ResultOutcome
from .rules import result_kind, unknown_devices
from .sqlite_queries import command_from_row, forget_secrets
from .sqlite_schema import PENDING_SQL

# The identity check without the facts, what decides whether last_seen_at needs writing, and whether an
# Idle has NotNow'd commands to release.
VISIT = f"""SELECT d.state, d.cert_sha256, d.last_seen_at, p.pushed_at,
    EXISTS (SELECT 1 FROM commands AS c WHERE c.device_id = d.device_id AND c.status IN {PENDING_SQL}),
    EXISTS (SELECT 1 FROM commands AS c WHERE c.device_id = d.device_id AND c.held = 1)
    FROM devices AS d LEFT JOIN pushes AS p USING (device_id) WHERE d.device_id = ?"""
SEEN = "UPDATE devices SET last_seen_at = ? WHERE device_id = ?"
RELEASE = "UPDATE commands SET held = 0 WHERE device_id = ? AND held = 1"

_COLUMNS = """device_id, command_uuid, request_type,
    (SELECT data FROM payloads WHERE payloads.payload_id = commands.payload_id), priority, status, timeout,
    queued_at, sent_at, result_at, result, not_now_count"""
_BY_SEQ = f"SELECT {_COLUMNS} FROM commands WHERE seq = ?"
FIND = "SELECT seq, status, secret_until FROM commands WHERE device_id = ? AND command_uuid = ?"
_OWNED = "SELECT 1 FROM commands WHERE command_uuid = ?"
_RECORD = f"""UPDATE commands SET status = ?, result = ?, result_at = ?, not_now_count = not_now_count + ?,
    held = ? WHERE seq = ? RETURNING {_COLUMNS}"""
_COUNT_NOT_NOW = "UPDATE devices SET not_now_count = not_now_count + 1 WHERE device_id = ?"
_SEND = f"UPDATE commands SET status = 'Sent', sent_at = ?, held = 0 WHERE seq = ? RETURNING {_COLUMNS}"
_EXPIRE = "UPDATE commands SET status = 'TimedOut', result_at = ? WHERE seq = ?"
# One statement answers "what next?": every overdue Sent command (kind 1, to expire), the first `?3`
# pending commands that are not overdue, in queue order (kind 0), and a row of kind 2 if the device is
# unknown. The IN term lets both halves walk the pending index, never the device's finished commands.
# The command channel's version passes over held commands and says whether any wait (a row of kind 3).
_NEXT = """SELECT seq, command_uuid, 1, 0, 0 FROM commands
        WHERE device_id = ?1 AND status IN {pending} AND status = 'Sent' AND sent_at + timeout <= ?2
    UNION ALL SELECT * FROM (
        SELECT seq, command_uuid, 0, -priority, queued_at FROM commands
        WHERE device_id = ?1 AND status IN {pending}
            AND (status <> 'Sent' OR timeout IS NULL OR sent_at + timeout > ?2){held}
        ORDER BY priority DESC, queued_at, seq LIMIT ?3){deferred}
    UNION ALL SELECT NULL, NULL, 2, 0, 0 WHERE NOT EXISTS (SELECT 1 FROM devices WHERE device_id = ?1)"""
_NEXT_IN_QUEUE = _NEXT.format(pending=PENDING_SQL, held="", deferred="")
_NEXT_FOR_CHANNEL = _NEXT.format(
    pending=PENDING_SQL, held=" AND held = 0",
    deferred="\n    UNION ALL SELECT NULL, NULL, 3, 0, 0 WHERE EXISTS "
    "(SELECT 1 FROM commands WHERE device_id = ?1 AND held = 1)",
)
_OVERDUE, _UNKNOWN, _DEFERRED = 1, 2, 3


def record(
    db: sqlite3.Connection, device_id: str, uuid: str, status: CommandStatus, result: bytes | None, now: float,
    on_forget: Callable[[], None] | None = None,
) -> ResultOutcome:
    """`record_result` inside the caller's transaction; `on_forget` is called when a secret body was replaced."""
    found = db.execute(FIND, (device_id, uuid)).fetchone()
    if found is None:
        owned = db.execute(_OWNED, (uuid,)).fetchone()
        return ResultOutcome(ResultKind.OTHER_DEVICE if owned else ResultKind.UNKNOWN_COMMAND, None)
    seq, previous = found[0], CommandStatus(found[1])
    kind = result_kind(previous, status)
    if kind is not ResultKind.RECORDED:
        return ResultOutcome(kind, command_at(db, seq), previous)
    not_now = int(status is CommandStatus.NOT_NOW)  # counted, and held until the device's next Idle
    # fetchall: a RETURNING statement only finishes (and its change only counts) once stepped to the end.
    rows = db.execute(_RECORD, (status.value, result, now, not_now, not_now, seq)).fetchall()
    if not_now:
        db.execute(_COUNT_NOT_NOW, (device_id,))
    if status is CommandStatus.ACKNOWLEDGED and found[2] is not None:  # secrets at rest: the body goes now
        forget_secrets(db, [seq], now)
        if on_forget is not None:
            on_forget()
        return ResultOutcome(kind, command_at(db, seq), previous)
    return ResultOutcome(kind, command_from_row(rows[0]), previous)


class Candidates(NamedTuple):
    overdue: list[int]  # the device's Sent commands past their deadline (to mark TimedOut first)
    seq: int | None  # its next command once those are TimedOut
    deferred: bool  # held commands wait for the next Idle (the command channel's pick only)


def next_seq(
    db: sqlite3.Connection, device_id: str, skipped: frozenset[str], now: float, *, channel: bool = False
) -> Candidates:
    """`candidates`, after marking the overdue Sent commands TimedOut."""
    found = candidates(db, device_id, skipped, now, channel=channel)
    for overdue_seq in found.overdue:
        db.execute(_EXPIRE, (now, overdue_seq))
    return found


def candidates(
    db: sqlite3.Connection, device_id: str, skipped: frozenset[str], now: float, *, channel: bool = False
) -> Candidates:
    """Read only: the device's overdue Sent commands and its next command not in `skipped`; for the command
    `channel`, not held either (NotNow'd since the device's last Idle)."""
    query = _NEXT_FOR_CHANNEL if channel else _NEXT_IN_QUEUE
    rows = db.execute(query, (device_id, now, len(skipped) + 1)).fetchall()
    overdue, waiting, deferred = [], [], False
    for row in rows:
        kind = row[2]
        if kind == _UNKNOWN:
            raise unknown_devices([device_id])
        if kind == _OVERDUE:
            overdue.append(row[0])
        elif kind == _DEFERRED:
            deferred = True
        elif row[1] not in skipped:
            waiting.append(row)
    # A compound SELECT promises no order, so the queue order is applied here (to at most len(skip)+1 rows).
    seq = min(waiting, key=lambda row: (row[3], row[4], row[0]))[0] if waiting else None
    return Candidates(overdue, seq, deferred)


def send(db: sqlite3.Connection, seq: int, now: float) -> QueuedCommand:
    return command_from_row(db.execute(_SEND, (now, seq)).fetchall()[0])


def command_at(db: sqlite3.Connection, seq: int) -> QueuedCommand:
    return command_from_row(db.execute(_BY_SEQ, (seq,)).fetchone())


def pending_command_at(db: sqlite3.Connection, seq: int) -> QueuedCommand | None:
    """The command at `seq` if it is still pending; None if another connection removed or answered it since
    it was picked (outside a transaction, the pick and this read are two snapshots)."""
    row = db.execute(_BY_SEQ, (seq,)).fetchone()
    if row is None:
        return None
    command = command_from_row(row)
    return command if command.status.pending else None
