"""The SQL the SQLite backend runs and the row helpers its methods share (always inside their transaction).

Rows become the frozen records of `interface`; checks raise the same errors, in the same order, as memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from .interface import CommandStatus, Device, EnrollmentState, NewCommand, QueuedCommand
from .rules import already_queued, checked_out_devices, decode_facts, secret_until, unknown_devices
from .sqlite_schema import FINAL_SQL, PENDING_SQL

DEVICE_COLUMNS = """device_id, state, topic, facts, cert_sha256, authenticated_at, last_checkin_at,
    last_seen_at, push_token, push_magic, unlock_token, user_id, not_now_count"""
DEVICE_SELECT = f"SELECT {DEVICE_COLUMNS} FROM devices"
DEVICE_BY_ID = f"{DEVICE_SELECT} WHERE device_id = ?"
# Writes that change a device answer with the row they wrote (RETURNING): no second SELECT, no second decode.
AUTHENTICATE = f"""INSERT INTO devices (device_id, state, topic, facts, cert_sha256, authenticated_at,
        last_checkin_at, last_seen_at, user_id) VALUES (?, 'authenticated', ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, topic = excluded.topic,
        facts = excluded.facts, cert_sha256 = excluded.cert_sha256,
        authenticated_at = excluded.authenticated_at, last_checkin_at = excluded.last_checkin_at,
        last_seen_at = excluded.last_seen_at, user_id = coalesce(excluded.user_id, user_id)
    RETURNING {DEVICE_COLUMNS}"""
# SPEC 1: a TokenUpdate without UnlockToken does not invalidate the one we hold.
TOKEN_UPDATE = f"""UPDATE devices SET state = 'enrolled', push_token = ?, push_magic = ?,
        unlock_token = coalesce(?, unlock_token), last_checkin_at = ?, last_seen_at = ?
    WHERE device_id = ? AND state <> 'unenrolled' RETURNING {DEVICE_COLUMNS}"""
PUSH_INSERT = """INSERT OR REPLACE INTO pushes (device_id, pushed_at, outcome, reason, token_invalid)
    VALUES (?, ?, ?, ?, ?)"""
PUSH_SELECT = "SELECT device_id, pushed_at, outcome, reason, token_invalid FROM pushes WHERE device_id = ?"
COMMAND_SELECT = """SELECT c.device_id, c.command_uuid, c.request_type, p.data, c.priority, c.status,
    c.timeout, c.queued_at, c.sent_at, c.result_at, c.result, c.not_now_count, c.seq
    FROM commands AS c JOIN payloads AS p USING (payload_id)"""
QUEUE_ORDER = "ORDER BY c.priority DESC, c.queued_at, c.seq"
# "timeout IS NOT NULL" is the deadline index's own condition: SQLite uses a partial index only when told.
EXPIRE_SENT = """UPDATE commands SET status = 'TimedOut', result_at = ?
    WHERE status = 'Sent' AND timeout IS NOT NULL AND sent_at + timeout <= ?"""
# Oldest results first, through the commands_finished index; RETURNING the bodies that may now be unused.
PURGE_FINISHED = f"""DELETE FROM commands WHERE seq IN (SELECT seq FROM commands
    WHERE status IN {FINAL_SQL} AND result_at < ? ORDER BY result_at LIMIT ?) RETURNING payload_id"""
_IN_CHUNK = 500  # ids per "IN (...)" query, well under SQLite's bound-parameter limit
STATES = {state.value: state for state in EnrollmentState}  # faster than EnrollmentState(text)


class FactsMemo:
    """The decoded facts of the devices read or written last, each checked against the stored bytes.

    An enrollment reads its device several times in a few milliseconds (identity check, labels, delivery);
    decoding the facts plist each time was most of its storage cost. Facts are a function of their bytes, so a
    hit is always right; the bound keeps memory flat however large the fleet.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._entries: dict[str, tuple[bytes, Mapping[str, Any]]] = {}

    def decode(self, device_id: str, blob: bytes) -> Mapping[str, Any]:
        entry = self._entries.get(device_id)
        if entry is not None and entry[0] == blob:
            return entry[1]
        facts = decode_facts(blob)
        self.keep(device_id, blob, facts)
        return facts

    def keep(self, device_id: str, blob: bytes, facts: Mapping[str, Any]) -> None:
        entries = self._entries
        if entries.pop(device_id, None) is None and len(entries) >= self._size:
            del entries[next(iter(entries))]  # the oldest kept (dicts keep insertion order)
        entries[device_id] = (blob, facts)

    def __len__(self) -> int:
        return len(self._entries)


def device_from_row(row: tuple, memo: FactsMemo | None = None) -> Device:
    facts = decode_facts(row[3]) if memo is None else memo.decode(row[0], row[3])
    return Device(
        row[0], STATES[row[1]], row[2], facts, row[4], row[5], row[6], row[7], row[8], row[9], row[10],
        row[11], row[12],
    )  # fmt: skip


def command_from_row(row: tuple) -> QueuedCommand:
    return QueuedCommand(
        row[0], row[1], row[2], row[3], row[4], CommandStatus(row[5]), row[6], row[7], row[8], row[9],
        row[10], row[11],
    )  # fmt: skip


def load_device(db: sqlite3.Connection, device_id: str, memo: FactsMemo | None = None) -> Device:
    row = db.execute(DEVICE_BY_ID, (device_id,)).fetchone()
    if row is None:
        raise unknown_devices([device_id])
    return device_from_row(row, memo)


def require_device(db: sqlite3.Connection, device_id: str) -> None:
    if db.execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)).fetchone() is None:
        raise unknown_devices([device_id])


