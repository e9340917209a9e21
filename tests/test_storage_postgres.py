"""PostgreSQL storage's own promises: schema versions, atomic exchanges, SKIP LOCKED pickup, a killed client.

The conformance suite runs on PostgreSQL in test_storage.py; these are what only a shared server can show.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psycopg
import pytest
from kits.postgres import SERVER, postgres_storage
from storage_conformance import T0, command, enroll

from mdm_server.storage import CommandStatus, Reported, SchemaVersionError, StorageError
from mdm_server.storage.postgres import PostgresStorage
from mdm_server.storage.postgres_schema import MIGRATIONS, SCHEMA_VERSION, redacted

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store():
    storage = postgres_storage()
    yield storage
    storage.close()


def raw(storage: PostgresStorage) -> psycopg.Connection:
    """A connection of our own to the store's schema, as another server process (or an operator) has."""
    db = psycopg.connect(storage.dsn, autocommit=True)
    db.execute(f"SET search_path TO {storage.schema}")
    return db


def test_the_schema_version_is_kept_in_a_table(store):
    assert store.schema_version_found == 0
    with raw(store) as db:
        assert db.execute("SELECT version FROM mdmsim_schema").fetchall() == [(SCHEMA_VERSION,)]
    again = PostgresStorage(store.dsn, schema=store.schema)
    assert again.schema_version_found == SCHEMA_VERSION  # no migration the second time
    again.close()


