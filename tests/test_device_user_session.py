"""Shared iPad user sessions on the simulated device, against the real server: the user's TokenUpdate carries the
user's own token and PushMagic, and a push to the user's token brings the user's Idle to the user's channel."""

from __future__ import annotations

import pytest
from server_kit import make_server

from device_sim import effects as fx
from device_sim.facts import DeviceKind, make_facts
from device_sim.machine import DeviceMachine, Phase
from device_sim.memory_http import MemoryHTTP
from device_sim.runner import DeviceRunner, InProcessPush
from device_sim.transport import MemoryTransport
from mdm_protocol.checkin import SHARED_IPAD_USER_ID, TokenUpdate, decode_checkin
from mdm_protocol.commands import device_information
from mdm_protocol.report import decode_report, encode_command
from mdm_server.push.interface import PushRequest
from mdm_server.storage import NewCommand
from mdm_world.world import presented_chain

ALICE = "alice@school.example"


def _enrolled(server, kind: DeviceKind):
    clock = server.clock  # one clock for the device, the server and APNs
    machine = DeviceMachine(make_facts(1, 0, "17.5", kind), seed=1)
    transport = MemoryTransport(server.http, clock, presented_chain(server.tls))
    runner = DeviceRunner(machine, clock=clock, transport=transport, push=InProcessPush(server.apns))
    sent: list[fx.SendRequest] = []
    original = runner.perform
    runner.perform = lambda effects: (sent.extend(e for e in effects if isinstance(e, fx.SendRequest)),
                                      original(effects))[1]  # fmt: skip
    response = MemoryHTTP(server.site).request("GET", "/mdm/enroll?token=" + server.state.enroll_token)
    runner.install_enrollment(response.body)
    clock.advance(5)
    assert machine.phase is Phase.ENROLLED
    return machine, runner, sent


@pytest.fixture
def server(tmp_path):
    return make_server(tmp_path)


def test_a_user_signs_in_with_their_own_token_and_push_magic(server):
    machine, runner, sent = _enrolled(server, DeviceKind.SHARED_IPAD)
    runner.sign_in_user(ALICE)
    server.clock.advance(5)
    message = decode_checkin(sent[-1].body)
    assert isinstance(message, TokenUpdate) and message.user_id == SHARED_IPAD_USER_ID
    assert message.user_short_name == ALICE and message.udid == machine.facts.udid
    assert (message.token, message.push_magic) != (machine.push_token, machine.push_magic)
    device = server.storage.get_device(machine.facts.udid)
    assert (device.push_token, device.push_magic) == (machine.push_token, machine.push_magic)
    assert device.facts["IsMultiUser"] is True
    (channel,) = server.storage.list_user_channels(machine.facts.udid)
    assert (channel.user_id, channel.push_token, channel.push_magic) == (ALICE, message.token, message.push_magic)


def test_a_push_to_the_user_brings_the_user_idle_and_never_the_device_commands(server):
    machine, runner, sent = _enrolled(server, DeviceKind.SHARED_IPAD)
    runner.sign_in_user(ALICE)
    server.clock.advance(5)
    udid = machine.facts.udid
    command = device_information(["DeviceName"])
    server.storage.enqueue([udid], _new(command), now=server.clock.seconds())
    user = machine.user
    assert server.apns.push(PushRequest(user.push_token, user.push_magic, server.state.topic)).accepted
    server.clock.advance(60)
    report = decode_report(sent[-1].body)
    assert sent[-1].message == "UserIdle" and report.extra["UserShortName"] == ALICE
    assert report.extra["UserID"] == SHARED_IPAD_USER_ID
    assert server.storage.get_command(udid, command.command_uuid).status.value == "Queued"  # the device's, kept


def test_only_a_shared_ipad_has_users(server):
    machine, runner, sent = _enrolled(server, DeviceKind.IPAD)
    count = len(sent)
    runner.sign_in_user(ALICE)
    server.clock.advance(5)
    assert len(sent) == count and machine.user is None
    assert server.storage.list_user_channels(machine.facts.udid) == ()


def test_a_user_enrollment_device_never_sends_enrollment_user_id(server):
    """Apple's schema: EnrollmentUserID is macOS only (iOS: n/a); an iOS User Enrollment uses EnrollmentID."""
    machine, runner, sent = _enrolled(server, DeviceKind.USER_ENROLLMENT)
    checkins = [decode_checkin(request.body) for request in sent if request.content_type == fx.CHECKIN_TYPE]
    assert [m.message_type for m in checkins] == ["Authenticate", "TokenUpdate"]
    for message in checkins:
        assert "EnrollmentUserID" not in message.to_plist() and message.enrollment_id and message.udid is None


def _new(command) -> NewCommand:
    return NewCommand(command.command_uuid, command.request_type, encode_command(command))
