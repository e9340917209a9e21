"""SQLite specifics of retention and file modes: a purge reads only what it removes, leaves no orphaned command
bodies, and the database files are the owner's alone (the conformance suite covers the behaviour on every backend).
"""

from __future__ import annotations

import os
import stat

from storage_conformance import T0, command, deliver, enroll, install_profile

from device_sim.clock import HeapClock
from mdm_server.admin.docstore import DocumentStore
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.state import STATE_FILE
from mdm_server.storage import SQLiteStorage
from mdm_server.storage.sqlite_queries import PURGE_FINISHED


def test_a_purge_batch_reads_the_finished_index_not_the_table(tmp_path):
    store = SQLiteStorage(tmp_path / "s.sqlite3")
    plan = " ".join(row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {PURGE_FINISHED}", (T0, 500)))
    store.close()
    assert "commands_finished" in plan and "SCAN commands" not in plan, plan


def test_purged_commands_leave_no_orphaned_bodies(tmp_path):
    store = SQLiteStorage(tmp_path / "s.sqlite3")
    for device_id in ("d1", "d2"):
        enroll(store, device_id)
    store.enqueue(["d1", "d2"], install_profile("shared"), now=T0)  # one body, two commands
    store.enqueue(["d1"], command("own"), now=T0)
    for _ in range(2):
        deliver(store, "d1", now=T0 + 1)
    bodies = store._db.execute("SELECT count(*) FROM payloads").fetchone()[0]
    assert store.purge_finished(before=T0 + 2) == 2
    assert store._db.execute("SELECT count(*) FROM payloads").fetchone()[0] == bodies - 1  # "shared" stays
    deliver(store, "d2", now=T0 + 3)
    assert store.purge_finished(before=T0 + 4) == 1
    assert store._db.execute("SELECT count(*) FROM payloads").fetchone()[0] == 0
    store.close()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_database_files_are_private_even_under_a_permissive_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store = SQLiteStorage(tmp_path / "q.sqlite3")
        enroll(store, "d1")
        docs = DocumentStore(tmp_path / "admin.sqlite3")
        docs.put("k", "i", {})
        files = sorted(p.name for p in tmp_path.iterdir())
        assert {"q.sqlite3", "q.sqlite3-wal", "admin.sqlite3", "admin.sqlite3-wal"} <= set(files)
        assert {name: _mode(tmp_path / name) for name in files} == dict.fromkeys(files, 0o600)
        store.close()
        docs.close()
        os.chmod(tmp_path / "q.sqlite3", 0o644)  # a file from an older mdmsim is taken back to 0600
        SQLiteStorage(tmp_path / "q.sqlite3").close()
        assert _mode(tmp_path / "q.sqlite3") == 0o600
    finally:
        os.umask(old)


def test_server_json_and_every_database_in_the_data_dir_are_private(tmp_path):

    old = os.umask(0o022)
    try:
        data = tmp_path / "data"
        server = MDMServer(ServerConfig(data_dir=data), clock=HeapClock(T0))
        server.stopService()
        assert _mode(data / STATE_FILE) == 0o600
        databases = [p for p in data.iterdir() if ".sqlite3" in p.name]
        assert len(databases) >= 2 and all(_mode(p) == 0o600 for p in databases), databases
        os.chmod(data / STATE_FILE, 0o644)
        MDMServer(ServerConfig(data_dir=data), clock=HeapClock(T0)).stopService()
        assert _mode(data / STATE_FILE) == 0o600
    finally:
        os.umask(old)