def test_newer_schema_is_refused(store):
    with raw(store) as db:
        db.execute("UPDATE mdmsim_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaVersionError, match="newer"):
        PostgresStorage(store.dsn, schema=store.schema)


def test_a_version_1_schema_is_migrated_in_place():
    """Version 3 adds user channels; a device enrolled before the upgrade keeps its own token."""
    url, schema = SERVER.ensure(), SERVER.new_schema()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        db.execute(f"SET search_path TO {schema}")
        for statement in MIGRATIONS[0]:
            db.execute(statement)
        db.execute("CREATE TABLE mdmsim_schema (version integer NOT NULL)")
        db.execute("INSERT INTO mdmsim_schema (version) VALUES (1)")
    store = PostgresStorage(url, schema=schema)
    try:
        assert store.schema_version_found == 1
        enroll(store, "d")
        store.user_token_update("d", "alice", "alice", b"user", "user-magic", now=T0 + 1)
        assert store.get_device("d").push_magic == "magic-d"
        assert [c.push_magic for c in store.list_user_channels("d")] == ["user-magic"]
    finally:
        store.close()
    again = PostgresStorage(url, schema=schema)
    assert again.schema_version_found == SCHEMA_VERSION == 4  # no migration the second time
    again.close()


def test_processes_opening_a_new_database_at_once_migrate_it_once():
    url, schema = SERVER.ensure(), SERVER.new_schema()
    opened, errors = [], []

    def open_one():
        try:
            opened.append(PostgresStorage(url, schema=schema))
        except Exception as exc:  # reported below: any failure here is the test's
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(s.schema_version_found for s in opened) == [0, *[SCHEMA_VERSION] * 3]
    for storage in opened:
        storage.close()


def test_an_exchange_that_fails_leaves_no_half_of_it(store):
    """The result and the next command's Sent commit together or not at all: the device re-sends."""
    enroll(store, "d")
    for uuid in ("a", "b"):
        store.enqueue(["d"], command(uuid), now=T0)
    store.report_and_fetch("d", now=T0 + 1)
    with raw(store) as db:  # a real failure inside the transaction, after the result is written
        db.execute("CREATE FUNCTION no_send() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$")  # fmt: skip
        db.execute("CREATE TRIGGER no_send BEFORE UPDATE OF sent_at ON commands FOR EACH ROW "
                   "WHEN (NEW.sent_at IS DISTINCT FROM OLD.sent_at) EXECUTE FUNCTION no_send()")  # fmt: skip
    with pytest.raises(StorageError, match="disk on fire"):
        store.report_and_fetch("d", Reported("a", CommandStatus.ACKNOWLEDGED, b"<dict/>"), now=T0 + 2)
    a, b = store.get_command("d", "a"), store.get_command("d", "b")
    assert (a.status, a.result, b.status) == (CommandStatus.SENT, None, CommandStatus.QUEUED)


def test_a_command_another_process_is_sending_is_passed_over_not_waited_for(store):
    """Queue pickup is FOR UPDATE SKIP LOCKED: a row locked by another transaction is skipped at once."""
    enroll(store, "d")
    for uuid in ("a", "b"):
        store.enqueue(["d"], command(uuid), now=T0)
    store._db.execute("SET lock_timeout = '5s'")  # were the pick to wait, the test fails instead of hanging
    with raw(store) as other, other.transaction():
        other.execute("SELECT 1 FROM commands WHERE command_uuid = 'a' FOR UPDATE")
        assert store.report_and_fetch("d", now=T0 + 1).sent.command_uuid == "b"
    assert store.report_and_fetch("d", Reported("b", CommandStatus.ACKNOWLEDGED, b""), now=T0 + 2).sent.command_uuid \
        == "a"  # fmt: skip


def test_two_processes_draining_one_fleet_send_each_command_once(store):
    """Two connections (two server processes) each serve half of every device's requests, interleaved."""
    devices = [f"d{i}" for i in range(20)]
    for device_id in devices:
        enroll(store, device_id)
    for n in range(5):
        store.enqueue(devices, lambda d, n=n: command(f"{d}-c{n}"), now=T0 + n)
    other = PostgresStorage(store.dsn, schema=store.schema)
    acknowledged: list[str] = []

    def serve(storage, device_id, last):
        reported = None if last is None else Reported(last, CommandStatus.ACKNOWLEDGED, b"")
        exchange = storage.report_and_fetch(device_id, reported, now=T0 + 10)
        if last is not None:
            assert exchange.outcome.changed
            acknowledged.append(last)
        return None if exchange.sent is None else exchange.sent.command_uuid

    for device_id in devices:
        last, turn = serve(store, device_id, None), 1
        while last is not None:
            last, turn = serve((store, other)[turn % 2], device_id, last), turn + 1
    other.close()
    assert sorted(acknowledged) == sorted(f"{d}-c{n}" for d in devices for n in range(5))
    assert store.command_counts()[CommandStatus.ACKNOWLEDGED] == 100


def test_enqueue_to_many_devices_is_one_batch(store):
    devices = [f"d{i:05}" for i in range(2000)]
    store.enqueue([], command("x"), now=T0)
    with raw(store) as db, db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO devices (device_id, state, topic, facts, cert_sha256, authenticated_at, last_checkin_at,"
            " last_seen_at) VALUES (%s, 'enrolled', 't', '\\x00', %s, 0, 0, 0)",
            [(d, f"{i:064x}") for i, d in enumerate(devices)],
        )
    assert len(store.enqueue(devices, command("shared"), now=T0)) == 2000
    assert len(store.enqueue(devices, lambda d: command(f"own-{d}"), now=T0)) == 2000
    with raw(store) as db:
        assert db.execute("SELECT count(*) FROM payloads").fetchone()[0] == 2001
    assert store.command_counts()[CommandStatus.QUEUED] == 4000


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from mdm_server.storage import NewCommand, Reported
    from mdm_server.storage.postgres import PostgresStorage
    store = PostgresStorage(sys.argv[1], schema=sys.argv[2])
    store.authenticate("dev", {"OSVersion": "17.5"}, "topic", "ab" * 32, now=1.0)
    store.token_update("dev", b"token", "magic", now=1.0)
    for uuid in ("c1", "c2", "c3", "c4"):
        store.enqueue(["dev"], NewCommand(uuid, "ProfileList", b"<plist/>"), now=2.0)
    store.check_in_command_channel("dev", "ab" * 32, now=5.0, idle=True)
    store.report_and_fetch("dev", now=5.0)
    store.report_and_fetch("dev", Reported("c1", "Acknowledged", b"<dict/>"), now=6.0)
    # Killed inside a transaction that holds the next command's row: nothing of it may land or stay locked.
    store._db.execute("BEGIN")
    store._db.execute("UPDATE commands SET status = 'Acknowledged' WHERE command_uuid = 'c2'")
    print("acknowledged", flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX kill -9")
def test_a_client_killed_mid_transaction_loses_nothing_acknowledged_and_locks_nothing():
    url, schema = SERVER.ensure(), SERVER.new_schema()
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, url, schema], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert writer.stdout.readline() == b"acknowledged\n"
    finally:
        writer.kill()
        writer.wait()
        writer.stdin.close()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    store = PostgresStorage(url, schema=schema)
    store._db.execute("SET lock_timeout = '20s'")  # the server notices the dead client and rolls it back
    assert [(c.command_uuid, c.status) for c in store.list_commands("dev")] == [
        ("c1", "Acknowledged"), ("c2", "Sent"), ("c3", "Queued"), ("c4", "Queued"),
    ]  # fmt: skip
    fetched = store.report_and_fetch("dev", Reported("c2", "Acknowledged", b""), now=7.0)
    assert (fetched.outcome.changed, fetched.sent.command_uuid) == (True, "c3")
    store.close()


def test_a_lost_connection_is_one_error_then_a_new_connection(store):
    enroll(store, "d")
    with raw(store) as db:
        pid = store._db.info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StorageError, match="PostgreSQL storage"):
        store.get_device("d")
    assert store.get_device("d").device_id == "d"


