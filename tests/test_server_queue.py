"""The per-device command queue as devices see it: order, NotNow, retries by push, stray results, timeouts.

Commands go in through the admin API and come out through signed device sessions on the real web tree.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from server_kit import BACKENDS, AdminClient, SignedDevice, make_server, snapshot

from mdm_protocol.report import (
    Command,
    CommandReport,
    Status,
    decode_server_response,
    encode_command,
    encode_report,
)
from mdm_server.service import DEFAULT_NOT_NOW_RETRY, DeviceIdentity, MDMService
from mdm_server.storage.interface import CommandStatus, NewCommand
from mdm_server.storage.memory import MemoryStorage

A = "a" * 40
B = "b" * 40
TOPIC = "com.apple.mgmt.External.00000000-0000-0000-0000-000000000000"


@pytest.fixture(params=BACKENDS)
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param)


@pytest.fixture
def device(server):
    device = SignedDevice(server, A)
    device.enroll()
    return device


def offered(response) -> str | None:
    """The CommandUUID a 200 answer sends, or None for the zero-byte end of session."""
    assert response.status == 200, response.body
    command = decode_server_response(response.body)
    return None if command is None else command.command_uuid


def status_of(server, device_id: str, uuid: str) -> CommandStatus:
    return server.storage.get_command(device_id, uuid).status


def test_priority_first_then_first_in_first_out(server, device):
    admin = AdminClient(server)
    order = []
    for priority in (0, 5, 0, 5, -1, 0):
        order.append((priority, admin.enqueue([A], "ProfileList", priority=priority)[A]))
        server.clock.advance(1)
    expected = [uuid for _, uuid in sorted(order, key=lambda item: -item[0])]  # sorted() is stable: FIFO
    seen = []
    uuid = offered(device.report(Status.IDLE))
    while uuid is not None:
        seen.append(uuid)
        uuid = offered(device.report(Status.ACKNOWLEDGED, uuid))
    assert seen == expected
    assert {status_of(server, A, u) for u in seen} == {CommandStatus.ACKNOWLEDGED}


def test_fifo_holds_for_commands_queued_in_the_same_instant(server, device):
    admin = AdminClient(server)
    queued = [admin.enqueue([A], "ProfileList")[A] for _ in range(5)]
    seen = []
    uuid = offered(device.report(Status.IDLE))
    while uuid is not None:
        seen.append(uuid)
        uuid = offered(device.report(Status.ACKNOWLEDGED, uuid))
    assert seen == queued


def test_not_now_is_skipped_for_the_session_and_offered_at_the_next_idle(server, device):
    admin = AdminClient(server)
    x, y, z = (admin.enqueue([A], kind)[A] for kind in ("InstallProfile", "ProfileList", "CertificateList"))
    assert offered(device.report(Status.IDLE)) == x
    assert offered(device.report(Status.NOT_NOW, x)) == y
    assert status_of(server, A, x) is CommandStatus.NOT_NOW
    assert offered(device.report(Status.ACKNOWLEDGED, y)) == z
    assert offered(device.report(Status.ERROR, z)) is None
    assert offered(device.report(Status.IDLE)) == x
    assert offered(device.report(Status.ACKNOWLEDGED, x)) is None
    assert [status_of(server, A, u) for u in (x, y, z)] == [
        CommandStatus.ACKNOWLEDGED, CommandStatus.ACKNOWLEDGED, CommandStatus.ERROR,
    ]
    assert server.storage.get_command(A, x).not_now_count == 1


def test_a_session_ending_after_not_now_and_another_status_schedules_a_push(server, device):
    inbox = device.online()
    admin = AdminClient(server)
    x, y = admin.enqueue([A], "InstallProfile")[A], admin.enqueue([A], "ProfileList")[A]
    assert offered(device.report(Status.IDLE)) == x
    assert offered(device.report(Status.NOT_NOW, x)) == y
    assert offered(device.report(Status.ACKNOWLEDGED, y)) is None  # NotNow was not the last status
    server.clock.advance(DEFAULT_NOT_NOW_RETRY - 1)
    assert inbox == []
    server.clock.advance(1)
    assert inbox == [{"mdm": device.push_magic}]
    assert offered(device.report(Status.IDLE)) == x


def test_a_session_whose_last_status_is_not_now_schedules_no_push(server, device):
    inbox = device.online()
    x = AdminClient(server).enqueue([A], "InstallProfile")[A]
    assert offered(device.report(Status.IDLE)) == x
    assert offered(device.report(Status.NOT_NOW, x)) is None  # the device re-polls by itself
    server.clock.advance(10 * DEFAULT_NOT_NOW_RETRY)
    assert inbox == []
    assert server.apns.stats.accepted == 0


def test_a_repeated_acknowledged_is_harmless(server, device):
    admin = AdminClient(server)
    x, y = admin.enqueue([A], "DeviceInformation", Queries=["UDID"])[A], admin.enqueue([A], "ProfileList")[A]
    assert offered(device.report(Status.IDLE)) == x
    assert offered(device.report(Status.ACKNOWLEDGED, x, QueryResponses={"UDID": A})) == y
    first = server.storage.get_command(A, x)
    # The device may send the same result twice (SPEC section 2); the stored result stays the first one.
    assert offered(device.report(Status.ACKNOWLEDGED, x, QueryResponses={"UDID": "changed"})) == y
    assert server.storage.get_command(A, x) == first
    # A different final status for a finished command changes nothing either.
    assert offered(device.report(Status.ERROR, x)) == y
    assert server.storage.get_command(A, x) == first
    assert offered(device.report(Status.ACKNOWLEDGED, y)) is None


def test_a_result_for_another_devices_command_changes_nothing_for_it(server, device):
    other = SignedDevice(server, B)
    other.enroll()
    admin = AdminClient(server)
    mine = admin.enqueue([A], "InstallProfile")[A]
    assert offered(device.report(Status.IDLE)) == mine
    theirs = admin.enqueue([B], "ProfileList")[B]
    before = snapshot(server, A)
    for status in (Status.ACKNOWLEDGED, Status.ERROR, Status.NOT_NOW):
        assert offered(other.report(status, mine)) == theirs  # B just gets its own next command
    assert snapshot(server, A) == before
    assert status_of(server, A, mine) is CommandStatus.SENT


def test_unknown_command_uuid_gets_the_next_command(server, device, caplog):
    x = AdminClient(server).enqueue([A], "ProfileList")[A]
    with caplog.at_level(logging.WARNING, logger="mdm_server.service"):
        assert offered(device.report(Status.ACKNOWLEDGED, "no-such-command")) == x
    assert "no-such-command" in caplog.text and "unknown_command" in caplog.text
    assert offered(device.report(Status.ERROR, "no-such-command-either")) == x
    assert status_of(server, A, x) is CommandStatus.SENT
    assert offered(device.report(Status.ACKNOWLEDGED, x)) is None


def test_a_command_past_its_timeout_times_out_and_the_next_one_comes(server, device):
    admin = AdminClient(server)
    x = admin.enqueue([A], "InstallProfile", priority=1, timeout=60)[A]
    y = admin.enqueue([A], "ProfileList")[A]
    assert offered(device.report(Status.IDLE)) == x
    server.clock.advance(30)
    assert offered(device.report(Status.IDLE)) == x  # unanswered but within its timeout: sent again
    server.clock.advance(60)
    assert offered(device.report(Status.IDLE)) == y
    assert status_of(server, A, x) is CommandStatus.TIMED_OUT
    status, body = admin.get(f"/api/v1/devices/{A}/commands")
    assert [c["status"] for c in body["items"]] == ["TimedOut", "Sent"]


def test_re_authenticate_clears_the_queue(server, device):
    admin = AdminClient(server)
    admin.enqueue([A], "ProfileList")
    admin.enqueue([A], "CertificateList")
    assert device.authenticate().status == 200
    status, body = admin.get(f"/api/v1/devices/{A}/commands")
    assert (status, body["items"]) == (200, [])
    assert device.token_update().status == 200
    assert offered(device.report(Status.IDLE)) is None


# A state machine over sessions, on the pure service (fast: no signatures, no HTTP) ----------------------


class QueueSessions(RuleBasedStateMachine):
    """Random enqueues and device sessions against a model: priority, FIFO, NotNow skips, retry pushes."""

    @initialize()
    def start(self):
        self.now = 1000.0
        self.storage = MemoryStorage()
        self.wakes: list[tuple[str, float]] = []
        self.service = MDMService(self.storage, topic=TOPIC, now=lambda: self.now,
                                  schedule_wake=lambda d, delay: self.wakes.append((d, delay)))
        self.identity = DeviceIdentity("ab" * 32)
        self.storage.authenticate(A, {}, TOPIC, self.identity.cert_sha256, now=self.now)
        self.storage.token_update(A, b"t" * 32, "magic", now=self.now)
        self.pending: dict[str, tuple[int, int]] = {}  # uuid -> (priority, order)
        self.skipped: set[str] = set()
        self.current: str | None = None
        self.finished: list[str] = []
        self.count = 0

    def expected(self) -> str | None:
        eligible = [u for u in self.pending if u not in self.skipped]
        return min(eligible, key=lambda u: (-self.pending[u][0], self.pending[u][1])) if eligible else None

    def send(self, status: Status, uuid: str | None = None) -> str | None:
        body = encode_report(CommandReport(status, udid=A, command_uuid=uuid))
        response = self.service.handle_command_report(self.identity, body)
        assert response.status == 200, response.reason
        command = decode_server_response(response.body)
        return None if command is None else command.command_uuid

    @rule(priority=st.integers(-2, 2))
    def enqueue(self, priority):
        uuid = f"cmd-{self.count}"
        payload = encode_command(Command("ProfileList", {}, uuid))
        self.storage.enqueue([A], NewCommand(uuid, "ProfileList", payload), now=self.now, priority=priority)
        self.pending[uuid] = (priority, self.count)
        self.count += 1

    @rule()
    def idle(self):
        self.skipped = set()
        self.current = self.send(Status.IDLE)
        assert self.current == self.expected()

    @precondition(lambda self: self.current is not None)
    @rule(status=st.sampled_from([Status.ACKNOWLEDGED, Status.ERROR, Status.COMMAND_FORMAT_ERROR,
                                  Status.NOT_NOW]))
    def answer(self, status):
        uuid, wakes = self.current, len(self.wakes)
        if status is Status.NOT_NOW:
            self.skipped.add(uuid)
        else:
            del self.pending[uuid]
            self.finished.append(uuid)
        self.current = self.send(status, uuid)
        assert self.current == self.expected()
        # A push is due only when the session ends with NotNow'd commands and NotNow was not the last word.
        should_wake = self.current is None and bool(self.skipped) and status is not Status.NOT_NOW
        assert self.wakes[wakes:] == ([(A, DEFAULT_NOT_NOW_RETRY)] if should_wake else [])

    @precondition(lambda self: self.current is not None and self.finished)
    @rule(data=st.data())
    def stray_report(self, data):
        uuid = data.draw(st.sampled_from(self.finished + ["unknown-uuid"]))
        self.current = self.send(Status.ACKNOWLEDGED, uuid)
        assert self.current == self.expected()

    @rule()
    def time_passes(self):
        self.now += 3600  # no timeouts here: commands are queued without one

    @invariant()
    def storage_agrees(self):
        if not hasattr(self, "storage"):
            return
        pending = {c.command_uuid for c in self.storage.list_commands(A) if c.pending}
        assert pending == set(self.pending)


QueueSessions.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_queue_sessions = QueueSessions.TestCase
