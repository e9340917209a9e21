"""The sans-IO device machine: exact effect lists for enrollment, sessions, NotNow, retries, duplicates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from device_sim import effects as fx
from device_sim.answers import device_information as answer_device_information
from device_sim.facts import DeviceKind, make_facts
from device_sim.machine import Behaviour, DeviceMachine, Phase
from mdm_protocol.checkin import Authenticate, TokenUpdate, decode_checkin
from mdm_protocol.cms import verify_mdm_signature
from mdm_protocol.commands import device_information, install_profile, remove_profile
from mdm_protocol.report import Command, Status, decode_report, encode_command
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import build_enrollment
from scenarios._support import root_profile

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T0 = NOW.timestamp()
TOPIC = "com.apple.mgmt.External.0c4f3f0e-9a7e-4f43-8d2b-3b0a4f1e2d3c"


@pytest.fixture(scope="module")
def authority():
    return CertificateAuthority.create("test CA", now=NOW)


def _profile(authority, url="https://mdm.example.com"):
    return build_enrollment(authority, server_url=url, topic=TOPIC, now=NOW).profile


def _machine(os_version="17.5", kind=DeviceKind.IPHONE, **behaviour):
    return DeviceMachine(make_facts(4, 0, os_version, kind), seed=4, behaviour=Behaviour(**behaviour))


def _requests(effects):
    return [e for e in effects if isinstance(e, fx.SendRequest)]


def _enrolled(authority, **kw):
    machine = _machine(**kw)
    [auth] = _requests(machine.install_enrollment(_profile(authority), T0))
    effects = machine.response(auth.request_id, 200, b"", T0)
    [token] = _requests(effects)
    machine.response(token.request_id, 200, b"", T0)
    return machine


def test_enrollment_sends_signed_authenticate_then_token_update(authority):
    machine = _machine()
    effects = machine.install_enrollment(_profile(authority), T0)
    [auth] = _requests(effects)
    assert (auth.url, auth.content_type, auth.message) == (
        "https://mdm.example.com/mdm/checkin", fx.CHECKIN_TYPE, "Authenticate")
    message = decode_checkin(auth.body)
    assert isinstance(message, Authenticate) and message.udid == machine.facts.udid
    assert message.os_version == "17.5" and message.topic == TOPIC
    assert verify_mdm_signature(auth.signature, auth.body).signer is not None
    assert machine.phase is Phase.AUTHENTICATING

    effects = machine.response(auth.request_id, 200, b"", T0 + 1)
    assert effects[0] == fx.RegisterPush(machine.push_token, TOPIC)
    token = decode_checkin(effects[1].body)
    assert isinstance(token, TokenUpdate) and token.push_magic == machine.push_magic
    assert machine.response(effects[1].request_id, 200, b"", T0 + 2) == [fx.Enrolled(machine.facts.udid)]
    assert machine.phase is Phase.ENROLLED


def test_user_enrollment_reports_enrollment_id_and_no_serial(authority):
    machine = _machine(kind=DeviceKind.USER_ENROLLMENT)
    [auth] = _requests(machine.install_enrollment(_profile(authority), T0))
    message = decode_checkin(auth.body)
    assert message.udid is None and message.enrollment_id == machine.facts.enrollment_id
    assert message.serial_number is None


def test_untrusted_server_fails_the_mdm_payload_and_rolls_back(authority):
    machine = _machine()
    [auth] = _requests(machine.install_enrollment(_profile(authority), T0))
    effects = machine.transport_failed(auth.request_id, "certificate verify failed", T0, untrusted=True)
    failed = [e for e in effects if isinstance(e, fx.EnrollmentFailed)][0]
    assert [(i.domain, i.code) for i in failed.error_chain] == [
        ("MCInstallationErrorDomain", 4001), ("MCHTTPTransactionErrorDomain", 23002)]
    assert machine.phase is Phase.FAILED and not machine.profiles.installed()
    assert machine.push(T0) == [fx.Log("push while failed: ignored")]


def test_session_idle_command_report_then_end(authority):
    machine = _enrolled(authority)
    [idle] = machine.push(T0 + 10)
    assert idle.message == "Idle" and decode_report(idle.body).status is Status.IDLE
    command = device_information(["OSVersion", "SerialNumber"])
    effects = machine.response(idle.request_id, 200, encode_command(command), T0 + 11)
    assert isinstance(effects[0], fx.CommandHandled) and effects[0].status == "Acknowledged"
    report = decode_report(effects[-1].body)
    assert report.command_uuid == command.command_uuid
    serial = machine.facts.serial_number
    assert report.extra["QueryResponses"] == {"OSVersion": "17.5", "SerialNumber": serial}
    assert machine.response(effects[-1].request_id, 200, b"", T0 + 12) == [fx.SessionEnded(1, "done")]


def test_push_during_a_session_starts_another_when_it_ends(authority):
    machine = _enrolled(authority)
    [idle] = machine.push(T0)
    assert machine.push(T0 + 1) == []
    effects = machine.response(idle.request_id, 200, b"", T0 + 2)
    assert effects[0] == fx.SessionEnded(0, "done") and effects[1].message == "Idle"


def test_install_profile_acknowledged_and_remove_of_absent_profile_is_12075(authority):
    machine = _enrolled(authority)
    [idle] = machine.push(T0)
    install = install_profile(root_profile("com.example.root"))
    effects = machine.response(idle.request_id, 200, encode_command(install), T0)
    assert [e.status for e in effects if isinstance(e, fx.CommandHandled)] == ["Acknowledged"]
    assert "com.example.root" in machine.profiles
    remove = remove_profile("com.example.absent")
    effects = machine.response(effects[-1].request_id, 200, encode_command(remove), T0)
    report = decode_report(effects[-1].body)
    assert report.status is Status.ERROR
    assert [(i.code, i.domain, i.localized_description) for i in report.error_chain] == [
        (12075, "MDMErrorDomain", "The profile “com.example.absent” is not installed.")]


def test_unknown_and_malformed_commands(authority):
    machine = _enrolled(authority)
    [idle] = machine.push(T0)
    effects = machine.response(idle.request_id, 200, encode_command(Command("OSUpdateStatus")), T0)
    report = decode_report(effects[-1].body)
    assert report.status is Status.ERROR and report.error_chain[0].code == 12021
    assert report.error_chain[0].localized_description == "“OSUpdateStatus” is not a valid request type."
    effects = machine.response(effects[-1].request_id, 200, encode_command(Command("RemoveProfile")), T0)
    assert decode_report(effects[-1].body).status is Status.COMMAND_FORMAT_ERROR


def test_not_now_before_first_unlock_then_self_repoll(authority):
    machine = _enrolled(authority, first_unlocked=False)
    [idle] = machine.push(T0)
    install = install_profile(root_profile("com.example.root"))
    effects = machine.response(idle.request_id, 200, encode_command(install), T0)
    assert decode_report(effects[-1].body).status is Status.NOT_NOW
    effects = machine.response(effects[-1].request_id, 200, b"", T0 + 1)
    assert effects == [fx.SessionEnded(1, "done"), fx.WakeAt(T0 + 61, "not-now re-poll")]
    assert machine.timer(T0 + 60) == []
    [again] = machine.timer(T0 + 61)
    assert again.message == "Idle"


def test_device_information_never_not_now_even_when_locked(authority):
    machine = _enrolled(authority, first_unlocked=False)
    [idle] = machine.push(T0)
    effects = machine.response(idle.request_id, 200, encode_command(device_information(["UDID"])), T0)
    assert decode_report(effects[-1].body).status is Status.ACKNOWLEDGED


def test_non_2xx_is_retried_with_backoff_then_given_up(authority):
    machine = _enrolled(authority, retry_delays=(5.0, 30.0))
    [idle] = machine.push(T0)
    assert machine.response(idle.request_id, 500, b"", T0)[-1] == fx.WakeAt(T0 + 5, "retry")
    [retry] = machine.timer(T0 + 5)
    assert retry.body == idle.body and retry.request_id != idle.request_id
    stale = fx.Log(f"response to unknown request {idle.request_id} ignored")
    assert machine.response(idle.request_id, 200, b"", T0) == [stale]
    dropped = machine.transport_failed(retry.request_id, "connection lost", T0 + 5)
    assert dropped[-1] == fx.WakeAt(T0 + 35, "retry")
    [last] = machine.timer(T0 + 35)
    effects = machine.response(last.request_id, 503, b"", T0 + 35)
    assert effects == [fx.SessionEnded(0, "gave up after HTTP 503")]


def test_duplicate_status_is_sent_twice(authority):
    machine = _enrolled(authority, duplicate_rate=1.0)
    [idle] = machine.push(T0)
    effects = machine.response(idle.request_id, 200, encode_command(device_information(["UDID"])), T0)
    first = effects[-1]
    [second] = machine.response(first.request_id, 200, b"", T0)
    assert second.body == first.body and second.request_id != first.request_id
    assert machine.response(second.request_id, 200, b"", T0) == [fx.SessionEnded(1, "done")]


@pytest.mark.parametrize("kind, version, expected", [
    ("shared-ipad", "17.5", True), ("ipad", "17.5", False), ("ipad", "9.2", None), ("iphone", "17.5", None),
])
def test_device_information_tells_a_shared_ipad_by_is_multi_user(kind, version, expected):
    facts = make_facts(1, 0, version, DeviceKind(kind))
    responses = answer_device_information(facts, ["IsMultiUser", "OSVersion"]).extra
    assert responses["QueryResponses"].get("IsMultiUser") is expected
    assert responses["QueryResponses"]["OSVersion"] == version
