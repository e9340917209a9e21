"""The check-in channel through the real twisted.web tree: Authenticate, TokenUpdate, CheckOut, refusals.

Corpus messages from real devices are replayed with only their Topic rewritten to this server's.
"""

from __future__ import annotations

import plistlib

import pytest
from kits.corpus import DEVICE_MESSAGES, require
from server_kit import BACKENDS, CHECKIN, CONNECT, AdminClient, SignedDevice, make_server, snapshot

from mdm_protocol.checkin import TokenUpdate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.report import Command, Status, decode_server_response, encode_command
from mdm_server.storage.interface import CommandStatus, EnrollmentState, NewCommand

UDID = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(params=BACKENDS)
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param)


def queue(server, device_id: str, request_type: str = "ProfileList", command_uuid: str | None = None) -> str:
    command = Command(request_type, {}, command_uuid) if command_uuid else Command(request_type, {})
    new = NewCommand(command.command_uuid, request_type, encode_command(command))
    return server.storage.enqueue([device_id], new, now=server.clock.seconds())[device_id]


def pending(server, device_id: str) -> list[str]:
    return [c.command_uuid for c in server.storage.list_commands(device_id) if c.pending]


# Authenticate, TokenUpdate, CheckOut ---------------------------------------------------------------------


def test_authenticate_stores_the_facts_but_the_device_is_not_pushable_yet(server):
    device = SignedDevice(server, UDID)
    response = device.authenticate(imei="35 123456 789012 3")
    assert (response.status, response.body) == (200, b"")
    stored = server.storage.get_device(UDID)
    assert stored.state is EnrollmentState.AUTHENTICATED
    assert not stored.pushable
    assert stored.cert_sha256 == device.cert_sha256
    assert dict(stored.facts) == {
        "UDID": UDID, "OSVersion": "17.5", "BuildVersion": "21F79", "ProductName": "iPhone15,2",
        "SerialNumber": "F2LX0000", "IMEI": "35 123456 789012 3",
    }


def test_authenticate_again_clears_the_old_queue(server):
    device = SignedDevice(server, UDID)
    device.enroll()
    queue(server, UDID)
    queue(server, UDID, "DeviceInformation")
    assert len(pending(server, UDID)) == 2
    assert device.authenticate().status == 200
    assert pending(server, UDID) == []
    stored = server.storage.get_device(UDID)
    assert stored.state is EnrollmentState.AUTHENTICATED and not stored.pushable


def test_token_update_enrolls_and_stores_token_push_magic_and_unlock_token(server):
    device = SignedDevice(server, UDID)
    assert device.authenticate().status == 200
    topic = server.state.topic
    first = TokenUpdate(topic=topic, udid=UDID, token=device.token, push_magic="magic-1",
                        unlock_token=b"unlock")
    assert device.put(encode_checkin(first), CHECKIN).status == 200
    stored = server.storage.get_device(UDID)
    assert stored.state is EnrollmentState.ENROLLED and stored.pushable
    assert (stored.push_token, stored.push_magic, stored.unlock_token) == (device.token, "magic-1", b"unlock")
    # A later TokenUpdate may change PushMagic; without UnlockToken the old one stays (SPEC section 1).
    later = TokenUpdate(topic=topic, udid=UDID, token=b"\x07" * 32, push_magic="magic-2")
    assert device.put(encode_checkin(later), CHECKIN).status == 200
    stored = server.storage.get_device(UDID)
    assert (stored.push_token, stored.push_magic, stored.unlock_token) == (b"\x07" * 32, "magic-2", b"unlock")


def test_a_command_queued_before_token_update_is_pushed_only_after_it(server):
    device = SignedDevice(server, UDID)
    assert device.authenticate().status == 200
    inbox = device.online()
    status, body = AdminClient(server).post("/api/v1/commands", {
        "deviceIds": [UDID], "command": {"RequestType": "ProfileList"},
    })
    assert status == 201
    assert body["results"][UDID]["push"]["pushed"] is False
    assert "not pushable" in body["results"][UDID]["push"]["reason"]
    server.clock.advance(60)
    assert (server.apns.stats.accepted, inbox) == (0, [])
    assert device.token_update().status == 200
    server.clock.advance(0)
    assert server.apns.stats.accepted == 1
    assert inbox == [{"mdm": device.push_magic}]
    assert server.storage.get_push(UDID).outcome.value == "accepted"


