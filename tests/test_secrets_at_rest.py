"""Secrets at rest: a delivered S/MIME identity (PKCS#12 and its password) never sits in the database in clear."""

from __future__ import annotations

import base64
import plistlib
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from kits.keychain_pki import certificate, new_key, pki
from kits.keychain_pki import p12 as make_p12
from server_kit import AdminClient, SignedDevice, make_server
from test_enrollment_tokens import device_from, fetch

from mdm_protocol.payloads import configuration_profile, pkcs12_payload
from mdm_protocol.pkcs12_memo import load_pkcs12
from mdm_protocol.plist import decode_plist
from mdm_protocol.profile import encode_profile, parse_profile
from mdm_protocol.profile_signing import unsigned
from mdm_protocol.report import Status, decode_server_response
from mdm_server.admin.device_evidence import gather_evidence
from mdm_server.admin.expected_readiness import Keychain
from mdm_server.admin.secrets_at_rest import KEY_DELIVERED
from mdm_server.command_seal import SEALED
from mdm_server.storage import CommandStatus
from mdm_world.demo_setup import PROFILE_1
from mdm_world.procedure import P12_PASSWORD, Organisation

UDID = "c" * 40


def ok(answer):
    status, body = answer
    assert status in (200, 201), body
    return body


def roll_out(server, *, delete_keys_after_days: int | None = None):
    """Alice enrolls and is sent an Exchange account with her two S/MIME identities: (device, command,
    the secrets it delivered)."""
    admin = AdminClient(server)
    org = Organisation.create("Acme", "acme.test", now=datetime.fromtimestamp(server.clock.seconds(), UTC))
    token = ok(admin.post("/api/v2/enrollment-tokens", {"userId": "alice"}))["token"]
    ok(admin.post("/api/v2/users", {"userId": "alice", "email": "alice@acme.test", "displayName": "Alice"}))
    ids = {}
    for purpose in ("signing", "encryption"):
        ids[purpose] = ok(admin.post("/api/v2/settings", {
            "kind": "user_provided", "name": purpose, "purpose": f"smime_{purpose}",
            "deletePrivateKeysAfterDays": delete_keys_after_days}))["id"]
        org.issue("alice@acme.test", purpose, now=datetime.fromtimestamp(server.clock.seconds(), UTC))
        ok(admin.post("/api/v2/users/alice/certificates", {
            "settingId": ids[purpose], "p12": base64.b64encode(org.p12("alice@acme.test", purpose)).decode(),
            "password": P12_PASSWORD}))
    exchange = ok(admin.post("/api/v2/settings", {"kind": "exchange", "name": "Mail", "host": "mail.acme.test",
                                                  "smime": {**PROFILE_1, "signing_identity": ids["signing"],
                                                            "encryption_identity": ids["encryption"]}}))["id"]
    device: SignedDevice = device_from(server, fetch(server, f"token={token}"), UDID)
    device.enroll()
    ok(admin.post("/api/v2/labels", {"id": "mail", "name": "Mail", "type": "manual", "deviceUuids": [UDID]}))
    assert ok(admin.post("/api/v2/labels/mail/apply", {"settingId": exchange}))["installsQueued"] == 1
    response, secrets = device.report(Status.IDLE), []
    command = decode_server_response(response.body)
    assert command.request_type == "InstallProfile"
    for payload in parse_profile(unsigned(command.keys["Payload"])).payloads_of_type("com.apple.security.pkcs12"):
        secrets += [payload.content["Password"].encode(), payload.content["PayloadContent"]]
    assert secrets, "the rollout delivered no identity: the check below could not fail"
    sealed = server.storage.get_command(UDID, command.command_uuid).payload
    assert sealed.startswith(SEALED)
    return device, command, [*secrets, P12_PASSWORD.encode(), sealed[len(SEALED):]]


