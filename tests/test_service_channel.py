"""The command channel through the pure service on both backends, and what it costs SQLite per request.

Statement budgets are the performance contract of issue #3 (an Idle with nothing queued is one statement).
"""

from __future__ import annotations

import hashlib

import pytest
from storage_conformance import FACTS, TOPIC, cert, command

from mdm_protocol.report import CommandReport, Status, decode_server_response, encode_report
from mdm_server.service import DeviceIdentity, MDMService
from mdm_server.storage import CommandStatus, MemoryStorage, PushOutcome, SQLiteStorage
from mdm_server.storage.rules import SEEN_RESOLUTION

T0 = 1_700_000_000.0
UDID = hashlib.sha1(b"channel").hexdigest()


class Channel:
    """A service over a real store, one enrolled device, and a hand on the clock."""

    def __init__(self, storage, *, enrolled: bool = False) -> None:
        self.storage, self.now, self.wakes, self.changed = storage, T0, [], []
        self.service = MDMService(storage, topic=TOPIC, now=lambda: self.now,
                                  schedule_wake=lambda d, delay: self.wakes.append((d, delay)),
                                  on_device_changed=self.changed.append)  # fmt: skip
        if not enrolled:  # `enrolled`: another process on the same database enrolled the device
            storage.authenticate(UDID, FACTS, TOPIC, cert(UDID), now=T0)
            storage.token_update(UDID, b"token", "magic", now=T0)
        self.identity = DeviceIdentity(cert(UDID))

    def report(self, status: Status, uuid: str | None = None, identity: DeviceIdentity | None = None):
        body = encode_report(CommandReport(status, udid=UDID, command_uuid=uuid))
        response = self.service.handle_command_report(identity or self.identity, body)
        if response.status != 200:
            return response
        command = decode_server_response(response.body)
        return None if command is None else command.command_uuid

    def queue(self, *uuids: str, request_type: str = "ProfileList") -> None:
        for uuid in uuids:
            self.storage.enqueue([UDID], command(uuid, request_type), now=self.now)

    def statements(self, call) -> list[str]:
        """The SQL statements `call` ran (SQLite only)."""
        ran: list[str] = []
        self.storage._db.set_trace_callback(ran.append)  # the connection is private; the count is the point
        try:
            call()
        finally:
            self.storage._db.set_trace_callback(None)
        return ran


@pytest.fixture(params=["memory", "sqlite"])
def channel(request, tmp_path):
    store = MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "channel.sqlite3")
    yield Channel(store)
    store.close()


@pytest.fixture
def sqlite_channel(tmp_path):
    store = SQLiteStorage(tmp_path / "channel.sqlite3")
    yield Channel(store)
    store.close()


# What a device sees.


def test_a_session_drains_the_queue_in_order(channel):
    channel.queue("a", "b")
    assert channel.report(Status.IDLE) == "a"
    assert channel.report(Status.ACKNOWLEDGED, "a") == "b"
    assert channel.report(Status.ERROR, "b") is None
    statuses = [c.status for c in channel.storage.list_commands(UDID)]
    assert statuses == [CommandStatus.ACKNOWLEDGED, CommandStatus.ERROR]


def test_last_seen_is_kept_to_the_resolution_and_exact_after_a_push(channel):
    channel.now += 100
    channel.report(Status.IDLE)
    channel.now += SEEN_RESOLUTION / 4
    channel.report(Status.IDLE)  # the same second: no write
    assert channel.storage.get_device(UDID).last_seen_at == T0 + 100
    channel.storage.record_push(UDID, PushOutcome.ACCEPTED, now=channel.now)
    channel.now += SEEN_RESOLUTION / 4
    channel.report(Status.IDLE)
    device, push = channel.storage.get_device(UDID), channel.storage.get_push(UDID)
    assert device.last_seen_at == channel.now and device.last_seen_at >= push.pushed_at


def test_a_refused_request_records_nothing(channel):
    channel.queue("a")
    stranger = DeviceIdentity(cert("someone else"))
    channel.now += 100
    refused = channel.report(Status.IDLE, identity=stranger)
    assert refused.status == 400 and b"does not belong" in refused.body
    assert channel.storage.get_device(UDID).last_seen_at == T0
    assert channel.storage.get_command(UDID, "a").status is CommandStatus.QUEUED
    channel.storage.check_out(UDID, now=channel.now)
    assert b"unenrolled, not enrolled" in channel.report(Status.IDLE).body
    assert b"does not belong" in channel.report(Status.IDLE, identity=stranger).body