def update_device(db: sqlite3.Connection, device_id: str, assignments: str, args: tuple) -> None:
    if db.execute(f"UPDATE devices SET {assignments} WHERE device_id = ?", (*args, device_id)).rowcount == 0:
        raise unknown_devices([device_id])


def updated_device(
    db: sqlite3.Connection, device_id: str, assignments: str, args: tuple, memo: FactsMemo | None = None
) -> Device:
    """`update_device`, answering with the row as written."""
    query = f"UPDATE devices SET {assignments} WHERE device_id = ? RETURNING {DEVICE_COLUMNS}"
    rows = db.execute(query, (*args, device_id)).fetchall()  # stepped to the end: see sqlite_channel.record
    if not rows:
        raise unknown_devices([device_id])
    return device_from_row(rows[0], memo)


def find_command(db: sqlite3.Connection, device_id: str, command_uuid: str) -> tuple | None:
    return db.execute(
        f"{COMMAND_SELECT} WHERE c.device_id = ? AND c.command_uuid = ?", (device_id, command_uuid)
    ).fetchone()


def check_targets(db: sqlite3.Connection, device_ids: list[str]) -> None:
    """Every target exists and has not checked out; same checks, same order as the in-memory backend."""
    states: dict[str, str] = {}
    for start in range(0, len(device_ids), _IN_CHUNK):
        chunk = device_ids[start : start + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        states.update(db.execute(f"SELECT device_id, state FROM devices WHERE device_id IN ({marks})", chunk))
    missing = [device_id for device_id in device_ids if device_id not in states]
    if missing:
        raise unknown_devices(missing)
    gone = [device_id for device_id in device_ids if states[device_id] == EnrollmentState.UNENROLLED]
    if gone:
        raise checked_out_devices(gone)


def insert_commands(
    db: sqlite3.Connection, plan: tuple[tuple[str, NewCommand], ...], priority: int, timeout: float | None,
    now: float,
) -> None:
    """Queue a checked plan; each distinct body is stored once however many devices get it."""
    payload_ids: dict[bytes, int] = {}
    rows = []
    for device_id, new in plan:
        payload_id = payload_ids.get(new.payload)
        if payload_id is None:
            payload_id = db.execute("INSERT INTO payloads (data) VALUES (?)", (new.payload,)).lastrowid
            payload_ids[new.payload] = payload_id
        rows.append((device_id, new.command_uuid, new.request_type, payload_id, priority, timeout, now,
                     secret_until(new), new.redacted))
    try:
        db.executemany(
            """INSERT INTO commands (device_id, command_uuid, request_type, payload_id, priority, status,
                timeout, queued_at, secret_until, redacted) VALUES (?, ?, ?, ?, ?, 'Queued', ?, ?, ?, ?)""",
            rows,
        )
    except sqlite3.IntegrityError:
        # Targets were checked before, so only UNIQUE (device_id, command_uuid) can have failed.
        raise already_queued(queued_pairs(db, plan)) from None


def queued_pairs(db: sqlite3.Connection, plan: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    query = "SELECT 1 FROM commands WHERE device_id = ? AND command_uuid = ?"
    return [(d, new.command_uuid) for d, new in plan if db.execute(query, (d, new.command_uuid)).fetchone()]


def clear_pending(db: sqlite3.Connection, device_id: str) -> int:
    where = f"WHERE device_id = ? AND status IN {PENDING_SQL}"
    query = f"SELECT DISTINCT payload_id FROM commands {where}"
    payload_ids = [row[0] for row in db.execute(query, (device_id,))]
    if not payload_ids:
        return 0  # every pending command has a body, so no body means nothing pending
    cleared = db.execute(f"DELETE FROM commands {where}", (device_id,)).rowcount
    collect_payloads(db, payload_ids)
    return cleared


def collect_payloads(db: sqlite3.Connection, payload_ids: list[int]) -> None:
    """Drop command bodies no command refers to any more (a shared profile stays while anyone holds it)."""
    db.executemany(
        """DELETE FROM payloads WHERE payload_id = ?
        AND NOT EXISTS (SELECT 1 FROM commands WHERE payload_id = ?)""",
        [(payload_id, payload_id) for payload_id in payload_ids],
    )


# Secrets at rest: the due secret bodies, soonest first; the redacted body becomes a payload of its own.
SECRETS_DUE = "SELECT seq FROM commands WHERE secret_until <= ? ORDER BY secret_until LIMIT ?"
_SECRET_AT = "SELECT payload_id, redacted FROM commands WHERE seq = ? AND secret_until IS NOT NULL"
_GIVE_UP = f"""UPDATE commands SET status = 'TimedOut', result_at = ?, held = 0
    WHERE seq = ? AND status IN {PENDING_SQL}"""
_REPOINT = "UPDATE commands SET payload_id = ?, secret_until = NULL, redacted = NULL WHERE seq = ?"


def forget_secrets(db: sqlite3.Connection, seqs: Iterable[int], now: float) -> int:
    """Replace the secret bodies of these commands by their redacted ones (a pending one is given up,
    TimedOut); answers how many."""
    dropped = []
    for seq in seqs:
        row = db.execute(_SECRET_AT, (seq,)).fetchone()
        if row is None:
            continue
        db.execute(_GIVE_UP, (now, seq))
        redacted = db.execute("INSERT INTO payloads (data) VALUES (?)", (row[1],)).lastrowid
        db.execute(_REPOINT, (redacted, seq))
        dropped.append(row[0])
    collect_payloads(db, dropped)
    return len(dropped)