def fragments(secret: bytes) -> list[bytes]:
    """Pieces of the secret and of its base64, short enough to sit whole in one database page: SQLite spreads
    a long value over overflow pages, so the value itself never appears in the file in one piece."""
    out = []
    for form in (secret, base64.b64encode(secret)):
        size = min(len(form), 32)
        out += [form[start:start + size] for start in range(0, max(1, len(form) - size + 1), 97)]
    return out


def stored_somewhere(secret: bytes, blobs: list[bytes]) -> bool:
    return any(piece in blob for piece in fragments(secret) for blob in blobs)


def assert_nowhere(secrets: list[bytes], blobs: list[bytes]) -> None:
    for secret in secrets:
        assert not stored_somewhere(secret, blobs), f"{secret[:24]!r}... is still stored"


def sqlite_files(server) -> list[bytes]:
    files = sorted(Path(server.config.data_dir).glob("mdmsim.sqlite3*"))
    assert any(path.name.endswith("-wal") for path in files), "no WAL to look in: the check could not fail"
    return [path.read_bytes() for path in files]


def test_after_a_rollout_the_database_holds_no_clear_pkcs12_or_password(tmp_path):
    server = make_server(tmp_path, in_memory=False)
    admin = AdminClient(server)
    org = Organisation.create("Acme", "acme.test", now=datetime.fromtimestamp(server.clock.seconds(), UTC))
    token = ok(admin.post("/api/v2/enrollment-tokens", {"userId": "alice"}))["token"]
    ok(admin.post("/api/v2/users", {"userId": "alice", "email": "alice@acme.test", "displayName": "Alice"}))
    ids = {}
    for purpose in ("signing", "encryption"):
        ids[purpose] = ok(admin.post("/api/v2/settings", {"kind": "user_provided", "name": purpose,
                                                          "purpose": f"smime_{purpose}"}))["id"]
        org.issue("alice@acme.test", purpose, now=datetime.fromtimestamp(server.clock.seconds(), UTC))
        ok(admin.post("/api/v2/users/alice/certificates", {
            "settingId": ids[purpose], "p12": base64.b64encode(org.p12("alice@acme.test", purpose)).decode(),
            "password": P12_PASSWORD}))
    exchange = ok(admin.post("/api/v2/settings", {"kind": "exchange", "name": "Mail", "host": "mail.acme.test",
                                                  "smime": {**PROFILE_1, "signing_identity": ids["signing"],
                                                            "encryption_identity": ids["encryption"]}}))["id"]


    device: SignedDevice = device_from(server, fetch(server, f"token={token}"), UDID)
    device.enroll()
    ok(admin.post("/api/v2/labels", {"id": "mail", "name": "Mail", "type": "manual", "deviceUuids": [UDID]}))
    assert ok(admin.post("/api/v2/labels/mail/apply", {"settingId": exchange}))["installsQueued"] == 1
    response, secrets = device.report(Status.IDLE), []
    command = decode_server_response(response.body)
    assert command.request_type == "InstallProfile"
    for payload in parse_profile(unsigned(command.keys["Payload"])).payloads_of_type("com.apple.security.pkcs12"):
        secrets += [payload.content["Password"].encode(), payload.content["PayloadContent"]]
    assert secrets, "the rollout delivered no identity: the check below could not fail"
    files = sorted(Path(server.config.data_dir).glob("mdmsim.sqlite3*"))
    readable = [b"".join(path.read_bytes() for path in files)]
    with sqlite3.connect(files[0]) as db:  # undo the plain encodings too: the profile is base64 in the command
        for (payload,) in db.execute("SELECT data FROM payloads"):
            if not payload.startswith(SEALED):
                readable.append(plistlib.loads(payload)["Command"].get("Payload", b""))
    assert SEALED in readable[0]
    for secret in secrets:
        assert not any(secret in blob or base64.b64encode(secret) in blob for blob in readable)
    assert not any(P12_PASSWORD.encode() in blob for blob in readable)  # the upload password neither


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_once_acknowledged_no_copy_of_the_identity_is_stored_sealed_or_clear(tmp_path, backend):
    server = make_server(tmp_path, backend=backend)
    device, command, secrets = roll_out(server)
    blobs = sqlite_files(server) if backend == "sqlite" else postgres_rows(server.storage)
    assert stored_somewhere(secrets[-1], blobs), "the sealed command is not where the check looks"
    assert device.report(Status.ACKNOWLEDGED, command.command_uuid).status == 200
    stored = server.storage.get_command(UDID, command.command_uuid)
    assert stored.status is CommandStatus.ACKNOWLEDGED and b"Acknowledged" in stored.result
    blobs = sqlite_files(server) if backend == "sqlite" else postgres_rows(server.storage)
    assert_nowhere(secrets, blobs)
    # What stays is the redacted command: the certificates, and that the key went to the device.
    (payload,) = [p for p in plistlib.loads(decode_plist(stored.payload)["Command"]["Payload"])["PayloadContent"]
                  if p["PayloadType"] == "com.apple.security.pkcs12"][:1]
    assert payload[KEY_DELIVERED] is True and "Password" not in payload
    assert load_pkcs12(payload["PayloadContent"], None).key is None