def test_unreachable_servers_and_bad_schemas_raise_storage_errors_without_the_password():
    with pytest.raises(StorageError, match="cannot connect") as caught:
        PostgresStorage("postgresql://user:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in caught.value.reason and "***" in caught.value.reason
    assert redacted("host=h password=s3cret user=u") == "host=h password=*** user=u"
    with pytest.raises(StorageError, match="schema"):
        PostgresStorage(SERVER.ensure(), schema="x; DROP TABLE devices")


def test_serve_refuses_what_is_not_a_postgresql_url_and_reports_an_unreachable_one(tmp_path):
    def serve(*flags):
        return subprocess.run([sys.executable, "-m", "mdmsim.cli", "serve", "--data-dir", str(tmp_path), *flags],
                              cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip

    bad = serve("--database", "sqlite:///x.db")
    assert bad.returncode == 2 and "postgresql:// URL" in bad.stderr
    down = serve("--database", "postgresql://mdmsim:pw@127.0.0.1:1/postgres", "--push-link", "none")
    assert down.returncode == 1 and "cannot open storage" in down.stderr and ":pw@" not in down.stderr


def test_admin_documents_keep_sqlites_transactions():
    """All of a transaction's writes or none; a nested transaction joins the outer one, as in docstore.py."""
    from mdm_server.admin.docstore_postgres import PostgresDocumentStore

    url, schema = SERVER.ensure(), SERVER.new_schema()
    docs = PostgresDocumentStore(url, schema=schema)
    docs.put("label", "b", {"name": "B"})
    with docs.transaction():
        docs.put("label", "a", {"name": "A", "rules": [1, 2]})
        with docs.transaction():
            docs.put("user", "u", {"name": "U"})
    with pytest.raises(RuntimeError), docs.transaction():
        docs.put("label", "c", {"name": "C"})
        assert docs.delete("label", "b")
        raise RuntimeError("an admin error halfway")
    assert [doc_id for doc_id, _ in docs.list("label")] == ["a", "b"]
    assert docs.get("label", "a") == {"name": "A", "rules": [1, 2]} and docs.get("label", "c") is None
    docs.close()
    again = PostgresDocumentStore(url, schema=schema)
    assert again.get("user", "u") == {"name": "U"} and not again.delete("user", "nobody")
    again.close()


def test_a_server_on_postgresql_keeps_devices_and_admin_documents_across_a_restart(tmp_path):
    """`serve --database`: the queues and the admin documents both live in PostgreSQL, not in the data dir."""
    from server_kit import AdminClient, SignedDevice, make_server

    from mdm_server.admin.docstore_postgres import PostgresDocumentStore

    url, schema = SERVER.ensure(), SERVER.new_schema()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    database = f"{url}?options=-csearch_path%3D{schema}"
    first = make_server(tmp_path, in_memory=False, database=database)
    assert isinstance(first.storage, PostgresStorage) and isinstance(first.admin.docs, PostgresDocumentStore)
    SignedDevice(first, "UDID-PG-1").enroll()
    label = {"id": "sales", "name": "Sales", "type": "manual", "deviceUuids": ["UDID-PG-1"]}
    assert AdminClient(first).post("/api/v2/labels", label)[0] == 201
    first.stopService()
    assert not any((tmp_path / "data" / name).exists() for name in ("mdmsim.sqlite3", "admin.sqlite3"))
    again = make_server(tmp_path, in_memory=False, database=database)
    assert again.storage.get_device("UDID-PG-1").state == "enrolled"
    status, labels = AdminClient(again).get("/api/v2/labels")
    assert status == 200 and "sales" in str(labels)
    again.stopService()


def test_the_kit_skips_where_no_postgresql_starts_but_fails_under_ci(monkeypatch):
    from kits import postgres as kit

    def no_initdb():
        raise RuntimeError("initdb not found")

    server = kit._Server()
    monkeypatch.setattr(server, "_start", no_initdb)
    monkeypatch.delenv(kit.URL_VARIABLE, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server for the tests: initdb not found"):
        server.ensure()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI=1: PostgreSQL tests must run, not skip"):
        server.ensure()


def test_a_push_to_many_devices_reads_and_writes_in_bulk_with_the_same_outcomes_as_one_by_one(store):
    """Waker.push_now over PostgreSQL (push_targets + record_pushes) answers as the one-device path does."""
    from storage_conformance import TOPIC

    from device_sim.clock import HeapClock
    from mdm_server.push.apns_sim import APNsSimulation
    from mdm_server.storage.interface import PushOutcome
    from mdm_server.storage.memory import MemoryStorage
    from mdm_server.wakeups import BULK_PUSH, Waker

    ids = [f"BULK-{n:03d}" for n in range(BULK_PUSH + 10)]
    answers = []
    for storage in (store, MemoryStorage()):
        clock = HeapClock(T0)
        apns = APNsSimulation(clock=clock)
        for device_id in ids:
            token = hashlib.sha256(device_id.encode()).digest()  # 32 bytes, as APNs wants
            enroll(storage, device_id)
            storage.token_update(device_id, token, f"magic-{device_id}", now=T0)
            if device_id != ids[1]:  # one token APNs never heard of: 400 BadDeviceToken, then held back
                apns.register(token, TOPIC)
        storage.authenticate(ids[2], {"UDID": ids[2]}, TOPIC, "f" * 64, now=T0)  # re-enrolling: no token yet
        waker = Waker(storage, apns, clock=clock)
        first = waker.push_now([*ids, "NOBODY"])
        clock.advance(5)
        answers.append((first, waker.push_now(ids), dict(waker.outcomes)))
    assert answers[0] == answers[1]
    first, second, outcomes = answers[0]
    assert first[ids[0]].outcome is PushOutcome.ACCEPTED and first["NOBODY"] == "unknown device"
    assert first[ids[1]].token_invalid and second[ids[1]].startswith("push token invalid")
    assert second[ids[2]].startswith("not pushable") and store.get_push(ids[3]).pushed_at == T0 + 5
    assert outcomes["accepted"] == 2 * (len(ids) - 2)