def test_token_update_with_an_empty_queue_pushes_nothing(server):
    device = SignedDevice(server, UDID)
    assert device.authenticate().status == 200
    inbox = device.online()
    assert device.token_update().status == 200
    server.clock.advance(3600)
    assert (server.apns.stats.accepted, inbox) == (0, [])


def test_check_out_unenrolls_and_drops_pending_commands(server):
    device = SignedDevice(server, UDID)
    device.enroll()
    queue(server, UDID)
    assert device.check_out().status == 200
    stored = server.storage.get_device(UDID)
    assert stored.state is EnrollmentState.UNENROLLED and not stored.pushable
    assert pending(server, UDID) == []
    # A checked-out device must Authenticate again before it may report.
    assert device.report(Status.IDLE).status == 400


def test_token_update_before_authenticate_is_refused(server):
    device = SignedDevice(server, UDID)
    response = device.token_update()
    assert response.status == 400
    assert b"Authenticate first" in response.body
    assert server.storage.get_device(UDID) is None


def test_wrong_topic_is_refused_without_state_change(server):
    device = SignedDevice(server, UDID)
    device.enroll()
    before = snapshot(server, UDID)
    body = plistlib.dumps({"MessageType": "Authenticate", "Topic": "com.apple.mgmt.External.other",
                           "UDID": UDID, "OSVersion": "18.0"})
    response = device.put(body, CHECKIN)
    assert response.status == 400
    assert b"is not this server's topic" in response.body
    assert snapshot(server, UDID) == before


# Refusals: malformed bodies, wrong types, unknown messages, content types, size --------------------------


def checkin_plist(**keys) -> bytes:
    return plistlib.dumps({k: v for k, v in keys.items() if v is not None})


MALFORMED_CHECKINS = {
    "not a plist": (b"PUT me in, coach", b"malformed check-in"),
    "truncated plist": (checkin_plist(MessageType="Authenticate", UDID=UDID)[:120], b"malformed check-in"),
    "array at the top": (plistlib.dumps(["Authenticate"]), b"must be a dictionary"),
    "UDID is an integer": (
        lambda topic: checkin_plist(MessageType="Authenticate", Topic=topic, UDID=42),
        b"UDID must be a string"),
    "Token is a string": (
        lambda topic: checkin_plist(MessageType="TokenUpdate", Topic=topic, UDID=UDID, Token="abc",
                                    PushMagic="m"), b"Token must be data"),
    "no MessageType": (lambda topic: checkin_plist(Topic=topic, UDID=UDID), b"MessageType"),
    "unknown MessageType": (
        lambda topic: checkin_plist(MessageType="Frobnicate", Topic=topic, UDID=UDID), b"Frobnicate"),
    "macOS-only MessageType": (
        lambda topic: checkin_plist(MessageType="UserAuthenticate", Topic=topic, UDID=UDID), b"macOS only"),
    "message the server does not take": (
        checkin_plist(MessageType="GetToken", TokenServiceType="com.apple.maid", UDID=UDID),
        b"not supported by this server"),
    "DDM status that is not a status report": (
        checkin_plist(MessageType="DeclarativeManagement", Endpoint="status", UDID=UDID, Data=b'{"Errors": 1}'),
        b"DeclarativeManagement status"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_CHECKINS))
def test_malformed_check_ins_are_400_with_a_reason_and_change_nothing(server, case):
    body, reason = MALFORMED_CHECKINS[case]
    body = body(server.state.topic) if callable(body) else body
    device = SignedDevice(server, UDID)
    device.enroll()
    queue(server, UDID)
    before = snapshot(server, UDID)
    response = device.put(body, CHECKIN)
    assert response.status == 400, response
    assert reason in response.body
    assert response.headers["content-type"].startswith("text/plain")
    assert snapshot(server, UDID) == before


MALFORMED_REPORTS = {
    "not a plist": (b"\x00\x01garbage", b"malformed command report"),
    "unknown Status": (checkin_plist(Status="Maybe", UDID=UDID, CommandUUID="x"), b"unknown Status"),
    "no Status": (checkin_plist(UDID=UDID), b"has no Status"),
    "Acknowledged without CommandUUID": (checkin_plist(Status="Acknowledged", UDID=UDID),
                                         b"needs a CommandUUID"),
    "CommandUUID is an integer": (checkin_plist(Status="Acknowledged", UDID=UDID, CommandUUID=7),
                                  b"CommandUUID must be a string"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_REPORTS))