def postgres_rows(storage) -> list[bytes]:
    with psycopg.connect(storage.dsn) as db:
        db.execute(f"SET search_path TO {storage.schema}")
        rows = db.execute("SELECT data FROM payloads").fetchall()
        rows += db.execute("SELECT coalesce(redacted, ''), coalesce(result, '') FROM commands").fetchall()
    return [bytes(value) for row in rows for value in row]


def test_readiness_still_sees_the_delivered_identities_once_they_are_redacted(tmp_path):
    server = make_server(tmp_path, in_memory=False)
    device, command, _ = roll_out(server)
    plain = server.admin.command_seal.opened(server.storage.get_command(UDID, command.command_uuid))
    assert device.report(Status.ACKNOWLEDGED, command.command_uuid).status == 200
    redacted = server.storage.get_command(UDID, command.command_uuid)
    before = Keychain(gather_evidence([replace(redacted, payload=plain.payload)]))
    after = Keychain(gather_evidence([redacted]))
    def seen(keychain):
        return sorted((i.where, i.has_private_key, i.certificate.serial_number) for i in keychain.by_uuid.values())

    assert seen(after) == seen(before)
    assert all(identity.has_private_key for identity in after.by_uuid.values()) and after.by_uuid


def test_a_secret_never_acknowledged_goes_with_its_keys_deletion_day(tmp_path):
    server = make_server(tmp_path, in_memory=False)
    device, command, secrets = roll_out(server, delete_keys_after_days=2)
    assert device.report(Status.ERROR, command.command_uuid).status == 200
    assert server.admin.purge_expired_keys() == 0  # not yet: the key may still be sent again
    assert stored_somewhere(secrets[-1], sqlite_files(server))
    server.clock.advance(2 * 86400 + 3600)  # the hourly purge runs on the server's clock
    stored = server.storage.get_command(UDID, command.command_uuid)
    assert stored.status is CommandStatus.ERROR and stored.result is not None  # the answer stays
    assert_nowhere(secrets, sqlite_files(server))


