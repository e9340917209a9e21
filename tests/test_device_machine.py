"""The sans-IO device machine: whole effect lists for enrollment, sessions, NotNow, retries, duplicates, failures.

A fake signer makes every effect exact (as magic-wormhole's test_machines.py does); the default signer is
tested on its own: the machine's `now` is its signing time, and an RSA device repeats its bytes exactly.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from device_sim import effects as fx
from device_sim.answers import device_information as answer_device_information
from device_sim.behaviour import Behaviour
from device_sim.effects import WakeReason
from device_sim.facts import DeviceKind, make_facts
from device_sim.machine import DeviceMachine, Phase
from device_sim.signer import ReusingSigner, sign_request
from mdm_protocol.checkin import Authenticate, CheckOut, TokenUpdate, decode_checkin, encode_checkin
from mdm_protocol.cms import verify_mdm_signature
from mdm_protocol.commands import device_information, install_profile, remove_profile
from mdm_protocol.errors import ErrorChainItem
from mdm_protocol.report import Command, CommandReport, Status, decode_report, encode_command, encode_report
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import build_enrollment
from mdm_world.roots import root_profile

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T0 = NOW.timestamp()
TOPIC = "com.apple.mgmt.External.0c4f3f0e-9a7e-4f43-8d2b-3b0a4f1e2d3c"
SERVER = "https://mdm.example.com/mdm/connect"
CHECKIN = "https://mdm.example.com/mdm/checkin"


class FakeSigner:
    """Deterministic signatures naming what was signed, by whom and when; every call is kept."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str, float, bool]] = []

    def __call__(self, body, identity, now, recurring) -> str:
        self.calls.append((body, identity.payload_uuid, now, recurring))
        return signature(body, now)


def signature(body: bytes, now: float) -> str:
    return f"signed {hashlib.sha256(body).hexdigest()[:16]} at {now!r}"


@pytest.fixture(scope="module")
def authority():
    return CertificateAuthority.create("test CA", now=NOW)


def _profile(authority, url="https://mdm.example.com", key_type="ec"):
    return build_enrollment(authority, server_url=url, topic=TOPIC, now=NOW, key_type=key_type).profile


def _machine(os_version="17.5", kind=DeviceKind.IPHONE, signer=None, **behaviour):
    return DeviceMachine(make_facts(4, 0, os_version, kind), seed=4, behaviour=Behaviour(**behaviour),
                         signer=signer or FakeSigner())


def _checkin(request_id: int, message, now: float) -> fx.SendRequest:
    body = encode_checkin(message)
    return fx.SendRequest(request_id, CHECKIN, fx.CHECKIN_TYPE, body, signature(body, now), message.message_type)


def _authenticate(machine, request_id=1, now=T0) -> fx.SendRequest:
    facts = machine.facts
    return _checkin(request_id, Authenticate(
        topic=TOPIC, udid=facts.udid, enrollment_id=facts.enrollment_id, os_version=str(facts.os_version),
        build_version=facts.build_version, product_name=facts.product_name,
        serial_number=None if facts.kind is DeviceKind.USER_ENROLLMENT else facts.serial_number), now)


def _token_update(machine, request_id=2, now=T0) -> fx.SendRequest:
    facts = machine.facts
    return _checkin(request_id, TokenUpdate(topic=TOPIC, udid=facts.udid, enrollment_id=facts.enrollment_id,
                                            token=machine.push_token, push_magic=machine.push_magic), now)


def _report(machine, request_id: int, now: float, status=Status.IDLE, command=None, *, message=None,
            **fields) -> fx.SendRequest:
    """The SendRequest of a report: Idle by default, else the answer to `command` with `status`."""
    facts = machine.facts
    uuid = command.command_uuid if command else None
    body = encode_report(CommandReport(status, udid=facts.udid, enrollment_id=facts.enrollment_id,
                                       command_uuid=uuid, **fields))
    message = message or ("Idle" if command is None else f"{command.request_type}:{status.value}")
    return fx.SendRequest(request_id, SERVER, fx.CONNECT_TYPE, body, signature(body, now), message)