def test_malformed_command_reports_are_400_and_change_nothing(server, case):
    body, reason = MALFORMED_REPORTS[case]
    device = SignedDevice(server, UDID)
    device.enroll()
    queue(server, UDID)
    before = snapshot(server, UDID)
    response = device.put(body, CONNECT, path="/mdm/connect")
    assert response.status == 400
    assert reason in response.body
    assert snapshot(server, UDID) == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", "application/x-apple-aspen-config", None]
)
def test_wrong_content_type_is_400(server, content_type):
    device = SignedDevice(server, UDID)
    body = encode_checkin_authenticate(server)
    headers = {"Mdm-Signature": device_signature(device, body)}
    if content_type:
        headers["Content-Type"] = content_type
    response = device.http.request("PUT", "/mdm/checkin", body, headers)
    assert response.status == 400
    assert b"unsupported Content-Type" in response.body
    assert server.storage.get_device(UDID) is None


def encode_checkin_authenticate(server) -> bytes:
    return checkin_plist(MessageType="Authenticate", Topic=server.state.topic, UDID=UDID)


def device_signature(device: SignedDevice, body: bytes) -> str:
    return mdm_signature(body, device.certificate, device.key)


def test_the_content_type_picks_the_channel_on_either_path(server):
    device = SignedDevice(server, UDID)
    body = encode_checkin_authenticate(server)
    assert device.put(body, CHECKIN, path="/mdm/connect").status == 200
    assert device.put(encode_checkin(TokenUpdate(topic=server.state.topic, udid=UDID, token=device.token,
                                                 push_magic="m")), CHECKIN, path="/mdm/connect").status == 200
    # A check-in body on the command channel is not a command report.
    response = device.put(body, CONNECT, path="/mdm/checkin")
    assert response.status == 400 and b"has no Status" in response.body


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_413_and_changes_nothing(tmp_path, chunked, backend):
    server = make_server(tmp_path, body_limit=16 * 1024, backend=backend)
    device = SignedDevice(server, UDID)
    device.enroll()
    before = snapshot(server, UDID)
    padding = b"<!--" + b"x" * (16 * 1024) + b"-->"
    body = padding + encode_checkin_authenticate(server)
    headers = {"Content-Type": CHECKIN, "Mdm-Signature": device_signature(device, body)}
    response = device.http.request("PUT", "/mdm/checkin", body, headers, chunked=chunked)
    assert response.status == 413
    assert b"exceeds the limit of 16384 bytes" in response.body
    assert snapshot(server, UDID) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_at_the_cap_is_read(tmp_path, chunked):
    server = make_server(tmp_path, body_limit=16 * 1024)
    device = SignedDevice(server, UDID)
    message = encode_checkin_authenticate(server)
    comment = b"<!--" + b"x" * (16 * 1024 - len(message) - 7) + b"-->"
    body = message.replace(b"?>", b"?>" + comment, 1)  # XML allows comments after the declaration
    assert len(body) == 16 * 1024
    headers = {"Content-Type": CHECKIN, "Mdm-Signature": device_signature(device, body)}
    response = device.http.request("PUT", "/mdm/checkin", body, headers, chunked=chunked)
    assert response.status == 200, response.body
    assert server.storage.get_device(UDID).state is EnrollmentState.AUTHENTICATED


def test_the_default_cap_is_one_mebibyte(server):
    device = SignedDevice(server, UDID)
    body = b" " * (1024 * 1024 + 1)
    response = device.http.request("PUT", "/mdm/checkin", body, {"Content-Type": CHECKIN}, chunked=True)
    assert response.status == 413


# Replay of real device messages ---------------------------------------------------------------------------

AUTHENTICATES = ["commandment/Authenticate/IOS-11.3.1.xml", "commandment/Authenticate/IOS-9.x.xml",
                 "nanomdm/Authenticate.1.plist", "nanomdm/Authenticate.2.plist"]
TOKEN_UPDATES = ["nanomdm/TokenUpdate.1.plist", "nanomdm/TokenUpdate.2.plist"]
CHECK_OUTS = ["commandment/CheckOut/iOS-11.3.1.xml"]
REPORTS = ["commandment/DeviceInformation/iOS-11.3.1.xml", "nanomdm/DeviceInformation.1.plist",
           "commandment/Errors/iOS-11.3.1-CommandFormatError.xml",
           "commandment/Errors/iOS-11.3.1-RemoveProfile-Unmanaged.xml",
           "commandment/Errors/error_invalid_request_type.plist",
           "commandment/Errors/10.13.6-invalid-command.xml"]