def test_a_raw_install_profile_with_an_identity_is_sealed_and_redacted_too(tmp_path):
    server = make_server(tmp_path, in_memory=False)
    device = SignedDevice(server, UDID)
    device.enroll()
    key = new_key()
    cert = certificate("raw identity", key, issuer=pki().ca, issuer_key=pki().ca_key)
    p12 = make_p12(cert, key, "raw-secret-password")
    identity = pkcs12_payload(p12, identifier="com.example.raw.id", password="raw-secret-password")
    profile = configuration_profile([identity], identifier="com.example.raw", display_name="Raw")
    command = {"RequestType": "InstallProfile",
               "Payload": {"$data": base64.b64encode(encode_profile(profile)).decode()}}
    answer = ok(AdminClient(server).post("/api/v1/commands", {"deviceIds": [UDID], "command": command,
                                                              "push": False}))
    uuid = answer["results"][UDID]["commandUuid"]
    assert server.storage.get_command(UDID, uuid).payload.startswith(SEALED)
    sent = decode_server_response(device.report(Status.IDLE).body)
    assert sent.command_uuid == uuid and b"raw-secret-password" in unsigned(sent.keys["Payload"])
    assert device.report(Status.ACKNOWLEDGED, uuid).status == 200
    assert_nowhere([p12, b"raw-secret-password"], sqlite_files(server))


def _raw_profile(payload: dict, *, binary: bool) -> bytes:
    profile = {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.p",
               "PayloadUUID": "6C1F5D2E-0000-4000-8000-000000000001", "PayloadDisplayName": "P",
               "PayloadContent": [{"PayloadVersion": 1, "PayloadIdentifier": "com.example.p.1",
                                   "PayloadUUID": "6C1F5D2E-0000-4000-8000-000000000002", **payload}]}
    return plistlib.dumps(profile, fmt=plistlib.FMT_BINARY if binary else plistlib.FMT_XML)


SECRET_PAYLOADS = {
    "wifi-password-binary": ({"PayloadType": "com.apple.wifi.managed", "SSID_STR": "corp",
                              "Password": "wifi-secret-1"}, True, b"wifi-secret-1"),
    "scep-challenge": ({"PayloadType": "com.apple.security.scep",
                        "PayloadContent": {"URL": "https://ca.example/scep", "Challenge": "scep-secret-2"}},
                       False, b"scep-secret-2"),
    "vpn-shared-secret-binary": ({"PayloadType": "com.apple.vpn.managed", "VPNType": "IPSec",
                                  "IPSec": {"SharedSecret": b"vpn-secret-3"}}, True, b"vpn-secret-3"),
}


@pytest.mark.parametrize("name", sorted(SECRET_PAYLOADS))
def test_passwords_challenges_and_shared_secrets_are_sealed_in_any_plist_format(tmp_path, name):
    """Sealing reads the profile's keys, not XML spellings: a binary plist's Wi-Fi password, a SCEP challenge
    and a VPN shared secret are sealed, and their redacted copies hold none of them."""
    from mdm_server.command_seal import holds_secrets, redacted_command

    payload, binary, secret = SECRET_PAYLOADS[name]
    profile = _raw_profile(payload, binary=binary)
    assert holds_secrets(profile)
    command = plistlib.dumps({"CommandUUID": "c1", "Command": {"RequestType": "InstallProfile",
                                                               "Payload": profile}})
    assert secret not in redacted_command(command) and secret not in unsigned(
        decode_plist(redacted_command(command))["Command"]["Payload"])
    server = make_server(tmp_path, in_memory=False)
    device = SignedDevice(server, UDID)
    device.enroll()
    body = {"deviceIds": [UDID], "push": False, "command": {
        "RequestType": "InstallProfile", "Payload": {"$data": base64.b64encode(profile).decode()}}}
    uuid = ok(AdminClient(server).post("/api/v1/commands", body))["results"][UDID]["commandUuid"]
    assert server.storage.get_command(UDID, uuid).payload.startswith(SEALED)


def test_a_profile_without_secrets_is_not_sealed():
    from mdm_server.command_seal import holds_secrets

    plain = _raw_profile({"PayloadType": "com.apple.webClip.managed", "URL": "https://intranet.example",
                          "Label": "Password reset"}, binary=False)  # the word in a value is not a key
    assert b"Password" in plain and not holds_secrets(plain)
    assert not holds_secrets(_raw_profile({"PayloadType": "com.apple.webClip.managed", "URL": "u"}, binary=True))