def _handled(command: Command, status: Status, chain=()) -> fx.CommandHandled:
    return fx.CommandHandled(command.request_type, command.command_uuid, status, chain)


def _enrolled(authority, **kw):
    machine = _machine(**kw)
    machine.install_enrollment(_profile(authority), T0)
    machine.response(1, 200, b"", T0)
    assert machine.response(2, 200, b"", T0) == [fx.Enrolled(machine.facts.udid)]
    return machine


# Enrollment -----------------------------------------------------------------------------------------------


def test_enrollment_sends_signed_authenticate_then_token_update(authority):
    machine = _machine()
    signer = machine.signer
    assert machine.install_enrollment(_profile(authority), T0) == [_authenticate(machine)]
    assert machine.phase is Phase.AUTHENTICATING
    identity = machine.enrollment.identity_uuid
    assert signer.calls == [(_authenticate(machine).body, identity, T0, False)]  # signed by the MDM identity
    assert decode_checkin(_authenticate(machine).body).os_version == "17.5"

    assert machine.response(1, 200, b"", T0 + 1) == [fx.RegisterPush(machine.push_token, TOPIC),
                                                     _token_update(machine, now=T0 + 1)]
    assert machine.phase is Phase.TOKEN_UPDATING
    assert machine.response(2, 200, b"", T0 + 2) == [fx.Enrolled(machine.facts.udid)]
    assert machine.phase is Phase.ENROLLED


def test_user_enrollment_reports_enrollment_id_and_no_serial(authority):
    machine = _machine(kind=DeviceKind.USER_ENROLLMENT)
    [auth] = machine.install_enrollment(_profile(authority), T0)
    assert auth == _authenticate(machine)
    message = decode_checkin(auth.body)
    assert message.udid is None and message.enrollment_id == machine.facts.enrollment_id
    assert message.serial_number is None


def test_untrusted_server_fails_the_mdm_payload_and_rolls_back(authority):
    machine = _machine()
    machine.install_enrollment(_profile(authority), T0)
    failed = fx.EnrollmentFailed((
        ErrorChainItem(4001, "MCInstallationErrorDomain", "The payload “mdmsim MDM” could not be installed.",
                       "The payload “mdmsim MDM” could not be installed."),
        ErrorChainItem(23002, "MCHTTPTransactionErrorDomain",
                       f"The server certificate for “{CHECKIN}” is invalid.",
                       f"The server certificate for “{CHECKIN}” is invalid."),
    ), "untrusted server certificate")
    assert machine.transport_failed(1, "certificate verify failed", T0, untrusted=True) == [failed]
    assert machine.phase is Phase.FAILED and not machine.profiles.installed()
    assert machine.push(T0) == [fx.Log("push while failed: ignored")]


def _gave_up(message: str, reason: str) -> fx.EnrollmentFailed:
    text = "The payload “mdmsim MDM” could not be installed."
    return fx.EnrollmentFailed((ErrorChainItem(4001, "MCInstallationErrorDomain", text, text),),
                               f"{message} gave up after {reason}")


def test_authenticate_whose_retries_run_out_fails_and_rolls_back(authority):
    machine = _machine(retry_delays=(5.0,))
    machine.install_enrollment(_profile(authority), T0)
    assert machine.response(1, 500, b"", T0) == [fx.Log("Authenticate failed (HTTP 500); retry in 5s"),
                                                 fx.WakeAt(T0 + 5, WakeReason.RETRY)]
    assert machine.timer(T0 + 5) == [fx.SendRequest(2, *_fields(_authenticate(machine)))]
    assert machine.response(2, 500, b"", T0 + 5) == [_gave_up("Authenticate", "HTTP 500")]
    assert machine.phase is Phase.FAILED and not machine.profiles.installed()
    assert machine.push(T0 + 6) == [fx.Log("push while failed: ignored")]
    assert machine.timer(T0 + 600) == []  # nothing left to retry


