"""PostgreSQL storage through psycopg 3: one database that several server processes share.

Synchronous like every backend (interface.py says why): each call is one to a few short indexed statements
on one connection, autocommit for single statements and one transaction where SQLite takes its write lock,
so a check-in costs a few local round trips, not a thread hop. psycopg prepares a statement on its fifth use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

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
    StorageFullError,
    UserChannel,
    Visit,
)
from .postgres_channel import FIND, RELEASE, SEEN, VISIT, peek_next, record, send, send_next
from .postgres_queries import (
    AUTHENTICATE,
    COMMAND_SELECT,
    DEVICE_BY_ID,
    DEVICE_SELECT,
    EXPIRE_SENT,
    PURGE_FINISHED,
    PUSH_SELECT,
    PUSH_TARGETS,
    PUSH_UPSERT,
    PUSHES_UPSERT,
    QUEUE_ORDER,
    SECRETS_DUE,
    TOKEN_UPDATE,
    check_targets,
    clear_pending,
    collect_payloads,
    forget_secrets,
    insert_commands,
    require_device,
    update_device,
    updated_row,
)
from .postgres_schema import PENDING_SQL, open_database, redacted
from .push_batch import PushTarget
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
    unknown_devices,
)
from .sqlite_queries import STATES, FactsMemo, command_from_row, device_from_row
from .user_channel_sql import UserChannelSQL

_USER_CHANNELS = UserChannelSQL("%s")
URL_SCHEMES = ("postgresql://", "postgres://")

log = logging.getLogger(__name__)
DISK_FULL = frozenset({"53100"})  # SQLSTATE disk_full: the server has no room for the write


_IDENTITY_OWNERS = IDENTITY_OWNERS.format(p="%s")

class PostgresStorage:
    """`Storage` in a PostgreSQL database (`dsn`: a postgresql:// URL or key=value string), in `schema` if
    given (created when missing), else the connection's search_path. Use it from the reactor's thread."""

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        self.dsn, self.schema = dsn, schema
        self._db: psycopg.Connection | None = None
        self._db, self.schema_version_found = open_database(dsn, schema)
        self._facts = FactsMemo()

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
            row = db.execute(AUTHENTICATE, (device_id, topic, blob, cert, now, now, now, user_id)).fetchone()
            clear_pending(db, device_id)
        self._facts.keep(device_id, blob, decoded_facts(facts, blob))
        return device_from_row(_one(row), self._facts)

    def token_update(self, device_id: str, push_token: bytes, push_magic: str, unlock_token: bytes | None = None,
                     *, now: float) -> Device:
        device_id, token = check_id(device_id), check_bytes(push_token, "push_token")
        magic, unlock = check_id(push_magic, "push_magic"), check_optional_bytes(unlock_token, "unlock_token")
        now = check_now(now)
        with self._write() as db:
            row = db.execute(TOKEN_UPDATE, (token, magic, unlock, now, now, device_id)).fetchone()
            if row is None:
                require_device(db, device_id)
                raise checked_out_devices([device_id])
            db.execute("UPDATE pushes SET token_invalid = false WHERE device_id = %s", (device_id,))
        return device_from_row(row, self._facts)

    def check_out(self, device_id: str, *, now: float) -> Device:
        device_id, now = check_id(device_id), check_now(now)
        with self._write() as db:
            row = updated_row(
                db, device_id, "state = 'unenrolled', last_checkin_at = %s, last_seen_at = %s", (now, now)
            )
            clear_pending(db, device_id)
            _USER_CHANNELS.drop(db, device_id)  # a new enrollment, or none: the users' tokens are gone
        return device_from_row(row, self._facts)

    def merge_facts(self, device_id: str, updates: Mapping[str, Any]) -> Device:
        device_id = check_id(device_id)
        with self._write() as db:
            row = db.execute(f"{DEVICE_BY_ID} FOR UPDATE", (device_id,)).fetchone()
            if row is None:
                raise unknown_devices([device_id])
            blob = merged_facts(device_from_row(row, self._facts).facts, updates)
            return device_from_row(updated_row(db, device_id, "facts = %s", (blob,)), self._facts)

    def bind_user(self, device_id: str, user_id: str | None) -> Device:
        device_id, user_id = check_id(device_id), check_optional_id(user_id, "user_id")
        with self._write() as db:
            return device_from_row(updated_row(db, device_id, "user_id = %s", (user_id,)), self._facts)

    def touch(self, device_id: str, *, now: float) -> None:
        device_id, now = check_id(device_id), check_now(now)
        with self._read() as db:  # one statement: autocommit
            update_device(db, device_id, "last_seen_at = %s", (now,))

    def check_in_command_channel(
        self, device_id: str, cert_sha256: str, *, now: float, idle: bool = False
    ) -> Visit | None:
        device_id, cert, now, idle = check_id(device_id), check_cert(cert_sha256), check_now(now), check_flag(idle)
        with self._read() as db:  # one autocommit read, and autocommit writes only when something changes
            row = db.execute(VISIT, (device_id,)).fetchone()
            if row is None:
                return None
            visit = Visit(device_id, STATES[row[0]], row[1], bool(row[4]))
            if visit.admits(cert):
                if not seen_is_current(row[2], row[3], now):
                    db.execute(SEEN, (now, device_id))
                if idle and row[5]:  # a new session: what was NotNow'd in the last one is offered again
                    db.execute(RELEASE, (device_id,))
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
            row = db.execute(f"{DEVICE_SELECT} WHERE cert_sha256 = %s", (cert,)).fetchone()
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
        where, args = ["true"], []
        if wanted is not None:
            where.append("state = ANY (%s::text[])")
            args.append(sorted(wanted))
        for column, op, value in (("user_id", "=", user_id), ("device_id", ">", after)):
            if value is not None:
                where.append(f"{column} {op} %s")
                args.append(value)
        query = f"{DEVICE_SELECT} WHERE {' AND '.join(where)} ORDER BY device_id LIMIT %s"
        with self._read() as db:
            rows = db.execute(query, (*args, limit)).fetchall()
        return tuple(device_from_row(row) for row in rows)

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
        with self._read() as db:  # one statement (expire the overdue, pick the next): atomic on its own
            return peek_next(db, device_id, skipped, now)

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
        if reported is None:  # nothing to record: the one statement of the pick needs no transaction
            with self._read() as db:
                return Exchange(None, *send_next(db, device_id, now))
        with self._write() as db:  # one transaction: the result and the next command's Sent, or neither
            outcome = record(db, device_id, reported.command_uuid, reported.status, reported.result, now)
            if stop_if is not None and stop_if(outcome):
                if outcome.command is None:
                    require_device(db, device_id)  # no command of its own: is the device known at all?
                return Exchange(outcome, None, None)
            return Exchange(outcome, *send_next(db, device_id, now))

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
        with self._write() as db:
            return record(db, device_id, command_uuid, status, result, now)

    def get_command(self, device_id: str, command_uuid: str) -> QueuedCommand | None:
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        query = f"{COMMAND_SELECT} WHERE c.device_id = %s AND c.command_uuid = %s"
        with self._read() as db:
            row = db.execute(query, (device_id, command_uuid)).fetchone()
        return None if row is None else command_from_row(row)

    def list_commands(
        self, device_id: str, statuses: Iterable[CommandStatus] | None = None
    ) -> tuple[QueuedCommand, ...]:
        device_id, wanted = check_id(device_id), check_statuses(statuses)
        query = f"{COMMAND_SELECT} WHERE c.device_id = %s {QUEUE_ORDER}"
        with self._read() as db:
            rows = db.execute(query, (device_id,)).fetchall()
        commands = (command_from_row(row) for row in rows)
        return tuple(c for c in commands if wanted is None or c.status in wanted)

    def delete_command(self, device_id: str, command_uuid: str) -> bool:
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        with self._write() as db:
            row = db.execute(
                "DELETE FROM commands WHERE device_id = %s AND command_uuid = %s RETURNING payload_id",
                (device_id, command_uuid),
            ).fetchone()
            if row is None:
                return False
            collect_payloads(db, [row[0]])
        return True

    def clear_queue(self, device_id: str) -> int:
        device_id = check_id(device_id)
        with self._write() as db:
            return clear_pending(db, device_id)

    def expire_commands(self, *, now: float) -> int:
        now = check_now(now)
        with self._read() as db:  # one statement: autocommit
            return db.execute(EXPIRE_SENT, (now, now)).rowcount

    def purge_finished(self, *, before: float, limit: int = 500) -> int:
        before, limit = check_now(before), check_limit(limit)
        with self._write() as db:
            payload_ids = [row[0] for row in db.execute(PURGE_FINISHED, (before, limit)).fetchall()]
            collect_payloads(db, sorted(set(payload_ids)))
        return len(payload_ids)

    def forget_secrets(self, *, now: float, limit: int = 500) -> int:
        now, limit = check_now(now), check_limit(limit)
        with self._write() as db:
            seqs = [row[0] for row in db.execute(SECRETS_DUE, (now, limit)).fetchall()]
            return forget_secrets(db, seqs, now) if seqs else 0

    def devices_with_pending_commands(self) -> list[str]:
        """Devices with a command waiting (Queued, Sent, NotNow): a server process taking the lead pushes them."""
        query = f"SELECT DISTINCT device_id FROM commands WHERE status IN {PENDING_SQL} ORDER BY 1"
        with self._read() as db:
            return [row[0] for row in db.execute(query).fetchall()]

    def command_counts(self, device_id: str | None = None) -> dict[CommandStatus, int]:
        device_id = check_optional_id(device_id, "device_id")
        where, args = ("", ()) if device_id is None else ("WHERE device_id = %s", (device_id,))
        counts = dict.fromkeys(CommandStatus, 0)
        query = f"SELECT status, count(*) FROM commands {where} GROUP BY 1"
        with self._read() as db:
            for status, count in db.execute(query, args).fetchall():
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
        pushed = check_push(device_id, outcome, now, reason, token_invalid)
        with self._read() as db:  # one statement: autocommit
            written = db.execute(PUSH_UPSERT, (pushed.pushed_at, pushed.outcome.value, pushed.reason,
                                               pushed.token_invalid, pushed.device_id)).rowcount
        if written == 0:
            raise unknown_devices([pushed.device_id])
        return pushed

    def push_targets(self, device_ids: Sequence[str]) -> dict[str, PushTarget]:
        ids = sorted({check_id(device_id) for device_id in device_ids})
        with self._read() as db:
            rows = db.execute(PUSH_TARGETS, (ids,)).fetchall()
        return {row[0]: PushTarget(row[0], STATES[row[1]], row[2], row[3], row[4], None if row[5] is None else
                                   PushRecord(row[0], row[5], PushOutcome(row[6]), row[7], bool(row[8])))
                for row in rows}

    def record_pushes(self, records: Sequence[PushRecord]) -> None:
        checked = [check_push(r.device_id, r.outcome, r.pushed_at, r.reason, r.token_invalid) for r in records]
        latest = {record.device_id: record for record in checked}  # one row per device in one upsert
        if not latest:
            return
        columns = tuple(list(column) for column in zip(*(
            (r.device_id, r.pushed_at, r.outcome.value, r.reason, r.token_invalid) for r in latest.values()),
            strict=True))
        with self._read() as db:  # one statement: autocommit
            db.execute(PUSHES_UPSERT, columns)

    def get_push(self, device_id: str) -> PushRecord | None:
        device_id = check_id(device_id)
        with self._read() as db:
            row = db.execute(PUSH_SELECT, (device_id,)).fetchone()
        return None if row is None else PushRecord(row[0], row[1], PushOutcome(row[2]), row[3], bool(row[4]))

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            try:
                db.close()
            except psycopg.Error as exc:
                raise StorageError(f"closing PostgreSQL storage {redacted(self.dsn)} failed: {exc}") from None

    # Transactions: every psycopg error leaves as a StorageError, never as itself.

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        db = self._connection()
        try:
            with db.transaction():  # rolled back on any exception, StorageErrors included
                yield db
        except psycopg.Error as exc:
            raise self._failure(exc) from None

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        db = self._connection()
        try:
            yield db
        except psycopg.Error as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: psycopg.Error) -> StorageError:
        if getattr(exc, "sqlstate", None) in DISK_FULL:  # the reason shown to devices and admins names no server
            log.error("PostgreSQL storage %s is full: %s", redacted(self.dsn), exc)
            return StorageFullError()
        return StorageError(f"PostgreSQL storage {redacted(self.dsn)} failed: {exc}")

    def _connection(self) -> psycopg.Connection:
        if self._db is None:
            raise StorageClosedError(f"PostgreSQL storage {redacted(self.dsn)} is closed")
        if self._db.broken:  # the server restarted or the network dropped: connect again, once per call
            self._db.close()
            self._db, _ = open_database(self.dsn, self.schema)
        return self._db


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always answers its row
        raise StorageError("PostgreSQL answered no row for an upsert")
    return row
