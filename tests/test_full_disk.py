"""A full disk, for real: SQLite held at its size with PRAGMA max_page_count answers "database or disk is full".

Devices and admins get 503 with a message that names no path, nothing is half-written, and writes work again
once there is room. ENOSPC from other writes answers 503 too.
"""

from __future__ import annotations

import errno
import json
import sqlite3

import pytest
from server_kit import AdminClient, SignedDevice, make_server
from storage_conformance import T0, command, enroll

from mdm_protocol.report import Status, decode_server_response
from mdm_server.admin.docstore import DocumentStore
from mdm_server.storage import CommandStatus, SQLiteStorage, StorageFullError
from mdm_server.storage.interface import FULL_REASON, FULL_RETRY_AFTER

UDID = "00008110-000A1B2C3D4E5F60"


def fill(db: sqlite3.Connection) -> None:
    """Use every page the file may have: later writes that need room fail as on a full disk."""
    db.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages + 2}")
    for size in (4096, 512, 64, 8, 1):
        with pytest.raises(sqlite3.OperationalError, match="full"):
            while True:
                db.execute("INSERT INTO filler VALUES (?)", (b"x" * size,))


def free_space(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA max_page_count = 1000000")


def connection(storage: SQLiteStorage) -> sqlite3.Connection:
    return storage._connection()  # the test's way to make this connection's file "full", as no tmpfs is here


def test_a_full_database_refuses_writes_without_its_path_and_recovers(tmp_path):
    path = tmp_path / "queue.sqlite3"
    storage = SQLiteStorage(path)
    enroll(storage, "d1")
    storage.enqueue(["d1"], command("before"), now=T0)
    fill(connection(storage))
    with pytest.raises(StorageFullError) as caught:
        storage.enqueue(["d1"], command("during", Junk="y" * 20000), now=T0 + 1)
    assert caught.value.reason == FULL_REASON and str(tmp_path) not in str(caught.value)
    # Nothing of the failed call landed, reads still work, and the connection is not left in a transaction.
    assert storage.get_command("d1", "during") is None
    assert storage.command_counts()[CommandStatus.QUEUED] == 1
    assert not connection(storage).in_transaction
    free_space(connection(storage))
    storage.enqueue(["d1"], command("after", Junk="y" * 20000), now=T0 + 2)
    assert [c.command_uuid for c in storage.list_commands("d1")] == ["before", "after"]
    storage.close()
    reopened = SQLiteStorage(path)
    assert connection(reopened).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len(reopened.list_commands("d1")) == 2
    reopened.close()


def test_the_admin_documents_store_reports_full_as_storage_full(tmp_path):
    docs = DocumentStore(tmp_path / "admin.sqlite3")
    docs.put("setting", "a", {"n": 1})
    fill(docs._db)
    with pytest.raises(StorageFullError), docs.transaction():
        docs.put("setting", "b", {"big": "z" * 5000})
    assert not docs._db.in_transaction and docs.get("setting", "b") is None
    free_space(docs._db)
    with docs.transaction():
        docs.put("setting", "b", {"big": "z" * 5000})
    assert docs.get("setting", "b") == {"big": "z" * 5000}
    docs.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean-channel", "twisted-web"])
def test_devices_get_503_on_a_full_disk_and_their_report_lands_once_space_returns(tmp_path, lean):
    server = make_server(tmp_path, backend="sqlite", lean_device_http=lean)
    device = SignedDevice(server, UDID)
    device.enroll()
    server.storage.enqueue([UDID], command("inventory", "ProfileList"), now=server.clock.seconds())
    sent = decode_server_response(device.report(Status.IDLE).body)
    assert sent.command_uuid == "inventory"
    fill(connection(server.storage))
    big = {"ProfileList": [{"PayloadIdentifier": f"p{n}", "PayloadDescription": "d" * 200} for n in range(40)]}
    refused = device.report(Status.ACKNOWLEDGED, "inventory", **big)
    assert refused.status == 503 and refused.headers["retry-after"] == str(FULL_RETRY_AFTER)
    assert b"storage is full" in refused.body and str(tmp_path).encode() not in refused.body
    assert server.storage.get_command(UDID, "inventory").status is CommandStatus.SENT
    free_space(connection(server.storage))
    assert device.report(Status.ACKNOWLEDGED, "inventory", **big).status == 200
    assert server.storage.get_command(UDID, "inventory").status is CommandStatus.ACKNOWLEDGED
    assert connection(server.storage).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    server.stopService()


def test_admin_writes_get_503_on_a_full_disk(tmp_path):
    server = make_server(tmp_path, backend="sqlite")
    device = SignedDevice(server, UDID)
    device.enroll()
    admin = AdminClient(server)
    fill(connection(server.storage))
    request = {"deviceIds": [UDID], "command": {"RequestType": "ProfileList", "Junk": "j" * 5000}}
    status, body = admin.post("/api/v1/commands", request)
    assert status == 503 and body["code"] == "storage_full", body
    assert "storage is full" in body["message"] and str(tmp_path) not in json.dumps(body)
    headers = {"Authorization": admin.authorization, "Content-Type": "application/json"}
    raw = admin.http.request("POST", "/api/v1/commands", json.dumps(request).encode(), headers)
    assert (raw.status, raw.headers["retry-after"]) == (503, str(FULL_RETRY_AFTER))
    free_space(connection(server.storage))
    status, body = admin.post("/api/v1/commands", request)
    assert status in (201, 207), body
    server.stopService()


def test_enospc_from_any_other_write_answers_503(tmp_path):
    server = make_server(tmp_path)
    device = SignedDevice(server, UDID)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    server.service.handle_checkin = no_space
    answer = device.authenticate()
    assert answer.status == 503 and b"storage is full" in answer.body
    server.service.handle_checkin = lambda *args: (_ for _ in ()).throw(OSError(errno.EACCES, "denied"))
    assert device.authenticate().status == 500  # other OS errors stay what they are
    server.stopService()


def test_postgresql_disk_full_is_storage_full_without_the_server_address():
    psycopg = pytest.importorskip("psycopg")
    from types import SimpleNamespace

    from mdm_server.storage.postgres import PostgresStorage

    store = SimpleNamespace(dsn="postgresql://mdm:secret@db.internal:5432/mdm")
    full = PostgresStorage._failure(store, psycopg.errors.DiskFull("could not extend file: No space left"))
    assert isinstance(full, StorageFullError) and "db.internal" not in full.reason
    other = PostgresStorage._failure(store, psycopg.errors.UniqueViolation("duplicate"))
    assert not isinstance(other, StorageFullError) and "secret" not in other.reason
