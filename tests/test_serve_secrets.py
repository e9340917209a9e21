"""A real `mdmsim serve --enrollment-identity scep` run (enroll by SCEP through a per-user token, P12 uploads,
delivery) as a subprocess: every file in its data dir is the owner's alone, and no secret reaches its output.

The client is stdlib http.client over TLS, driving our sans-IO SCEP client and signing like a device.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import queue
import secrets
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from server_kit import make_server
from test_scep_enrollment import _scep_content
from test_server_crash import CHECKIN, UDID, Client, ServerProcess, free_port
from twisted.logger import formatEvent, globalLogPublisher

from device_sim.memory_http import MemoryHTTP
from device_sim.scep_client import HttpStep, ScepExchange, ScepFailed, ScepIssued, ScepSpec
from mdm_protocol.checkin import Authenticate, TokenUpdate, encode_checkin
from mdm_protocol.profile import parse_profile
from mdm_protocol.profile_signing import unsigned
from mdm_protocol.report import Status, decode_server_response
from mdm_world.demo_setup import PROFILE_1
from mdm_world.procedure import P12_PASSWORD, Organisation

DEADLINE = 60.0
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Run:
    data_dir: Path
    output: str = ""  # stdout and stderr of the server, whole
    modes_while_running: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)  # what must appear nowhere, by what it is


class TLSClient(Client):
    def raw(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.getheader("content-type") or "", answer.read()
        finally:
            connection.close()


class MemoryClient(Client):
    """The same client on an in-process server's twisted.web tree (device_sim.memory_http)."""

    def __init__(self, server) -> None:
        super().__init__(server.config.data_dir, 0)
        self.site = server.site

    def raw(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        answer = MemoryHTTP(self.site).request(method, path, body or b"", headers)
        return answer.status, answer.headers.get("content-type", ""), answer.body

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        status, _, answer = self.raw(method, path, body, headers or {})
        return status, answer


def scep(client, spec: ScepSpec) -> ScepIssued | ScepFailed:
    exchange = ScepExchange(spec, KEY, time.time())
    step = exchange.start()
    while isinstance(step, HttpStep):
        url = urlsplit(step.url)
        headers = {"Content-Type": step.content_type} if step.content_type else {}
        step = exchange.answered(*client.raw(step.method, f"{url.path}?{url.query}", step.body, headers))
    return step


def modes(data_dir: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(data_dir.stat().st_mode)}
    for root, directories, files in os.walk(data_dir):
        for name in directories + files:
            path = Path(root) / name
            found[str(path.relative_to(data_dir))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def ok(answer):
    status, body = answer
    assert status in (200, 201), body
    return body


def session(client, run: Run) -> None:
    """Enroll by SCEP through alice's token, upload her identities (one with a wrong password first), deliver."""
    token = ok(client.api("POST", "/api/v2/enrollment-tokens", {"userId": "alice"}))["token"]
    status, profile = client.request("GET", f"/mdm/enroll?token={token}")
    assert status == 200, profile
    spec = ScepSpec.from_payload(_scep_content(profile))
    wrong_challenge = secrets.token_urlsafe(24)
    refused = scep(client, ScepSpec.from_payload({**_scep_content(profile), "PayloadContent": {
        **_scep_content(profile)["PayloadContent"], "Challenge": wrong_challenge}}))
    assert isinstance(refused, ScepFailed) and "challenge unknown" in refused.reason
    issued = scep(client, spec)
    assert isinstance(issued, ScepIssued), issued
    client.identity = issued
    for message in (Authenticate(topic=spec_topic(profile), udid=UDID, os_version="17.5"),
                    TokenUpdate(topic=spec_topic(profile), udid=UDID, token=b"\x07" * 32, push_magic="magic")):
        assert client.put(encode_checkin(message), CHECKIN, "/mdm/checkin") == (200, b"")
    now = datetime.now(UTC)
    org = Organisation.create("Acme", "acme.test", now=now)
    ok(client.api("POST", "/api/v2/users", {"userId": "alice", "email": "alice@acme.test", "displayName": "A"}))
    wrong_password = "wrong-" + secrets.token_urlsafe(12)
    ids = {}
    for purpose in ("signing", "encryption"):
        ids[purpose] = ok(client.api("POST", "/api/v2/settings", {"kind": "user_provided", "name": purpose,
                                                                  "purpose": f"smime_{purpose}"}))["id"]
        org.issue("alice@acme.test", purpose, now=now)
        p12 = org.p12("alice@acme.test", purpose)
        run.secrets[f"uploaded {purpose} PKCS#12"] = p12
        upload = {"settingId": ids[purpose], "p12": base64.b64encode(p12).decode(), "password": wrong_password}
        status, body = client.api("POST", "/api/v2/users/alice/certificates", upload)
        assert status == 400, body  # the wrong password first: refused
        ok(client.api("POST", "/api/v2/users/alice/certificates", {**upload, "password": P12_PASSWORD}))
    exchange = ok(client.api("POST", "/api/v2/settings", {
        "kind": "exchange", "name": "Mail", "host": "mail.acme.test",
        "smime": {**PROFILE_1, "signing_identity": ids["signing"], "encryption_identity": ids["encryption"]}}))
    ok(client.api("POST", "/api/v2/labels", {"id": "mail", "name": "Mail", "type": "manual", "deviceUuids": [UDID]}))
    ok(client.api("POST", "/api/v2/labels/mail/apply", {"settingId": exchange["id"]}))
    status, body = client.put(report(Status.IDLE), "application/x-apple-aspen-mdm", "/mdm/connect")
    command = decode_server_response(body)
    assert command is not None and command.request_type == "InstallProfile", body
    for payload in parse_profile(unsigned(command.keys["Payload"])).payloads_of_type("com.apple.security.pkcs12"):
        run.secrets[f"delivered PKCS#12 {payload.uuid}"] = payload.content["PayloadContent"]
        run.secrets[f"delivered password {payload.uuid}"] = payload.content["Password"].encode()
    assert client.put(report(Status.ACKNOWLEDGED, command.command_uuid), "application/x-apple-aspen-mdm",
                      "/mdm/connect")[0] == 200
    run.secrets.update({
        "P12 upload password": P12_PASSWORD.encode(), "wrong upload password": wrong_password.encode(),
        "SCEP challenge": spec.challenge.encode(), "wrong SCEP challenge": wrong_challenge.encode(),
        "per-user enrollment token": token.encode(),
        "admin password": json.loads((run.data_dir / "server.json").read_text())["admin_password"].encode(),
        "device private key": private_pem(issued.private_key),
    })


def spec_topic(profile: bytes) -> str:
    (mdm,) = parse_profile(unsigned(profile)).payloads_of_type("com.apple.mdm")
    return mdm.content["Topic"]


def report(status: Status, uuid: str | None = None) -> bytes:
    from mdm_protocol.report import CommandReport, encode_report

    return encode_report(CommandReport(status, udid=UDID, command_uuid=uuid))


def private_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp("serve")
    data_dir, port, log = tmp / "data", free_port(), tmp / "server.log"
    server = ServerProcess(data_dir, port, log, extra=("--enrollment-identity", "scep"))
    result = Run(data_dir)
    try:
        server.wait_ready(time.monotonic() + DEADLINE)
        session(TLSClient(data_dir, port), result)
        result.modes_while_running = modes(data_dir)  # the -wal and -shm files exist only while it runs
        for key_file in data_dir.glob("*.key"):
            result.secrets[f"key file {key_file.name}"] = key_file.read_bytes()
    finally:
        server.stop()
    lines = []
    while True:
        try:
            lines.append(server.lines.get_nowait())
        except queue.Empty:
            break
    result.output = b"".join(lines).decode("utf-8", "replace") + log.read_text(errors="replace")
    return result


def test_every_file_in_the_data_dir_is_the_owners_alone(run):
    for when, found in (("while serving", run.modes_while_running), ("after", modes(run.data_dir))):
        loose = {name: oct(mode) for name, mode in found.items()
                 if mode != (0o700 if (run.data_dir / name).is_dir() or name == "." else 0o600)}
        assert not loose, f"{when}: {loose}"
    names = set(run.modes_while_running)
    for expected in ("mdmsim.sqlite3-wal", "admin.sqlite3-wal", "scep.sqlite3", "server.json", "ca.key"):
        assert expected in names, f"{expected} was never there: the walk could not judge it ({sorted(names)})"


def leaked(run: Run, output: str) -> list[str]:
    return [what for what, secret in run.secrets.items()
            if any(piece.decode("latin-1") in output for piece in fragments(secret))]


def fragments(secret: bytes) -> list[bytes]:
    """The secret and its base64 (whole, and each 64-character PEM line of it), as a log could hold them."""
    if secret.startswith(b"-----BEGIN"):
        return [line for line in secret.splitlines() if line and not line.startswith(b"-----")]
    encoded = base64.b64encode(secret)
    return [secret, encoded, *[encoded[i:i + 64] for i in range(0, len(encoded) - 63, 64)]]


def test_no_password_challenge_key_or_pkcs12_reaches_the_output(run):
    assert "enrollment profile:" in run.output and "SCEP issued" in run.output  # the log was captured
    assert "refused (BAD_REQUEST): challenge unknown" in run.output  # refusals are logged, without the secrets
    assert not leaked(run, run.output)


class Captured(logging.Handler):
    """Every Python log record, at every level, and every Twisted log event, as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def twisted(self, event: dict) -> None:
        self.lines.append(f"{formatEvent(event)} {event.get('log_failure') or ''}")


def test_no_secret_reaches_a_log_observer_in_process(tmp_path):
    captured, root = Captured(), logging.getLogger()
    level, root.level = root.level, logging.DEBUG
    root.addHandler(captured)
    globalLogPublisher.addObserver(captured.twisted)
    try:
        server = make_server(tmp_path, in_memory=False, enrollment_identity="scep")
        run = Run(server.config.data_dir)
        session(MemoryClient(server), run)
        for key_file in run.data_dir.glob("*.key"):
            run.secrets[f"key file {key_file.name}"] = key_file.read_bytes()
        server.stopService()
    finally:
        globalLogPublisher.removeObserver(captured.twisted)
        root.removeHandler(captured)
        root.level = level
    output = "\n".join(captured.lines)
    assert "SCEP issued" in output and "challenge unknown" in output  # the observers saw the run
    assert not leaked(run, output)


def test_a_loose_data_dir_and_its_databases_are_taken_back_to_the_owner(tmp_path):
    first = make_server(tmp_path, in_memory=False, enrollment_identity="scep")
    data = first.config.data_dir
    first.stopService()
    first.storage.close()
    databases = sorted(data.glob("*.sqlite3"))
    assert {path.name for path in databases} >= {"mdmsim.sqlite3", "admin.sqlite3", "scep.sqlite3"}
    for path in [data, *databases]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # as an older mdmsim, or a copy, may have left them
    second = make_server(tmp_path, in_memory=False, enrollment_identity="scep")
    found = modes(data)
    assert found["."] == 0o700
    assert {path.name: oct(found[path.name]) for path in databases} == {path.name: "0o600" for path in databases}
    second.stopService()
