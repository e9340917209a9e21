"""Secrets at rest: a delivered S/MIME identity (PKCS#12 and its password) never sits in the database in clear."""

from __future__ import annotations

import base64
import plistlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from server_kit import AdminClient, SignedDevice, make_server
from test_enrollment_tokens import device_from, fetch

from mdm_protocol.profile import parse_profile
from mdm_protocol.profile_signing import unsigned
from mdm_protocol.report import Status, decode_server_response
from mdm_server.command_seal import SEALED
from mdm_world.demo_setup import PROFILE_1
from mdm_world.procedure import P12_PASSWORD, Organisation

UDID = "c" * 40


def ok(answer):
    status, body = answer
    assert status in (200, 201), body
    return body


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
