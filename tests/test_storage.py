"""Storage: the conformance suite on every backend, SQLite's own promises, and SQLite checked against memory.

The state machine runs random operation sequences on both backends and demands identical answers.
"""

from __future__ import annotations

import dataclasses
import itertools
import plistlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from kits.postgres import postgres_storage
from storage_channel_conformance import ChannelConformance, NotNowConformance
from storage_conformance import (
    FACTS,
    T0,
    TOPIC,
    Backend,
    CheckinConformance,
    DirectoryConformance,
    PersistenceConformance,
    PushConformance,
    QueueAdminConformance,
    cert,
    command,
    enroll,
    install_profile,
)
from storage_secrets_conformance import SecretsConformance
from storage_steps_conformance import ChannelStepsConformance
from storage_user_channel_conformance import UserChannelConformance

from mdm_server.storage import (
    SCHEMA_VERSION,
    CommandStatus,
    MemoryStorage,
    NewCommand,
    PushOutcome,
    Reported,
    SchemaVersionError,
    SQLiteStorage,
    Storage,
    StorageError,
)
from mdm_server.storage.postgres import PostgresStorage
from mdm_server.storage.sqlite_channel import _NEXT_FOR_CHANNEL, RELEASE, VISIT
from mdm_server.storage.sqlite_schema import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]


def _sqlite_backend(tmp_path: Path) -> Backend:
    numbers = itertools.count()

    def reopen(store: Storage) -> Storage:
        store.close()
        return SQLiteStorage(store.path)

    def share(store: Storage) -> Storage:
        return SQLiteStorage(store.path)  # a second connection, as a second server process has

    return Backend("sqlite", lambda: SQLiteStorage(tmp_path / f"store-{next(numbers)}.sqlite3"), reopen, share)


def _postgres_backend() -> Backend:
    def reopen(store: Storage) -> Storage:
        store.close()
        return PostgresStorage(store.dsn, schema=store.schema)

    def share(store: Storage) -> Storage:
        return PostgresStorage(store.dsn, schema=store.schema)  # a second connection, as a second process has

    return Backend("postgresql", postgres_storage, reopen, share)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request, tmp_path) -> Backend:
    if request.param == "memory":
        return Backend("memory", MemoryStorage)
    if request.param == "postgresql":
        return _postgres_backend()
    return _sqlite_backend(tmp_path)


# One class per role, each run on every backend.


class TestCheckin(CheckinConformance):
    pass


class TestDirectory(DirectoryConformance):
    pass


class TestPush(PushConformance):
    pass


class TestQueueAdmin(QueueAdminConformance):
    pass


class TestChannelSteps(ChannelStepsConformance):
    pass


class TestChannel(ChannelConformance):
    pass


class TestNotNow(NotNowConformance):
    pass


class TestUserChannels(UserChannelConformance):
    pass


class TestSecrets(SecretsConformance):
    pass


class TestPersistence(PersistenceConformance):
    @pytest.fixture(params=["sqlite", "postgresql"])
    def backend(self, request, tmp_path) -> Backend:  # the durable backends
        return _postgres_backend() if request.param == "postgresql" else _sqlite_backend(tmp_path)


def test_every_backend_implements_the_protocol(tmp_path):
    for store in (MemoryStorage(), SQLiteStorage(tmp_path / "s.sqlite3"), postgres_storage()):
        assert isinstance(store, Storage)
        store.close()


# SQLite's own promises.


def test_file_is_wal_with_a_schema_version(tmp_path):
    path = tmp_path / "s.sqlite3"
    SQLiteStorage(path).close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()
    assert SQLiteStorage(path).schema_version_found == SCHEMA_VERSION  # no migration the second time