# Redacted to <data>Base64=</data>, which no plist parser accepts: a real malformed body.
UNPARSEABLE = ["commandment/TokenUpdate/iOS-11.3.1.xml"]


def corpus(name: str) -> bytes:
    return require(DEVICE_MESSAGES / name).read_bytes()


def with_topic(server, name: str) -> tuple[dict, bytes]:
    """The corpus message with only its Topic replaced by this server's, and its re-encoded bytes."""
    message = plistlib.loads(corpus(name))
    message["Topic"] = server.state.topic
    return message, plistlib.dumps(message)


def test_every_corpus_message_is_replayed():
    root = require(DEVICE_MESSAGES)
    found = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "LICENSE" not in p.name}
    assert found == set(AUTHENTICATES + TOKEN_UPDATES + CHECK_OUTS + REPORTS + UNPARSEABLE)


@pytest.mark.parametrize("name", AUTHENTICATES)
def test_corpus_authenticate_stores_the_device_facts(server, name):
    message, body = with_topic(server, name)
    device = SignedDevice(server, message["UDID"])
    response = device.put(body, CHECKIN)
    assert (response.status, response.body) == (200, b"")
    stored = server.storage.get_device(message["UDID"])
    expected = {k: v for k, v in message.items() if k not in ("MessageType", "Topic")}
    assert dict(stored.facts) == expected
    assert stored.state is EnrollmentState.AUTHENTICATED


@pytest.mark.parametrize("name", TOKEN_UPDATES)
def test_corpus_token_update_stores_token_push_magic_and_unlock_token(server, name):
    message, body = with_topic(server, name)
    device = SignedDevice(server, message["UDID"])
    assert device.authenticate().status == 200
    response = device.put(body, CHECKIN)
    assert (response.status, response.body) == (200, b"")
    stored = server.storage.get_device(message["UDID"])
    assert stored.state is EnrollmentState.ENROLLED
    assert stored.push_token == message["Token"]
    assert stored.push_magic == message["PushMagic"]
    assert stored.unlock_token == message.get("UnlockToken")


@pytest.mark.parametrize("name", CHECK_OUTS)
def test_corpus_check_out_unenrolls(server, name):
    message, body = with_topic(server, name)
    device = SignedDevice(server, message["UDID"])
    device.enroll()
    assert device.put(body, CHECKIN).status == 200
    assert server.storage.get_device(message["UDID"]).state is EnrollmentState.UNENROLLED


@pytest.mark.parametrize("name", UNPARSEABLE)
def test_corpus_body_that_is_not_a_plist_is_refused(server, name):
    device = SignedDevice(server, UDID)
    response = device.put(corpus(name), CHECKIN)
    assert response.status == 400
    assert b"malformed check-in" in response.body
    assert server.storage.get_device(UDID) is None


@pytest.mark.parametrize("name", REPORTS)
def test_corpus_report_for_its_queued_command_is_recorded(server, name):
    body = corpus(name)
    message = plistlib.loads(body)
    device = SignedDevice(server, message["UDID"])
    device.enroll()
    uuid = queue(server, device.udid, "DeviceInformation", message["CommandUUID"])
    response = device.put(body, CONNECT, path="/mdm/connect")
    assert (response.status, response.body) == (200, b"")
    stored = server.storage.get_command(device.udid, uuid)
    assert stored.status is CommandStatus(message["Status"])
    assert stored.result == body


@pytest.mark.parametrize("name", REPORTS)
def test_corpus_report_for_an_unknown_command_gets_the_next_command(server, name):
    body = corpus(name)
    udid = plistlib.loads(body)["UDID"]
    device = SignedDevice(server, udid)
    device.enroll()
    response = device.put(body, CONNECT, path="/mdm/connect")
    assert (response.status, response.body) == (200, b"")  # nothing queued: the session ends
    next_uuid = queue(server, udid, "ProfileList")
    response = device.put(body, CONNECT, path="/mdm/connect")
    assert response.status == 200
    assert decode_server_response(response.body).command_uuid == next_uuid
    assert server.storage.get_command(udid, next_uuid).status is CommandStatus.SENT