def test_a_failed_enrollment_accepts_a_new_enrollment_profile(authority):
    machine = _machine(retry_delays=())
    machine.install_enrollment(_profile(authority), T0)
    assert machine.transport_failed(1, "connection refused", T0) == [
        _gave_up("Authenticate", "connection refused")]
    assert machine.install_enrollment(_profile(authority), T0 + 10) == [_authenticate(machine, 2, T0 + 10)]
    assert machine.phase is Phase.AUTHENTICATING and len(machine.profiles.installed()) == 1
    machine.response(2, 200, b"", T0 + 11)
    assert machine.response(3, 200, b"", T0 + 12) == [fx.Enrolled(machine.facts.udid)]


def test_token_update_whose_retries_run_out_fails_the_enrollment_too(authority):
    machine = _machine(retry_delays=())
    machine.install_enrollment(_profile(authority), T0)
    machine.response(1, 200, b"", T0)
    assert machine.response(2, 502, b"", T0) == [_gave_up("TokenUpdate", "HTTP 502")]
    assert machine.phase is Phase.FAILED and not machine.profiles.installed()


def test_an_enrolling_device_ignores_another_enrollment_profile(authority):
    machine = _machine()
    machine.install_enrollment(_profile(authority), T0)
    assert machine.install_enrollment(_profile(authority), T0) == [
        fx.Log("already authenticating; enrollment profile ignored")]


def test_removing_the_mdm_profile_checks_out_at_best_effort(authority):
    machine = _enrolled(authority, retry_delays=())
    facts = machine.facts
    check_out = _checkin(3, CheckOut(topic=TOPIC, udid=facts.udid, enrollment_id=facts.enrollment_id), T0 + 1)
    # Its push token goes with the enrollment: APNs answers 410 Unregistered for it from now on.
    assert machine.remove_mdm_profile(T0 + 1) == [check_out, fx.UnregisterPush(machine.push_token)]
    assert machine.phase is Phase.UNENROLLED and not machine.profiles.installed()
    assert machine.response(3, 500, b"", T0 + 1) == [fx.Log("CheckOut gave up after HTTP 500")]
    assert machine.phase is Phase.UNENROLLED


# Command sessions -----------------------------------------------------------------------------------------


def test_session_idle_command_report_then_end(authority):
    machine = _enrolled(authority)
    assert machine.push(T0 + 10) == [_report(machine, 3, T0 + 10)]
    command = device_information(["OSVersion", "SerialNumber"])
    serial = machine.facts.serial_number
    answer = {"QueryResponses": {"OSVersion": "17.5", "SerialNumber": serial}}
    assert machine.response(3, 200, encode_command(command), T0 + 11) == [
        _handled(command, Status.ACKNOWLEDGED), _report(machine, 4, T0 + 11, Status.ACKNOWLEDGED, command,
                                                       extra=answer)]
    assert decode_report(_report(machine, 4, T0, Status.ACKNOWLEDGED, command, extra=answer).body).extra == answer
    assert machine.response(4, 200, b"", T0 + 12) == [fx.SessionEnded(1, "done")]


def test_push_during_a_session_starts_another_when_it_ends(authority):
    machine = _enrolled(authority)
    assert machine.push(T0) == [_report(machine, 3, T0)]
    assert machine.push(T0 + 1) == []
    assert machine.response(3, 200, b"", T0 + 2) == [fx.SessionEnded(0, "done"), _report(machine, 4, T0 + 2)]


def test_install_profile_acknowledged_and_remove_of_absent_profile_is_12075(authority):
    machine = _enrolled(authority)
    machine.push(T0)
    install = install_profile(root_profile("com.example.root"))
    assert machine.response(3, 200, encode_command(install), T0) == [
        _handled(install, Status.ACKNOWLEDGED), _report(machine, 4, T0, Status.ACKNOWLEDGED, install)]
    assert "com.example.root" in machine.profiles
    remove = remove_profile("com.example.absent")
    text = "The profile “com.example.absent” is not installed."
    chain = (ErrorChainItem(12075, "MCMDMErrorDomain", text, text),)
    assert machine.response(4, 200, encode_command(remove), T0) == [
        _handled(remove, Status.ERROR, chain), _report(machine, 5, T0, Status.ERROR, remove, error_chain=chain)]