def test_a_version_1_file_is_migrated_in_place(tmp_path):
    """Version 2 keeps commands without a timeout out of the deadline index; the rows stay as they were."""
    path = tmp_path / "v1.sqlite3"
    raw = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO devices (device_id, state, topic, facts, cert_sha256, authenticated_at, "
                "last_checkin_at, last_seen_at) VALUES ('d', 'enrolled', ?, ?, ?, ?, ?, ?)",
                (TOPIC, plistlib.dumps({}, fmt=plistlib.FMT_BINARY), cert("d"), T0, T0, T0))
    raw.execute("INSERT INTO payloads (payload_id, data) VALUES (1, x'00')")
    raw.executemany("INSERT INTO commands (device_id, command_uuid, request_type, payload_id, priority, status, "
                    "timeout, queued_at, sent_at) VALUES ('d', ?, 'ProfileList', 1, 0, 'Sent', ?, ?, ?)",
                    [("timed", 30.0, T0, T0), ("open", None, T0, T0)])  # fmt: skip
    raw.commit()
    raw.close()
    store = SQLiteStorage(path)
    assert store.schema_version_found == 1
    assert store.expire_commands(now=T0 + 30) == 1
    assert [c.status for c in store.list_commands("d")] == [CommandStatus.TIMED_OUT, CommandStatus.SENT]
    assert store.report_and_fetch("d", now=T0 + 31).sent.command_uuid == "open"
    store.close()
    raw = sqlite3.connect(path)
    index = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'commands_deadline'").fetchone()[0]
    assert "timeout IS NOT NULL" in index
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6  # up to the newest
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


def test_a_version_2_file_is_migrated_in_place(tmp_path):
    """Version 3 holds NotNow'd commands in the file. A command NotNow'd before the upgrade was held in the old
    process's memory, which is gone: it is offered again, as it was after any restart."""
    path = tmp_path / "v2.sqlite3"
    raw = sqlite3.connect(path)
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 2")
    raw.execute("INSERT INTO devices (device_id, state, topic, facts, cert_sha256, authenticated_at, "
                "last_checkin_at, last_seen_at) VALUES ('d', 'enrolled', ?, ?, ?, ?, ?, ?)",
                (TOPIC, plistlib.dumps({}, fmt=plistlib.FMT_BINARY), cert("d"), T0, T0, T0))
    raw.execute("INSERT INTO payloads (payload_id, data) VALUES (1, x'00')")
    raw.executemany("INSERT INTO commands (device_id, command_uuid, request_type, payload_id, priority, status, "
                    "queued_at, not_now_count) VALUES ('d', ?, 'ProfileList', 1, ?, ?, ?, ?)",
                    [("refused", 1, "NotNow", T0, 1), ("next", 0, "Queued", T0, 0)])  # fmt: skip
    raw.commit()
    raw.close()
    store = SQLiteStorage(path)
    assert store.schema_version_found == 2
    assert [(c.command_uuid, c.status, c.not_now_count) for c in store.list_commands("d")] == [
        ("refused", CommandStatus.NOT_NOW, 1), ("next", CommandStatus.QUEUED, 0),
    ]  # fmt: skip
    assert store.report_and_fetch("d", now=T0 + 1).sent.command_uuid == "refused"
    refused = store.report_and_fetch("d", Reported("refused", CommandStatus.NOT_NOW, b""), now=T0 + 2)
    assert refused.sent.command_uuid == "next"  # held from now on, in the file
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT command_uuid FROM commands WHERE held = 1").fetchall() == [("refused",)]
    index = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'commands_held'").fetchone()[0]
    assert "WHERE held = 1" in index
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6  # up to the newest
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


def test_a_version_4_file_is_migrated_in_place(tmp_path):
    """Version 5 adds user channels; a device enrolled before the upgrade keeps its token and gets users."""
    path = tmp_path / "v4.sqlite3"
    raw = sqlite3.connect(path)
    for statement in (*MIGRATIONS[0], *MIGRATIONS[1], *MIGRATIONS[2], *MIGRATIONS[3]):
        raw.execute(statement)
    raw.execute("PRAGMA user_version = 4")
    raw.execute("INSERT INTO devices (device_id, state, topic, facts, cert_sha256, authenticated_at, "
                "last_checkin_at, last_seen_at, push_token, push_magic) VALUES ('d', 'enrolled', ?, ?, ?, ?, ?, ?, "
                "x'01', 'device-magic')", (TOPIC, plistlib.dumps({}, fmt=plistlib.FMT_BINARY), cert("d"), T0, T0, T0))
    raw.commit()
    raw.close()
    store = SQLiteStorage(path)
    assert store.schema_version_found == 4
    store.user_token_update("d", "alice", "alice", b"user", "user-magic", now=T0 + 1)
    assert store.get_device("d").push_magic == "device-magic"
    assert [c.push_magic for c in store.list_user_channels("d")] == ["user-magic"]
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


