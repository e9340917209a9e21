"""Device identity on every request (Mdm-Signature, chain, binding at Authenticate); the enrollment profile.

Every refusal is a 400 with a reason and leaves storage exactly as it was.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from server_kit import BACKENDS, CHECKIN, CONNECT, MemoryHTTP, SignedDevice, make_server, snapshot

from mdm_protocol.checkin import Authenticate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.profile import parse_profile, validate_profile
from mdm_protocol.profile_signing import unsigned
from mdm_protocol.report import Command, CommandReport, Status, encode_command, encode_report
from mdm_server.ca import CertificateAuthority
from mdm_server.pki import PkiError, load_pkcs12
from mdm_server.storage.interface import EnrollmentState, NewCommand

A = "a" * 40
B = "b" * 40
C = "c" * 40


@pytest.fixture(params=BACKENDS)
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param)


@pytest.fixture
def enrolled(server):
    """Two enrolled devices, each with a queued command."""
    devices = {udid: SignedDevice(server, udid) for udid in (A, B)}
    for udid, device in devices.items():
        device.enroll()
        command = Command("ProfileList")
        new = NewCommand(command.command_uuid, "ProfileList", encode_command(command))
        server.storage.enqueue([udid], new, now=server.clock.seconds())
    return devices


def idle_body(udid: str) -> bytes:
    return encode_report(CommandReport(Status.IDLE, udid=udid))


def assert_refused(server, response, reason: bytes, before) -> None:
    assert response.status == 400, response
    assert reason in response.body, response.body
    assert snapshot(server, A, B, C) == before


# Mdm-Signature ---------------------------------------------------------------------------------------------


def test_missing_signature_is_refused(server, enrolled):
    before = snapshot(server, A, B, C)
    response = enrolled[A].put(idle_body(A), CONNECT, signature="", path="/mdm/connect")
    assert_refused(server, response, b"no Mdm-Signature header", before)


def test_signature_over_another_body_is_refused(server, enrolled):
    device = enrolled[A]
    before = snapshot(server, A, B, C)
    other = mdm_signature(idle_body(A) + b" ", device.certificate, device.key)
    response = device.put(idle_body(A), CONNECT, signature=other, path="/mdm/connect")
    assert_refused(server, response, b"device identity refused", before)


def test_signature_that_is_not_base64_is_refused(server, enrolled):
    before = snapshot(server, A, B, C)
    response = enrolled[A].put(idle_body(A), CONNECT, signature="%%% not base64 %%%", path="/mdm/connect")
    assert_refused(server, response, b"not base64", before)


def test_signature_that_is_base64_of_garbage_is_refused(server, enrolled):
    before = snapshot(server, A, B, C)
    garbage = base64.b64encode(b"\x30\x82\xff\xff" + b"\x00" * 40).decode()
    response = enrolled[A].put(idle_body(A), CONNECT, signature=garbage, path="/mdm/connect")
    assert_refused(server, response, b"device identity refused", before)


def test_identity_from_a_foreign_ca_is_refused(server, enrolled):
    foreign = CertificateAuthority.create("mdmsim CA", now=server.now())  # same name, other key
    certificate, key = foreign.issue_device_identity("intruder", server.now())
    before = snapshot(server, A, B, C)
    intruder = SignedDevice(server, C, certificate=certificate, key=key)
    assert_refused(server, intruder.authenticate(), b"does not chain to a trusted CA", before)
    # Not even for a device whose UDID it knows.
    intruder = SignedDevice(server, A, certificate=certificate, key=key)
    assert_refused(server, intruder.report(Status.IDLE), b"does not chain to a trusted CA", before)


def test_expired_identity_is_refused(server):
    certificate, key = server.ca.issue_device_identity("old device", server.now() - timedelta(days=400))
    before = snapshot(server, A, B, C)
    response = SignedDevice(server, C, certificate=certificate, key=key).authenticate()
    assert_refused(server, response, b"expired", before)


def test_identity_that_expires_after_enrollment_stops_working(server):
    device = SignedDevice(server, A)
    device.enroll()
    assert device.report(Status.IDLE).status == 200  # its chain is now cached
    server.clock.advance(timedelta(days=366).total_seconds())
    before = snapshot(server, A, B, C)
    assert_refused(server, device.report(Status.IDLE), b"is not valid at", before)


# Binding the certificate to the enrollment -----------------------------------------------------------------


@pytest.mark.parametrize("request_kind", ["token_update", "check_out", "idle_report"])
def test_a_device_identity_cannot_speak_for_another_device(server, enrolled, request_kind):
    spoofer = SignedDevice(server, B, certificate=enrolled[A].certificate, key=enrolled[A].key)
    before = snapshot(server, A, B, C)
    send = {"token_update": spoofer.token_update, "check_out": spoofer.check_out,
            "idle_report": lambda: spoofer.report(Status.IDLE)}[request_kind]
    response = send()
    assert_refused(server, response, b"does not belong to device", before)


def test_authenticate_for_another_enrolled_device_with_my_certificate_is_refused(server, enrolled):
    spoofer = SignedDevice(server, B, certificate=enrolled[A].certificate, key=enrolled[A].key)
    before = snapshot(server, A, B, C)
    assert_refused(server, spoofer.authenticate(), b"identity certificate refused", before)


def test_certificate_reused_by_a_new_device_at_authenticate_is_refused(server, enrolled):
    reuser = SignedDevice(server, C, certificate=enrolled[A].certificate, key=enrolled[A].key)
    before = snapshot(server, A, B, C)
    assert_refused(server, reuser.authenticate(), b"identity certificate refused", before)
    assert server.storage.get_device(C) is None


def test_re_enrollment_with_a_new_identity_replaces_the_old_one(server, enrolled):
    old = enrolled[A]
    # An erased device re-enrolls through an enrollment token (here the default one): see test_enrollment_tokens.
    contents = identity_from(fetch_profile(server).body)[2]
    new = SignedDevice(server, A, certificate=contents.certificate, key=contents.private_key)
    assert new.authenticate().status == 200
    assert new.token_update().status == 200
    assert server.storage.get_device(A).cert_sha256 == new.cert_sha256
    assert new.report(Status.IDLE).status == 200
    before = snapshot(server, A, B, C)
    assert_refused(server, old.report(Status.IDLE), b"does not belong to device", before)
    assert_refused(server, old.token_update(), b"does not belong to device", before)
    # The old certificate is free again: another device may not be spoofed with it, but it binds anew.
    assert server.storage.device_for_certificate(old.cert_sha256) is None


# Enrollment profile ---------------------------------------------------------------------------------------


def fetch_profile(server, query: str = "", headers: dict | None = None):
    token = server.state.enroll_token
    path = f"/mdm/enroll?token={token}{query}" if query is not None else "/mdm/enroll"
    return MemoryHTTP(server.site).request("GET", path, headers=headers)


def identity_from(profile_bytes: bytes):
    profile = parse_profile(unsigned(profile_bytes))
    (p12,) = profile.payloads_of_type("com.apple.security.pkcs12")
    return profile, p12, load_pkcs12(p12.content["PayloadContent"], p12.content["Password"])


def test_enrollment_profile_validates_and_its_identity_authenticates(server):
    response = fetch_profile(server)
    assert response.status == 200
    assert response.headers["content-type"] == "application/x-apple-aspen-config"
    assert validate_profile(unsigned(response.body), os_version="17.5").profile.identifier == "com.mdmsim.enrollment"
    profile, p12, contents = identity_from(response.body)
    (mdm,) = profile.payloads_of_type("com.apple.mdm")
    assert mdm.content["Topic"] == server.state.topic
    assert mdm.content["IdentityCertificateUUID"] == p12.uuid
    assert mdm.content["SignMessage"] is True
    assert mdm.content["ServerURL"].endswith("/mdm/connect")
    assert mdm.content["CheckInURL"].endswith("/mdm/checkin")
    (root,) = profile.payloads_of_type("com.apple.security.root")
    assert root.content["PayloadContent"] == server.ca.certificate.public_bytes(Encoding.DER)
    device = SignedDevice(server, C, certificate=contents.certificate, key=contents.private_key)
    device.enroll()
    assert device.report(Status.IDLE).status == 200
    assert server.storage.get_device(C).user_id is None


def test_each_enrollment_issues_a_new_identity(server):
    first = identity_from(fetch_profile(server).body)[2].certificate
    second = identity_from(fetch_profile(server).body)[2].certificate
    assert first.serial_number != second.serial_number


def test_a_wrong_password_does_not_open_the_identity(server):
    _, p12, _ = identity_from(fetch_profile(server).body)
    with pytest.raises(PkiError):
        load_pkcs12(p12.content["PayloadContent"], p12.content["Password"] + "x")


@pytest.mark.parametrize("path", ["/mdm/enroll", "/mdm/enroll?token=wrong", "/mdm/enroll?token="])
def test_enrollment_without_token_or_credentials_is_401(server, path):
    response = MemoryHTTP(server.site).request("GET", path)
    assert response.status == 401
    assert "basic" in response.headers["www-authenticate"].lower()


def test_enrollment_with_admin_credentials_works(server):
    basic = base64.b64encode(f"admin:{server.admin_password}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    response = MemoryHTTP(server.site).request("GET", "/mdm/enroll", headers=headers)
    assert response.status == 200
    identity_from(response.body)
    wrong = base64.b64encode(b"admin:nope").decode()
    assert MemoryHTTP(server.site).request(
        "GET", "/mdm/enroll", headers={"Authorization": f"Basic {wrong}"}
    ).status == 401


def test_enrollment_for_a_user_binds_the_device_at_authenticate(server):
    _, _, contents = identity_from(fetch_profile(server, "&user=alice").body)
    device = SignedDevice(server, C, certificate=contents.certificate, key=contents.private_key)
    assert device.authenticate().status == 200
    stored = server.storage.get_device(C)
    assert stored.user_id == "alice"
    assert stored.state is EnrollmentState.AUTHENTICATED


def test_authenticate_body_is_what_is_signed(server):
    # A signature made over the exact bytes sent is what binds; re-encoding the same message breaks it.
    device = SignedDevice(server, C)
    message = Authenticate(topic=server.state.topic, udid=C)
    body = encode_checkin(message)
    signature = mdm_signature(body, device.certificate, device.key)
    assert device.put(body.replace(b"\n", b"\r\n"), CHECKIN, signature=signature).status == 400
    assert device.put(body, CHECKIN, signature=signature).status == 200


def test_device_identities_are_refused_as_strangers_by_another_server(tmp_path, server):
    other = make_server(tmp_path / "other")
    device = SignedDevice(server, C)
    visitor = SignedDevice(other, C, certificate=device.certificate, key=device.key)
    response = visitor.authenticate()
    assert response.status == 400
    assert other.storage.get_device(C) is None
