"""The enrollment check-ins' storage path: few statements, facts decoded once, the same answers as before.

Authenticate and TokenUpdate through `MDMService` on SQLite, the facts memo, and `authenticate(user_id=)`.
"""

from __future__ import annotations

import hashlib
import plistlib
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_kit import make_server
from storage_conformance import FACTS, T0, TOPIC, cert, command

from mdm_protocol.checkin import Authenticate, CheckOut, TokenUpdate, encode_checkin
from mdm_server.service import DeviceIdentity
from mdm_server.storage import (
    CommandStatus,
    DeviceNotFoundError,
    EnrollmentStateError,
    InvalidRecordError,
    MemoryStorage,
    SQLiteStorage,
    rules,
    sqlite_queries,
)
from mdm_server.storage import sqlite as sqlite_module
from mdm_server.storage.sqlite_queries import FactsMemo


@pytest.fixture(params=["memory", "sqlite"])
def storage(request, tmp_path):
    store = MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "mdm.sqlite3")
    yield store
    store.close()


@pytest.fixture
def decodes(monkeypatch):
    """How often SQLite storage decodes a facts plist."""
    calls = []

    def counted(data):
        calls.append(data)
        return rules.decode_facts(data)

    monkeypatch.setattr(sqlite_queries, "decode_facts", counted)
    return calls


# Storage.authenticate(user_id=) -------------------------------------------------------------------------


def test_authenticate_binds_the_user_it_is_given(storage):
    device = storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0, user_id="alice")
    assert device.user_id == "alice" and storage.get_device("d").user_id == "alice"
    # A later Authenticate without a user keeps the bound one; with another user, it rebinds.
    assert storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0 + 1).user_id == "alice"
    assert storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0 + 2, user_id="bob").user_id == "bob"
    assert storage.get_device("d").user_id == "bob"


def test_authenticate_refuses_a_bad_user_before_writing(storage):
    with pytest.raises(InvalidRecordError):
        storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0, user_id="")
    assert storage.get_device("d") is None


def test_token_update_answers_the_row_it_wrote(storage):
    storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0, user_id="alice")
    device = storage.token_update("d", b"token", "magic", b"unlock", now=T0 + 5)
    assert device == storage.get_device("d")
    assert (device.state.value, device.push_token, device.unlock_token, device.last_seen_at) == (
        "enrolled", b"token", b"unlock", T0 + 5)
    # SPEC 1: no UnlockToken keeps the one held.
    assert storage.token_update("d", b"token2", "magic", now=T0 + 6).unlock_token == b"unlock"
    storage.check_out("d", now=T0 + 7)
    with pytest.raises(EnrollmentStateError):
        storage.token_update("d", b"token", "magic", now=T0 + 8)
    with pytest.raises(DeviceNotFoundError):
        storage.token_update("ghost", b"token", "magic", now=T0 + 8)
    assert storage.get_device("d").state.value == "unenrolled"


def test_writes_answer_what_a_fresh_read_gives(storage):
    written = [
        storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0),
        storage.bind_user("d", "carol"),
        storage.merge_facts("d", {"OSVersion": "18.1", "IsMultiUser": True}),
        storage.check_out("d", now=T0 + 3),
    ]
    assert written[-1] == storage.get_device("d")
    assert written[2].facts["OSVersion"] == "18.1" and written[2].user_id == "carol"


# The facts memo ------------------------------------------------------------------------------------------


def _blob(facts):
    return plistlib.dumps(facts, fmt=plistlib.FMT_BINARY)


def test_facts_memo_decodes_each_stored_form_once():
    memo, first, second = FactsMemo(size=2), _blob({"A": "1"}), _blob({"A": "2"})
    facts = memo.decode("d", first)
    assert memo.decode("d", bytes(first)) is facts  # equal bytes read again: no decode
    assert memo.decode("d", second) == {"A": "2"}  # the stored bytes changed: decoded again
    memo.decode("e", first)
    memo.decode("f", first)
    assert len(memo) == 2  # bounded: the oldest device left


def test_sqlite_enrollment_reads_decode_nothing_new(tmp_path, decodes):
    store = SQLiteStorage(tmp_path / "mdm.sqlite3")
    store.authenticate("d", FACTS, TOPIC, cert("d"), now=T0, user_id="u")
    for _ in range(3):
        assert store.get_device("d").facts == FACTS
    store.token_update("d", b"token", "magic", now=T0)
    assert decodes == []  # flat Authenticate facts are kept as given, never decoded back
    store.merge_facts("d", {"OSVersion": "18.0"})
    assert store.get_device("d").facts["OSVersion"] == "18.0"


def test_sqlite_memo_follows_the_stored_bytes(tmp_path):
    store = SQLiteStorage(tmp_path / "mdm.sqlite3")
    store.authenticate("d", FACTS, TOPIC, cert("d"), now=T0)
    assert store.get_device("d").facts["OSVersion"] == FACTS["OSVersion"]
    # Whatever writes the row, a read answers what is stored, not what was memoised.
    store._db.execute("UPDATE devices SET facts = ? WHERE device_id = 'd'", (_blob({"OSVersion": "9.3"}),))
    assert store.get_device("d").facts == {"OSVersion": "9.3"}
    store.close()


_DATES = st.datetimes(datetime(1950, 1, 1), datetime(2100, 1, 1)).map(lambda d: d.replace(microsecond=0))
_SCALARS = st.one_of(st.text(max_size=8), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=8),
                     st.floats(allow_nan=False), _DATES)