def test_the_channel_reads_held_commands_through_their_index(tmp_path):
    """An Idle finds (and releases) held commands without walking the device's queue or the table."""
    store = SQLiteStorage(tmp_path / "s.sqlite3")
    plans = [
        " ".join(row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {query}", args))
        for query, args in [(VISIT, ("d",)), (RELEASE, ("d",)), (_NEXT_FOR_CHANNEL, ("d", T0, 1))]
    ]
    store.close()
    assert all("commands_held" in plan for plan in plans), plans
    assert not any("SCAN commands" in plan or "SCAN c " in plan for plan in plans), plans


def test_importing_the_pure_core_loads_no_sqlite():
    probe = ("import sys, mdm_server.service, mdm_server.storage; "
             "print('sqlite3' in sys.modules, 'psycopg' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout == "False False\n"  # fmt: skip
    lazy = "import mdm_server.storage as s; print(s.SQLiteStorage.__name__, s.SCHEMA_VERSION)"
    assert subprocess.run([sys.executable, "-c", lazy], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout == f"SQLiteStorage {SCHEMA_VERSION}\n"  # fmt: skip


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaVersionError, match="newer"):
        SQLiteStorage(path)


def test_unusable_files_raise_storage_errors(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database, just some bytes that are long enough" * 20)
    with pytest.raises(StorageError, match="cannot open"):
        SQLiteStorage(junk)
    with pytest.raises(StorageError, match="cannot open"):
        SQLiteStorage(tmp_path / "missing-dir" / "s.sqlite3")
    with pytest.raises(StorageError, match="synchronous"):
        SQLiteStorage(tmp_path / "s.sqlite3", synchronous="OFF")


def test_another_thread_gets_a_storage_error(tmp_path):
    store = SQLiteStorage(tmp_path / "s.sqlite3")
    caught = []
    worker = threading.Thread(target=lambda: caught.append(_error_of(lambda: store.get_device("d"))))
    worker.start()
    worker.join()
    store.close()
    assert isinstance(caught[0], StorageError) and "thread" in caught[0].reason


def _error_of(call):
    try:
        call()
    except Exception as exc:
        return exc
    return None


def test_a_shared_command_body_is_stored_once_and_collected(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = SQLiteStorage(path)
    devices = [f"d{i}" for i in range(50)]
    for device_id in devices:
        enroll(store, device_id)
    store.enqueue(devices, install_profile("shared"), now=T0)
    payloads = sqlite3.connect(path)
    assert payloads.execute("SELECT count(*) FROM payloads").fetchone()[0] == 1
    for device_id in devices[:-1]:
        store.clear_queue(device_id)
    assert payloads.execute("SELECT count(*) FROM payloads").fetchone()[0] == 1
    assert store.next_command(devices[-1], now=T0).payload == install_profile("shared").payload
    store.delete_command(devices[-1], "shared")
    assert payloads.execute("SELECT count(*) FROM payloads").fetchone()[0] == 0
    payloads.close()


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from mdm_server.storage import NewCommand, Reported, SQLiteStorage
    store = SQLiteStorage(sys.argv[1])
    store.authenticate("dev", {"OSVersion": "17.5"}, sys.argv[2], "ab" * 32, now=1.0)
    store.token_update("dev", b"token", "magic", now=1.0)
    for uuid in ("c1", "c2", "c3", "c4"):
        store.enqueue(["dev"], NewCommand(uuid, "ProfileList", b"<plist/>"), now=2.0)
    store.mark_sent("dev", "c1", now=3.0)
    store.record_result("dev", "c1", "Acknowledged", b"<dict/>", now=4.0)
    # The server's own path: the check-in, then one transaction per report (result and next command).
    store.check_in_command_channel("dev", "ab" * 32, now=5.0, idle=True)
    store.report_and_fetch("dev", now=5.0)
    store.report_and_fetch("dev", Reported("c2", "Acknowledged", b"<dict/>"), now=6.0)
    print("acknowledged", flush=True)
    sys.stdin.read()  # hold the connection open until killed
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX kill -9")
def test_acknowledged_writes_survive_kill_9(tmp_path):
    path = tmp_path / "killed.sqlite3"
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path), TOPIC],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert writer.stdout.readline() == b"acknowledged\n"
    finally:
        writer.kill()
        writer.wait()
        writer.stdin.close()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    # The commits are still only in the WAL: reopening must replay them.
    assert Path(f"{path}-wal").stat().st_size > 0
    store = SQLiteStorage(path)
    assert [(c.command_uuid, c.status) for c in store.list_commands("dev")] == [
        ("c1", "Acknowledged"), ("c2", "Acknowledged"), ("c3", "Sent"), ("c4", "Queued"),
    ]  # fmt: skip
    assert store.get_command("dev", "c3").sent_at == 6.0 and store.get_device("dev").last_seen_at == 5.0
    store.close()


def test_an_exchange_that_fails_leaves_no_half_of_it(tmp_path):
    """The result and the next command's Sent commit together or not at all: the device re-sends."""
    path = tmp_path / "s.sqlite3"
    store = SQLiteStorage(path)
    enroll(store, "d")
    for uuid in ("a", "b"):
        store.enqueue(["d"], command(uuid), now=T0)
    store.report_and_fetch("d", now=T0 + 1)
    saboteur = sqlite3.connect(path)  # a real failure inside the transaction, after the result is written
    saboteur.execute("CREATE TRIGGER no_send BEFORE UPDATE OF sent_at ON commands BEGIN "
                     "SELECT RAISE(ABORT, 'disk on fire'); END")  # fmt: skip
    saboteur.commit()
    saboteur.close()
    with pytest.raises(StorageError, match="disk on fire"):
        store.report_and_fetch("d", Reported("a", CommandStatus.ACKNOWLEDGED, b"<dict/>"), now=T0 + 2)
    a, b = store.get_command("d", "a"), store.get_command("d", "b")
    assert (a.status, a.result, b.status) == (CommandStatus.SENT, None, CommandStatus.QUEUED)
    store.close()


# SQLite checked against the in-memory model.


def _stop_after_profile_list(outcome) -> bool:
    return outcome.changed and outcome.command.request_type == "ProfileList"


DEVICES = ("d0", "d1", "d2")
UUIDS = ("u0", "u1", "u2")
STATUSES = ("Acknowledged", "Error", "CommandFormatError", "NotNow", "Idle")


class SQLiteMatchesMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stores = (MemoryStorage(), SQLiteStorage(":memory:"))
        self.now = T0

    def both(self, call):
        """Run `call` on each backend; they must return equal values or raise the same error type."""
        outcomes = []
        for store in self.stores:
            try:
                outcomes.append(("ok", call(store)))
            except StorageError as exc:
                outcomes.append(("error", type(exc)))
        assert outcomes[0] == outcomes[1]
        event(f"{call.__qualname__.split('.')[1]}: {_label(outcomes[0])}")
        return outcomes[0]

    @initialize()
    def enroll_everyone(self):
        for device in DEVICES:
            self.both(lambda s, device=device: enroll(s, device, now=self.now))

    @rule(dt=st.sampled_from([0, 0.5, 30, 60, 61]))
    def advance(self, dt):
        self.now += dt

    @rule(device=st.sampled_from(DEVICES), action=st.sampled_from(["auth", "auth", "token", "token", "out"]),
          identity=st.integers(0, 3), unlock=st.sampled_from([None, b"unlock"]))  # fmt: skip
    def check_in(self, device, action, identity, unlock):
        if action == "auth":
            self.both(lambda s: s.authenticate(device, FACTS, TOPIC, cert(identity), now=self.now))
        elif action == "token":
            self.both(
                lambda s: s.token_update(device, b"tok-" + device.encode(), "magic", unlock, now=self.now)
            )
        else:
            self.both(lambda s: s.check_out(device, now=self.now))

    @rule(
        devices=st.lists(st.sampled_from(DEVICES), max_size=3, unique=True),
        uuid=st.sampled_from(UUIDS),
        per_device=st.booleans(),
        priority=st.integers(-1, 2),
        timeout=st.sampled_from([None, 60.0]),
    )
    def enqueue(self, devices, uuid, per_device, priority, timeout):
        source = (lambda d: command(f"{uuid}-{d}")) if per_device else command(uuid)
        self.both(lambda s: s.enqueue(devices, source, priority=priority, timeout=timeout, now=self.now))

    @rule(device=st.sampled_from(DEVICES), data=st.data())
    def next_command(self, device, data):
        skip = data.draw(st.frozensets(self._any_uuid()), label="skip")
        kind, queued = self.both(lambda s: s.next_command(device, skip=skip, now=self.now))
        if kind == "ok" and queued is not None:
            assert queued.pending and queued.command_uuid not in skip

    @rule(device=st.sampled_from(DEVICES), data=st.data())
    def session_round(self, device, data):
        """What the server does: take the next command, send it, record the device's answer."""
        kind, queued = self.both(lambda s: s.next_command(device, now=self.now))
        if kind == "error" or queued is None:
            return
        self.both(lambda s: s.mark_sent(device, queued.command_uuid, now=self.now))
        status = data.draw(st.sampled_from(STATUSES[:4]), label="status")
        self._report(device, queued.command_uuid, status)
        # Devices repeat a report when they miss our answer (SPEC 2); sometimes with another status.
        repeat = data.draw(st.sampled_from([None, status, *STATUSES[:4]]), label="repeat")
        if repeat is not None:
            self.now += 1
            self._report(device, queued.command_uuid, repeat)

    @rule(device=st.sampled_from(DEVICES), data=st.data())
    def mark_sent(self, device, data):
        uuid = data.draw(self._any_uuid(), label="uuid")
        self.both(lambda s: s.mark_sent(device, uuid, now=self.now))

    @rule(device=st.sampled_from(DEVICES), status=st.sampled_from(STATUSES), data=st.data())
    def record_result(self, device, status, data):
        self._report(device, data.draw(self._any_uuid(), label="uuid"), status)

    @rule(device=st.sampled_from(DEVICES), who=st.sampled_from([*DEVICES, 0, 1]), idle=st.booleans())
    def check_in_command_channel(self, device, who, idle):
        # Any identity: the device's own, another device's, or one an earlier Authenticate may have bound.
        self.both(lambda s: s.check_in_command_channel(device, cert(who), now=self.now, idle=idle))

    @rule(device=st.sampled_from(DEVICES), status=st.sampled_from([None, *STATUSES[:4]]),
          stop=st.sampled_from([None, _stop_after_profile_list]), data=st.data())  # fmt: skip
    def report_and_fetch(self, device, status, stop, data):
        """The server's one-transaction turn: record a report (or none), then send the next command."""
        reported = None
        if status is not None:
            uuid = data.draw(self._any_uuid(), label="uuid")
            reported = Reported(uuid, CommandStatus(status), f"{status}@{self.now}".encode())
        kind, answer = self.both(lambda s: s.report_and_fetch(device, reported, now=self.now, stop_if=stop))
        if kind == "ok" and answer.sent is not None:
            assert answer.sent.status is CommandStatus.SENT and not answer.stopped

    @rule(device=st.sampled_from(DEVICES),
          sessions=st.lists(st.lists(st.sampled_from(STATUSES[:4]), max_size=3), min_size=1, max_size=3))  # fmt: skip
    def channel_sessions(self, device, sessions):
        """Sessions as the server runs them: the device's Idle, then each command it is sent answered in turn
        (NotNow'd ones are held for the rest of the session, and offered again at the next Idle)."""
        for answers in sessions:
            self.both(lambda s: s.check_in_command_channel(device, cert(device), now=self.now, idle=True))
            kind, answer = self.both(lambda s: s.report_and_fetch(device, now=self.now))
            for status in answers:
                if kind == "error" or answer.sent is None:
                    break
                body = f"{status}@{self.now}".encode()
                reported = Reported(answer.sent.command_uuid, CommandStatus(status), body)
                kind, answer = self.both(lambda s, r=reported: s.report_and_fetch(device, r, now=self.now))

    @rule(device=st.sampled_from(DEVICES), clear=st.booleans(), data=st.data())
    def remove(self, device, clear, data):
        if clear:
            self.both(lambda s: s.clear_queue(device))
        else:
            uuid = data.draw(self._any_uuid(), label="uuid")
            self.both(lambda s: s.delete_command(device, uuid))

    @rule()
    def expire(self):
        self.both(lambda s: s.expire_commands(now=self.now))

    @rule(device=st.sampled_from(DEVICES), user=st.sampled_from([None, "alice"]), invalid=st.booleans())
    def bookkeeping(self, device, user, invalid):
        self.both(lambda s: s.touch(device, now=self.now))
        self.both(lambda s: s.bind_user(device, user))
        self.both(lambda s: s.record_push(device, PushOutcome.REJECTED, now=self.now, token_invalid=invalid))

    def _any_uuid(self):
        # Any CommandUUID queued anywhere (so results may hit another device's command), or an unknown one.
        known = {c.command_uuid for d in DEVICES for c in self.stores[0].list_commands(d)}
        return st.sampled_from(sorted(known | {"unknown"}))

    def _report(self, device, uuid, status):
        # A body unique to this report: a backend that overwrote a duplicate would show it.
        body = f"{status}@{self.now}".encode()
        self.both(lambda s: s.record_result(device, uuid, status, body, now=self.now))

    @invariant()
    def same_state(self):
        self.both(lambda s: [(s.get_device(d), s.list_commands(d), s.get_push(d)) for d in DEVICES])
        self.both(lambda s: (s.command_counts(), s.device_counts(), s.list_devices()))

    def teardown(self):
        for store in self.stores:
            store.close()


def _label(outcome) -> str:
    kind, value = outcome
    if kind == "error":
        return value.__name__
    return getattr(getattr(value, "kind", None), "value", None) or type(value).__name__


SQLiteMatchesMemory.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
TestSQLiteMatchesMemory = SQLiteMatchesMemory.TestCase


class PostgresMatchesMemory(SQLiteMatchesMemory):
    """The same random sequences on PostgreSQL (a fresh schema per example); fewer, as each step is round trips."""

    def __init__(self) -> None:
        super().__init__()
        self.stores[1].close()
        self.stores = (self.stores[0], postgres_storage())


PostgresMatchesMemory.TestCase.settings = settings(max_examples=30, stateful_step_count=40, deadline=None)
TestPostgresMatchesMemory = PostgresMatchesMemory.TestCase


def test_enqueue_to_unknown_devices_names_them(tmp_path):
    store = SQLiteStorage(tmp_path / "s.sqlite3")
    enroll(store, "known")
    ghosts = [f"ghost-{i}" for i in range(12)]
    with pytest.raises(StorageError, match=r"ghost-0, ghost-1, ghost-2, ghost-3, ghost-4 and 7 more"):
        store.enqueue(["known", *ghosts], NewCommand("c", "ProfileList", b""), now=T0)
    assert store.list_commands("known") == ()
    store.close()


def test_the_wal_is_truncated_back_after_a_burst_of_writes(tmp_path):
    """A burst grows the WAL; once a checkpoint resets it, the file shrinks to the limit (the soak's flat disk)."""
    from mdm_server.storage.sqlite_schema import WAL_SIZE_LIMIT

    storage = SQLiteStorage(tmp_path / "q.sqlite3")
    db = storage._db  # noqa: SLF001 - the file's own settings are what is tested
    assert db.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
    db.execute("CREATE TABLE burst (data BLOB)")
    db.execute("BEGIN")  # one transaction: no checkpoint can reset the WAL inside it
    db.executemany("INSERT INTO burst VALUES (?)", [(b"x" * 4096,) for _ in range(3000)])
    db.execute("COMMIT")
    wal = tmp_path / "q.sqlite3-wal"
    assert wal.stat().st_size > WAL_SIZE_LIMIT
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    db.execute("INSERT INTO burst VALUES (x'00')")  # the first write after a full checkpoint resets the WAL
    assert wal.stat().st_size <= WAL_SIZE_LIMIT
    storage.close()


def test_sqlite_empties_its_wal_of_replaced_secrets_at_most_once_a_second(tmp_path):
    """The TRUNCATE checkpoint costs an fsync: one per second of the caller's clock; a device visit after the
    second (or close) empties what a burst of acknowledgements left."""
    path = tmp_path / "s.sqlite3"
    store = SQLiteStorage(path)
    secrets = {}
    for device_id in ("d1", "d2"):
        store.authenticate(device_id, FACTS, TOPIC, cert(device_id), now=T0)
        secrets[device_id] = f"S3CR3T-{device_id}-{'x' * 40}".encode()
        new = command(f"s-{device_id}", "InstallProfile", Password=secrets[device_id].decode())
        store.enqueue([device_id], dataclasses.replace(new, redacted=command("r", "InstallProfile").payload),
                      now=T0)

    def on_disk(secret: bytes) -> bool:
        return any(secret in p.read_bytes() for p in tmp_path.glob("s.sqlite3*"))

    assert on_disk(secrets["d1"]) and on_disk(secrets["d2"])
    for device_id in ("d1", "d2"):
        store.mark_sent(device_id, f"s-{device_id}", now=T0 + 10)
        store.record_result(device_id, f"s-{device_id}", CommandStatus.ACKNOWLEDGED, None, now=T0 + 10)
    assert not on_disk(secrets["d1"])  # the first was emptied at once
    assert on_disk(secrets["d2"])  # the second waits for the next second
    store.check_in_command_channel("d1", cert("d1"), now=T0 + 10.5)
    assert on_disk(secrets["d2"])
    store.check_in_command_channel("d1", cert("d1"), now=T0 + 11)
    assert not on_disk(secrets["d2"])
    store.close()
