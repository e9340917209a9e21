"""SQLite storage: the default backend, one WAL-mode file in the data directory, one connection, one thread.

Durability: WAL with synchronous=NORMAL. A commit has been written to the WAL (the OS page cache) before
`COMMIT` returns, so an acknowledged write survives the server process dying, kill -9 included; only an OS
crash or power loss can lose the last commits, and never corrupts the file. That is the requirement (the
emulator's process may be killed; its machine's power is not our concern), and it avoids an fsync per
command result. `synchronous="FULL"` fsyncs the WAL on every commit for those who need power-loss safety.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .interface import (
    PENDING_STATUSES,
    CommandNotFoundError,
    CommandSource,
    CommandStateError,
    CommandStatus,
    Device,
    EnrollmentState,
    Exchange,
    IdentityChange,
    PushOutcome,
    PushRecord,
    QueuedCommand,
    Reported,
    ResultOutcome,
    StorageClosedError,
    StorageError,
    UserChannel,
    Visit,
)
from .rules import (
    IDENTITY_OWNERS,
    check_bytes,
    check_cert,
    check_flag,
    check_id,
    check_limit,
    check_now,
    check_optional_bytes,
    check_optional_id,
    check_priority,
    check_push,
    check_reported,
    check_skip,
    check_states,
    check_statuses,
    check_stop_if,
    check_timeout,
    check_user_channel,
    checked_out_devices,
    decoded_facts,
    encode_facts,
    judge_new_identity,
    merged_facts,
    plan_enqueue,
    reported_status,
    seen_is_current,
)
from .sqlite_channel import (
    FIND,
    RELEASE,
    SEEN,
    VISIT,
    candidates,
    command_at,
    next_seq,
    pending_command_at,
    record,
    send,
)
from .sqlite_errors import storage_error
from .sqlite_queries import (
    AUTHENTICATE,
    COMMAND_SELECT,
    DEVICE_BY_ID,
    DEVICE_SELECT,
    EXPIRE_SENT,
    PURGE_FINISHED,
    PUSH_INSERT,
    PUSH_SELECT,
    QUEUE_ORDER,
    SECRETS_DUE,
    STATES,
    TOKEN_UPDATE,
    FactsMemo,
    check_targets,
    clear_pending,
    collect_payloads,
    command_from_row,
    device_from_row,
    find_command,
    forget_secrets,
    insert_commands,
    load_device,
    require_device,
    update_device,
    updated_device,
)
from .sqlite_schema import open_database
from .user_channel_sql import UserChannelSQL

log = logging.getLogger(__name__)
SCRUB_INTERVAL = 1.0  # seconds between two WAL truncations after secret bodies were replaced
_USER_CHANNELS = UserChannelSQL("?")

_IDENTITY_OWNERS = IDENTITY_OWNERS.format(p="?")

class SQLiteStorage:
    """`Storage` in a SQLite file (or ":memory:"). Use it from one thread only: the reactor's."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL") -> None:
        self.path = os.fspath(path)
        self._db: sqlite3.Connection | None = None
        self._db, self.schema_version_found = open_database(self.path, synchronous)
        self._facts = FactsMemo()
        # Secrets at rest: a replaced secret body still sits in the WAL frames that wrote it until a TRUNCATE
        # checkpoint empties the WAL. That costs an fsync (~20 ms), so at most one per SCRUB_INTERVAL of the
        # caller's clock; one due sooner waits for the next write or device visit after it (or close).
        self._forgot = False  # this transaction replaced a secret body
        self._scrub_due = False
        self._scrubbed_at = -math.inf

    # Enrollments.

    def authenticate(
        self, device_id: str, facts: Mapping[str, Any], topic: str, cert_sha256: str, *, now: float,
        user_id: str | None = None, new_identity: IdentityChange = IdentityChange.ANY,
        replaced: Callable[[str | None], None] | None = None,
    ) -> Device:
        device_id, topic = check_id(device_id), check_id(topic, "topic")
        blob, cert, now = encode_facts(facts), check_cert(cert_sha256), check_now(now)
        user_id = check_optional_id(user_id, "user_id")
        with self._write() as db:
            owners = db.execute(_IDENTITY_OWNERS, (cert, device_id)).fetchall()
            judge_new_identity(owners, device_id, cert, user_id, new_identity, replaced)
            # fetchall: a RETURNING statement only finishes (and its change only counts) once stepped to the end.
            row = db.execute(AUTHENTICATE, (device_id, topic, blob, cert, now, now, now, user_id)).fetchall()[0]
            clear_pending(db, device_id)
        self._facts.keep(device_id, blob, decoded_facts(facts, blob))
        return device_from_row(row, self._facts)

    def token_update(self, device_id: str, push_token: bytes, push_magic: str, unlock_token: bytes | None = None,
                     *, now: float) -> Device:
        device_id, token = check_id(device_id), check_bytes(push_token, "push_token")
        magic, unlock = check_id(push_magic, "push_magic"), check_optional_bytes(unlock_token, "unlock_token")
        now = check_now(now)
        with self._write() as db:
            rows = db.execute(TOKEN_UPDATE, (token, magic, unlock, now, now, device_id)).fetchall()
            if not rows:
                require_device(db, device_id)
                raise checked_out_devices([device_id])
            db.execute("UPDATE pushes SET token_invalid = 0 WHERE device_id = ?", (device_id,))
        return device_from_row(rows[0], self._facts)

    def check_out(self, device_id: str, *, now: float) -> Device:
        device_id, now = check_id(device_id), check_now(now)
        with self._write() as db:
            device = updated_device(
                db, device_id, "state = 'unenrolled', last_checkin_at = ?, last_seen_at = ?", (now, now),
                self._facts,
            )
            clear_pending(db, device_id)
            _USER_CHANNELS.drop(db, device_id)  # a new enrollment, or none: the users' tokens are gone
        return device

    def merge_facts(self, device_id: str, updates: Mapping[str, Any]) -> Device:
        device_id = check_id(device_id)
        with self._write() as db:
            blob = merged_facts(load_device(db, device_id, self._facts).facts, updates)
            return updated_device(db, device_id, "facts = ?", (blob,), self._facts)

    def bind_user(self, device_id: str, user_id: str | None) -> Device:
        device_id, user_id = check_id(device_id), check_optional_id(user_id, "user_id")
        with self._write() as db:
            return updated_device(db, device_id, "user_id = ?", (user_id,), self._facts)

    def touch(self, device_id: str, *, now: float) -> None:
        device_id, now = check_id(device_id), check_now(now)
        with self._write() as db:
            update_device(db, device_id, "last_seen_at = ?", (now,))

    def check_in_command_channel(
        self, device_id: str, cert_sha256: str, *, now: float, idle: bool = False
    ) -> Visit | None:
        device_id, cert, now, idle = check_id(device_id), check_cert(cert_sha256), check_now(now), check_flag(idle)
        db = self._connection()
        try:  # no explicit transaction: one autocommit read, and autocommit writes only when something changes
            row = db.execute(VISIT, (device_id,)).fetchone()
            if row is None:
                return None
            visit = Visit(device_id, STATES[row[0]], row[1], bool(row[4]))
            if self._scrub_due:
                self._scrub(db, now)
            if visit.admits(cert):
                if not seen_is_current(row[2], row[3], now):
                    db.execute(SEEN, (now, device_id))
                if idle and row[5]:  # a new session: what was NotNow'd in the last one is offered again
                    db.execute(RELEASE, (device_id,))
        except sqlite3.Error as exc:
            raise self._failure(exc) from None
        return visit

    # User channels.

    def user_token_update(
        self, device_id: str, user_id: str, user_short_name: str | None, push_token: bytes, push_magic: str,
        *, now: float,
    ) -> UserChannel:
        channel = check_user_channel(device_id, user_id, user_short_name, push_token, push_magic, now)
        with self._write() as db:
            _USER_CHANNELS.token_update(db, channel)
        return channel

    def get_user_channel(self, device_id: str, user_id: str) -> UserChannel | None:
        device_id, user_id = check_id(device_id), check_id(user_id, "user_id")
        with self._read() as db:
            return _USER_CHANNELS.get(db, device_id, user_id)

    def list_user_channels(self, device_id: str) -> tuple[UserChannel, ...]:
        device_id = check_id(device_id)
        with self._read() as db:
            return _USER_CHANNELS.list(db, device_id)

    def get_device(self, device_id: str) -> Device | None:
        device_id = check_id(device_id)
        with self._read() as db:
            row = db.execute(DEVICE_BY_ID, (device_id,)).fetchone()
        return None if row is None else device_from_row(row, self._facts)

    def device_for_certificate(self, cert_sha256: str) -> Device | None:
        cert = check_cert(cert_sha256)
        with self._read() as db:
            row = db.execute(f"{DEVICE_SELECT} WHERE cert_sha256 = ?", (cert,)).fetchone()
        return None if row is None else device_from_row(row)

    def list_devices(
        self,
        *,
        states: Iterable[EnrollmentState] | None = None,
        user_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[Device, ...]:
        wanted, user_id = check_states(states), check_optional_id(user_id, "user_id")
        after, limit = check_optional_id(after, "after"), check_limit(limit)
        where, args = ["1"], []
        if wanted is not None:
            where.append(f"state IN ({', '.join('?' * len(wanted))})")
            args.extend(sorted(wanted))
        for column, op, value in (("user_id", "=", user_id), ("device_id", ">", after)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        query = f"{DEVICE_SELECT} WHERE {' AND '.join(where)} ORDER BY device_id LIMIT ?"
        with self._read() as db:
            return tuple(device_from_row(row) for row in db.execute(query, (*args, limit)))

    def device_counts(self) -> dict[EnrollmentState, int]:
        counts = dict.fromkeys(EnrollmentState, 0)
        with self._read() as db:
            for state, count in db.execute("SELECT state, count(*) FROM devices GROUP BY state"):
                counts[EnrollmentState(state)] = count
        return counts

    # The command queue.

    def enqueue(
        self,
        device_ids: Iterable[str],
        command: CommandSource,
        *,
        now: float,
        priority: int = 0,
        timeout: float | None = None,
    ) -> dict[str, str]:
        now, priority, timeout = check_now(now), check_priority(priority), check_timeout(timeout)
        plan = plan_enqueue(device_ids, command)
        if not plan:
            return {}
        with self._write() as db:
            check_targets(db, [device_id for device_id, _ in plan])
            insert_commands(db, plan, priority, timeout, now)
        return {device_id: new.command_uuid for device_id, new in plan}

    def next_command(self, device_id: str, *, skip: Iterable[str] = (), now: float) -> QueuedCommand | None:
        device_id, skipped, now = check_id(device_id), check_skip(skip), check_now(now)
        db = self._connection()
        try:  # a read needs no transaction (two statements fewer); expiring overdue commands does
            overdue, seq, _ = candidates(db, device_id, skipped, now)
            if not overdue:
                found = None if seq is None else pending_command_at(db, seq)
                if seq is None or found is not None:
                    return found
                # changed by another connection between the two reads: pick again inside a transaction
        except sqlite3.Error as exc:
            raise self._failure(exc) from None
        with self._write() as db:
            seq = next_seq(db, device_id, skipped, now).seq
            return None if seq is None else command_at(db, seq)

    def report_and_fetch(
        self,
        device_id: str,
        reported: Reported | None = None,
        *,
        now: float,
        stop_if: Callable[[ResultOutcome], bool] | None = None,
    ) -> Exchange:
        device_id, reported, stop_if = check_id(device_id), check_reported(reported), check_stop_if(stop_if)
        now = check_now(now)
        with self._write(now) as db:  # one transaction: the result and the next command's Sent, or neither
            outcome = None
            if reported is not None:
                outcome = record(db, device_id, reported.command_uuid, reported.status, reported.result, now,
                                 self._forgot_secret)
                if stop_if is not None and stop_if(outcome):
                    if outcome.command is None:
                        require_device(db, device_id)  # no command of its own: is the device known at all?
                    return Exchange(outcome, None, None)
            found = next_seq(db, device_id, frozenset(), now, channel=True)
            return Exchange(outcome, None if found.seq is None else send(db, found.seq, now), found.deferred)

    def mark_sent(self, device_id: str, command_uuid: str, *, now: float) -> QueuedCommand:
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        now = check_now(now)
        with self._write() as db:
            found = db.execute(FIND, (device_id, command_uuid)).fetchone()
            if found is None:
                require_device(db, device_id)
                raise CommandNotFoundError(f"command {command_uuid} is not queued for device {device_id}")
            if CommandStatus(found[1]) not in PENDING_STATUSES:
                raise CommandStateError(f"command {command_uuid} is already {found[1]}")
            return send(db, found[0], now)

    def record_result(
        self,
        device_id: str,
        command_uuid: str,
        status: CommandStatus | str,
        result: bytes | None,
        *,
        now: float,
    ) -> ResultOutcome:
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        status, result, now = reported_status(status), check_optional_bytes(result, "result"), check_now(now)
        with self._write(now) as db:
            return record(db, device_id, command_uuid, status, result, now, self._forgot_secret)

    def get_command(self, device_id: str, command_uuid: str) -> QueuedCommand | None:
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        with self._read() as db:
            row = find_command(db, device_id, command_uuid)
        return None if row is None else command_from_row(row)

    def list_commands(
        self, device_id: str, statuses: Iterable[CommandStatus] | None = None
    ) -> tuple[QueuedCommand, ...]:
        device_id, wanted = check_id(device_id), check_statuses(statuses)
        with self._read() as db:
            rows = db.execute(
                f"{COMMAND_SELECT} WHERE c.device_id = ? {QUEUE_ORDER}", (device_id,)
            ).fetchall()
        commands = (command_from_row(row) for row in rows)
        return tuple(c for c in commands if wanted is None or c.status in wanted)

    def delete_command(self, device_id: str, command_uuid: str) -> bool:
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        with self._write() as db:
            row = db.execute(
                "SELECT seq, payload_id FROM commands WHERE device_id = ? AND command_uuid = ?",
                (device_id, command_uuid),
            ).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM commands WHERE seq = ?", (row[0],))
            collect_payloads(db, [row[1]])
        return True

    def clear_queue(self, device_id: str) -> int:
        device_id = check_id(device_id)
        with self._write() as db:
            return clear_pending(db, device_id)

    def expire_commands(self, *, now: float) -> int:
        now = check_now(now)
        with self._write() as db:
            return db.execute(EXPIRE_SENT, (now, now)).rowcount

    def purge_finished(self, *, before: float, limit: int = 500) -> int:
        before, limit = check_now(before), check_limit(limit)
        with self._write() as db:
            payload_ids = [row[0] for row in db.execute(PURGE_FINISHED, (before, limit)).fetchall()]
            collect_payloads(db, sorted(set(payload_ids)))
        return len(payload_ids)

    def forget_secrets(self, *, now: float, limit: int = 500) -> int:
        now, limit = check_now(now), check_limit(limit)
        with self._write(now) as db:
            seqs = [row[0] for row in db.execute(SECRETS_DUE, (now, limit)).fetchall()]
            forgotten = forget_secrets(db, seqs, now)
            if forgotten:
                self._forgot_secret()
        return forgotten

    def command_counts(self, device_id: str | None = None) -> dict[CommandStatus, int]:
        device_id = check_optional_id(device_id, "device_id")
        where, args = ("", ()) if device_id is None else ("WHERE device_id = ?", (device_id,))
        counts = dict.fromkeys(CommandStatus, 0)
        with self._read() as db:
            for status, count in db.execute(
                f"SELECT status, count(*) FROM commands {where} GROUP BY 1", args
            ):
                counts[CommandStatus(status)] = count
        return counts

    # Push outcomes.

    def record_push(
        self,
        device_id: str,
        outcome: PushOutcome,
        *,
        now: float,
        reason: str | None = None,
        token_invalid: bool = False,
    ) -> PushRecord:
        record = check_push(device_id, outcome, now, reason, token_invalid)
        with self._write() as db:
            require_device(db, record.device_id)
            db.execute(PUSH_INSERT, (record.device_id, record.pushed_at, record.outcome.value, record.reason,
                                     record.token_invalid))
        return record

    def get_push(self, device_id: str) -> PushRecord | None:
        device_id = check_id(device_id)
        with self._read() as db:
            row = db.execute(PUSH_SELECT, (device_id,)).fetchone()
        return None if row is None else PushRecord(row[0], row[1], PushOutcome(row[2]), row[3], bool(row[4]))

    def close(self) -> None:
        if self._db is not None:
            if self._scrub_due:
                self._checkpoint(self._db, -math.inf)
            db, self._db = self._db, None
            try:
                db.close()
            except sqlite3.Error as exc:
                raise StorageError(f"closing SQLite storage {self.path} failed: {exc}") from None

    # Transactions: every sqlite3 error leaves as a StorageError, never as itself.

    @contextmanager
    def _write(self, now: float | None = None) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                self._forgot = False
                # A failed COMMIT (disk full) can leave the transaction open: without this ROLLBACK every
                # later BEGIN would fail, long after the space came back.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._failure(exc) from None
        if self._forgot:
            self._forgot, self._scrub_due = False, True
        if self._scrub_due and now is not None:
            self._scrub(db, now)

    def _forgot_secret(self) -> None:
        self._forgot = True

    def _scrub(self, db: sqlite3.Connection, now: float) -> None:
        if now - self._scrubbed_at >= SCRUB_INTERVAL:
            self._checkpoint(db, now)

    def _checkpoint(self, db: sqlite3.Connection, now: float) -> None:
        """Copy the WAL into the file and empty it: secure_delete zeroed the replaced body in the pages, but the
        WAL's older frames still hold it. Another process reading the file can keep the WAL busy; then the frames
        go at a later checkpoint, and the log says so."""
        self._scrub_due, self._scrubbed_at = False, now
        try:
            busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            busy, reason = 1, str(exc)
        else:
            reason = "another connection is reading"
        if busy:
            self._scrub_due = True  # tried again after the next interval
            log.warning("SQLite storage %s: the WAL could not be emptied after a secret was replaced (%s); "
                        "trying again later", self.path, reason)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            yield db
        except sqlite3.Error as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: sqlite3.Error) -> StorageError:
        return storage_error(exc, self.path)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageClosedError(f"SQLite storage {self.path} is closed")
        return self._db