def test_device_information_refreshes_labels_before_the_next_command(channel):
    """What labels queue after an inventory report goes out in the same session, ahead of older work."""
    channel.queue("info", request_type="DeviceInformation")
    channel.queue("old")
    channel.storage.enqueue([UDID], command("by-label"), priority=1, now=channel.now)  # queued by labels
    assert channel.report(Status.IDLE) == "by-label"
    channel.service.on_device_changed = lambda device_id: (
        channel.changed.append(device_id),
        channel.storage.enqueue([device_id], command("urgent"), priority=9, now=channel.now),
    )
    assert channel.report(Status.ACKNOWLEDGED, "by-label") == "info"
    assert channel.report(Status.ACKNOWLEDGED, "info") == "urgent"
    assert channel.changed == [UDID]
    assert channel.report(Status.ACKNOWLEDGED, "urgent") == "old"


def test_not_now_for_an_inventory_command_still_offers_the_rest(channel):
    channel.queue("info", request_type="DeviceInformation")
    channel.queue("next")
    assert channel.report(Status.IDLE) == "info"
    assert channel.report(Status.NOT_NOW, "info") == "next"
    assert channel.changed == []  # NotNow carries no inventory
    assert channel.report(Status.ACKNOWLEDGED, "next") is None
    assert channel.wakes == [(UDID, channel.service.not_now_retry)]  # for "info", later
    assert channel.report(Status.IDLE) == "info"


def test_a_repeated_report_changes_nothing_and_gets_the_next_command(channel):
    channel.queue("a", "b")
    assert channel.report(Status.IDLE) == "a"
    assert channel.report(Status.ACKNOWLEDGED, "a") == "b"
    assert channel.report(Status.ACKNOWLEDGED, "a") == "b"  # our answer was lost; the device re-sends
    assert channel.storage.get_command(UDID, "a").status is CommandStatus.ACKNOWLEDGED


# What it costs.


def test_idle_with_nothing_queued_is_one_statement(sqlite_channel):
    channel = sqlite_channel
    channel.now += 100
    assert len(channel.statements(lambda: channel.report(Status.IDLE))) == 2  # the check-in is written
    channel.now += SEEN_RESOLUTION / 2
    ran = channel.statements(lambda: channel.report(Status.IDLE))
    assert len(ran) == 1 and ran[0].startswith("SELECT") and "facts" not in ran[0]


def test_command_channel_statement_budgets(sqlite_channel):
    channel = sqlite_channel
    channel.queue("a", "b")
    answers = []

    def step(status, uuid=None):
        channel.now += 0.1
        answers.append(channel.report(status, uuid))

    # Idle (check-in written) -> a, Ack a -> b, Ack b -> end: one write transaction per report.
    budgets = [(Status.IDLE, None, 6), (Status.ACKNOWLEDGED, "a", 7), (Status.ACKNOWLEDGED, "b", 6)]
    for status, uuid, budget in budgets:
        ran = channel.statements(lambda status=status, uuid=uuid: step(status, uuid))
        assert len(ran) <= budget, ran
        assert [s for s in ran if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert answers == ["a", "b", None]


def test_not_now_costs_no_statement_of_its_own(sqlite_channel):
    """NotNow is held in the statement that records it; only the next Idle, if something is held, writes."""
    channel = sqlite_channel
    channel.queue("a", "b")
    assert channel.report(Status.IDLE) == "a"
    channel.now += 0.1
    answers = []
    # The Ack path's statements, plus the device's NotNow count that was always there.
    ran = channel.statements(lambda: answers.append(channel.report(Status.NOT_NOW, "a")))
    assert len(ran) <= 8 and not any(s.startswith("UPDATE commands SET held") for s in ran), ran
    ran = channel.statements(lambda: answers.append(channel.report(Status.ACKNOWLEDGED, "b")))
    assert len(ran) <= 6, ran
    channel.now += 0.1
    ran = channel.statements(lambda: answers.append(channel.report(Status.IDLE)))
    assert len(ran) <= 6 and sum(s.startswith("UPDATE commands SET held = 0") for s in ran) == 1, ran
    assert answers == ["b", None, "a"]
    assert channel.wakes == [(UDID, channel.service.not_now_retry)]  # after Ack b, for "a"


def test_two_server_processes_on_one_database_agree_on_not_now(tmp_path):
    """A NotNow answered to one process is honoured by the other, until the device's next Idle reaches either."""
    path = tmp_path / "shared.sqlite3"
    first = Channel(SQLiteStorage(path))
    second = Channel(SQLiteStorage(path), enrolled=True)
    try:
        first.queue("a", "b")
        assert first.report(Status.IDLE) == "a"
        assert first.report(Status.NOT_NOW, "a") == "b"
        assert second.report(Status.ACKNOWLEDGED, "b") is None  # "a" stays held in the other process too
        assert second.wakes == [(UDID, second.service.not_now_retry)]
        assert second.report(Status.IDLE) == "a"
        assert first.report(Status.ACKNOWLEDGED, "a") is None and first.wakes == []
    finally:
        first.storage.close()
        second.storage.close()