def test_unknown_and_malformed_commands(authority):
    machine = _enrolled(authority, os_version="27.0")  # iOS 27 removed OSUpdateStatus: 12021 as if never heard of
    machine.push(T0)
    unknown = Command("OSUpdateStatus")
    text = "“OSUpdateStatus” is not a valid request type."
    chain = (ErrorChainItem(12021, "MCMDMErrorDomain", text, text),)
    assert machine.response(3, 200, encode_command(unknown), T0) == [
        _handled(unknown, Status.ERROR, chain), _report(machine, 4, T0, Status.ERROR, unknown, error_chain=chain)]
    malformed = Command("RemoveProfile")
    assert machine.response(4, 200, encode_command(malformed), T0) == [
        _handled(malformed, Status.COMMAND_FORMAT_ERROR),
        _report(machine, 5, T0, Status.COMMAND_FORMAT_ERROR, malformed)]


def test_an_unreadable_command_ends_the_session(authority):
    machine = _enrolled(authority)
    machine.push(T0)
    [ended] = machine.response(3, 200, b"<not a plist", T0)
    assert isinstance(ended, fx.SessionEnded) and ended.commands == 0
    assert ended.reason.startswith("unreadable command: ")


def test_not_now_before_first_unlock_then_self_repoll(authority):
    machine = _enrolled(authority, first_unlocked=False)
    machine.push(T0)
    install = install_profile(root_profile("com.example.root"))
    assert machine.response(3, 200, encode_command(install), T0) == [
        _handled(install, Status.NOT_NOW), _report(machine, 4, T0, Status.NOT_NOW, install)]
    assert machine.response(4, 200, b"", T0 + 1) == [fx.SessionEnded(1, "done"),
                                                     fx.WakeAt(T0 + 61, WakeReason.NOT_NOW_REPOLL)]
    assert machine.timer(T0 + 60) == []
    assert machine.timer(T0 + 61) == [_report(machine, 5, T0 + 61)]


def test_device_information_never_not_now_even_when_locked(authority):
    machine = _enrolled(authority, first_unlocked=False)
    machine.push(T0)
    command = device_information(["UDID"])
    answer = {"QueryResponses": {"UDID": machine.facts.udid}}
    assert machine.response(3, 200, encode_command(command), T0) == [
        _handled(command, Status.ACKNOWLEDGED), _report(machine, 4, T0, Status.ACKNOWLEDGED, command, extra=answer)]


def _fields(request: fx.SendRequest) -> tuple:
    """Everything of a request but its id: what a retry sends again."""
    return request.url, request.content_type, request.body, request.signature, request.message


def test_non_2xx_is_retried_with_backoff_then_given_up(authority):
    machine = _enrolled(authority, retry_delays=(5.0, 30.0))
    idle = _report(machine, 3, T0)
    assert machine.push(T0) == [idle]
    assert machine.response(3, 500, b"", T0) == [fx.Log("Idle failed (HTTP 500); retry in 5s"),
                                                 fx.WakeAt(T0 + 5, WakeReason.RETRY)]
    assert machine.timer(T0 + 5) == [fx.SendRequest(4, *_fields(idle))]  # the same bytes and signature
    assert machine.response(3, 200, b"", T0) == [fx.Log("response to unknown request 3 ignored")]
    assert machine.transport_failed(4, "connection lost", T0 + 5) == [
        fx.Log("Idle failed (connection lost); retry in 30s"), fx.WakeAt(T0 + 35, WakeReason.RETRY)]
    assert machine.timer(T0 + 35) == [fx.SendRequest(5, *_fields(idle))]
    assert machine.response(5, 503, b"", T0 + 35) == [fx.SessionEnded(0, "gave up after HTTP 503")]


def test_duplicate_status_is_sent_twice(authority):
    machine = _enrolled(authority, duplicate_rate=1.0)
    machine.push(T0)
    command = device_information(["UDID"])
    answer = {"QueryResponses": {"UDID": machine.facts.udid}}
    first = _report(machine, 4, T0, Status.ACKNOWLEDGED, command, extra=answer)
    assert machine.response(3, 200, encode_command(command), T0) == [_handled(command, Status.ACKNOWLEDGED), first]
    assert machine.response(4, 200, b"", T0) == [fx.SendRequest(5, *_fields(first))]
    assert machine.response(5, 200, b"", T0) == [fx.SessionEnded(1, "done")]