_PLIST_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=10), _PLIST_VALUES, max_size=6))
def test_decoded_facts_is_the_stored_form(facts):
    try:
        blob = rules.encode_facts(facts)
    except InvalidRecordError:
        return  # what cannot be stored never reaches decoded_facts
    kept, decoded = rules.decoded_facts(facts, blob), rules.decode_facts(blob)
    assert kept == decoded and list(kept) == list(decoded)  # same keys, same values, same order
    assert all(type(kept[key]) is type(value) for key, value in decoded.items())


# Through the service --------------------------------------------------------------------------------------


class Traced:
    """An MDMService on SQLite with every statement of both of its databases counted."""

    def __init__(self, tmp_path):
        self.server = make_server(tmp_path, in_memory=False)
        self.statements: list[str] = []
        storage = self.server.service.storage
        for db in (storage._db, self.server.admin.docs._db):
            db.set_trace_callback(self.statements.append)
        self.topic = self.server.state.topic

    def checkin(self, identity, message) -> int:
        self.statements.clear()
        assert self.server.service.handle_checkin(identity, encode_checkin(message)).status == 200
        return len(self.statements)


def _device(topic: str, udid: str):
    identity = DeviceIdentity(hashlib.sha256(udid.encode()).hexdigest(), user_id="user-1")
    auth = Authenticate(topic=topic, udid=udid, os_version="17.5", build_version="21F79",
                        product_name="iPhone15,2", serial_number="F2LX0000")
    token = TokenUpdate(topic=topic, udid=udid, token=b"t" * 32, push_magic="magic")
    return identity, auth, token


def test_an_enrollment_runs_few_statements_and_no_decode(tmp_path, decodes):
    traced = Traced(tmp_path)
    identity, auth, token = _device(traced.topic, "0" * 40)
    # Authenticate: one write transaction (owner check, upsert with the user, pending commands) and the
    # device read for labels (no label: no user lookup); TokenUpdate: the identity check, one write
    # transaction, the labels' read and the next-command read (no transaction: nothing expires).
    # Before this path was trimmed: 13 and 13.
    assert traced.checkin(identity, auth) <= 6
    assert traced.checkin(identity, token) <= 7
    assert sum(s.startswith("BEGIN") for s in traced.statements) == 1  # its write; the next-command read has none
    assert decodes == []
    device = traced.server.service.device("0" * 40)
    assert (device.state.value, device.user_id, device.facts["ProductName"]) == ("enrolled", "user-1",
                                                                                "iPhone15,2")


def test_a_command_queued_before_token_update_still_wakes_the_device(tmp_path):
    traced = Traced(tmp_path)
    woken = []
    traced.server.service._schedule_wake = lambda device_id, delay: woken.append((device_id, delay))
    identity, auth, token = _device(traced.topic, "1" * 40)
    traced.checkin(identity, auth)
    traced.server.service.storage.enqueue(["1" * 40], command("C1"), now=T0)
    traced.checkin(identity, token)
    assert woken == [("1" * 40, 0.0)]
    traced.checkin(identity, CheckOut(topic=traced.topic, udid="1" * 40))
    assert traced.server.service.device("1" * 40).state.value == "unenrolled"


def test_next_command_still_expires_overdue_commands(tmp_path):
    store = SQLiteStorage(tmp_path / "mdm.sqlite3")
    store.authenticate("d", FACTS, TOPIC, cert("d"), now=T0)
    store.token_update("d", b"token", "magic", now=T0)
    store.enqueue(["d"], command("late"), now=T0, timeout=10)
    store.enqueue(["d"], command("next"), now=T0 + 1)
    store.mark_sent("d", "late", now=T0 + 2)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    assert store.next_command("d", now=T0 + 5).command_uuid == "late"  # not overdue yet: a plain read
    assert not any(s.startswith("BEGIN") for s in statements)
    assert store.next_command("d", now=T0 + 20).command_uuid == "next"
    assert store.get_command("d", "late").status is CommandStatus.TIMED_OUT
    with pytest.raises(DeviceNotFoundError):
        store.next_command("ghost", now=T0)
    store.close()


@pytest.mark.parametrize("meanwhile", ["check_out", "acknowledge"])
def test_next_command_rereads_when_another_connection_changes_the_queue_between_its_reads(
        tmp_path, monkeypatch, meanwhile):
    path = tmp_path / "mdm.sqlite3"
    store, other = SQLiteStorage(path), SQLiteStorage(path)
    store.authenticate("d", FACTS, TOPIC, cert("d"), now=T0)
    store.token_update("d", b"token", "magic", now=T0)
    store.enqueue(["d"], command("first"), now=T0)
    store.enqueue(["d"], command("second"), now=T0 + 1)
    picked = sqlite_module.candidates

    def racing(db, device_id, skipped, now):
        found = picked(db, device_id, skipped, now)
        if meanwhile == "check_out":
            other.check_out("d", now=now)  # clears the queue
        else:
            other.mark_sent("d", "first", now=now)
            other.record_result("d", "first", CommandStatus.ACKNOWLEDGED, b"<plist/>", now=now)
        return found

    monkeypatch.setattr(sqlite_module, "candidates", racing)
    expected = None if meanwhile == "check_out" else "second"
    found = store.next_command("d", now=T0 + 2)
    assert (found.command_uuid if found else None) == expected
    store.close()
    other.close()


def test_on_device_changed_reads_the_device_once(tmp_path):
    server = make_server(tmp_path, in_memory=False)
    storage = server.service.storage
    storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0)
    reads = []
    real = storage.get_device
    storage.get_device = lambda device_id: reads.append(device_id) or real(device_id)
    report = server.admin.labels.on_device_changed("d")
    assert reads == ["d"] and report.queued == () and report.skipped == {}