# Signing ----------------------------------------------------------------------------------------------------


def _run(machine, profile: bytes) -> list[fx.Effect]:
    """One enrollment and one session with a command, at fixed times: everything the machine said."""
    command = device_information(["OSVersion"], command_uuid="0D1E2F30-4142-4344-8546-474849505152")
    return [*machine.install_enrollment(profile, T0), *machine.response(1, 200, b"", T0 + 1),
            *machine.response(2, 200, b"", T0 + 2), *machine.push(T0 + 3),
            *machine.response(3, 200, encode_command(command), T0 + 4), *machine.response(4, 200, b"", T0 + 5)]


def test_same_inputs_and_times_give_the_same_bytes_with_the_default_signer_for_rsa(authority):
    profile = _profile(authority, key_type="rsa")  # PKCS#1 v1.5 signatures are deterministic; ECDSA's are not
    first, second = (_run(_machine(signer=sign_request), profile) for _ in range(2))
    assert first == second and sum(isinstance(e, fx.SendRequest) for e in first) == 4


def test_the_default_signer_signs_with_the_mdm_identity_at_the_machines_now(authority):
    machine = _machine(signer=sign_request)
    [auth] = machine.install_enrollment(_profile(authority), T0 + 0.5)  # virtual time: whole seconds kept
    info = verify_mdm_signature(auth.signature, auth.body)
    identity = machine.profiles.keychain.identity(machine.enrollment.identity_uuid)
    assert info.signer == identity.certificate and info.signing_time == NOW


def test_nothing_reads_the_wall_clock_while_the_machine_runs(authority, monkeypatch):
    profile = _profile(authority, key_type="rsa")

    def wall_clock() -> float:
        raise AssertionError("the machine read the wall clock")

    monkeypatch.setattr(time, "time", wall_clock)
    assert sum(isinstance(e, fx.SendRequest) for e in _run(_machine(signer=sign_request), profile)) == 4


def test_the_machine_and_its_ports_import_no_twisted():
    probe = ("import sys, device_sim.machine, device_sim.signer, device_sim.behaviour, device_sim.effects; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_a_reusing_signer_signs_the_idle_report_once_per_identity(authority):
    fake = FakeSigner()
    machine = _machine(signer=ReusingSigner(fake))
    _run(machine, _profile(authority))
    idle = _report(machine, 3, T0 + 3)
    assert machine.push(T0 + 6) == [fx.SendRequest(5, *_fields(idle))]  # signed at T0 + 3, as the first Idle
    assert machine.response(5, 200, b"", T0 + 7) == [fx.SessionEnded(0, "done")]
    assert [(call[2], call[3]) for call in fake.calls] == [(T0, False), (T0 + 1, False), (T0 + 3, True),
                                                           (T0 + 4, False)]  # the second Idle: no call
    machine.remove_mdm_profile(T0 + 8)
    machine.install_enrollment(_profile(authority), T0 + 9)  # a new identity, the same Idle body
    machine.response(7, 200, b"", T0 + 9)
    machine.response(8, 200, b"", T0 + 9)
    assert machine.push(T0 + 10) == [_report(machine, 9, T0 + 10)]  # signed afresh, by the new identity
    assert fake.calls[-1] == (idle.body, machine.enrollment.identity_uuid, T0 + 10, True)


@pytest.mark.parametrize("kind, version, expected", [
    ("shared-ipad", "17.5", True), ("ipad", "17.5", False), ("ipad", "9.2", None), ("iphone", "17.5", None),
])
def test_device_information_tells_a_shared_ipad_by_is_multi_user(kind, version, expected):
    facts = make_facts(1, 0, version, DeviceKind(kind))
    responses = answer_device_information(facts, ["IsMultiUser", "OSVersion"]).extra
    assert responses["QueryResponses"].get("IsMultiUser") is expected
    assert responses["QueryResponses"]["OSVersion"] == version
