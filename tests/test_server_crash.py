"""Crash safety: `mdmsim serve` killed with SIGKILL mid-queue keeps every acknowledged and queued command.

The server runs as a real subprocess on loopback with SQLite; the client is stdlib http.client over TLS.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import plistlib
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mdm_protocol.checkin import Authenticate, TokenUpdate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.profile import parse_profile
from mdm_protocol.profile_signing import unsigned
from mdm_protocol.report import CommandReport, Status, decode_server_response, encode_report
from mdm_server.pki import load_pkcs12

UDID = "c4a5" * 10
DEADLINE = 30.0  # seconds for the whole test; every wait below is bounded by it
CHECKIN = "application/x-apple-aspen-mdm-checkin"
CONNECT = "application/x-apple-aspen-mdm"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m mdmsim.cli serve` on a data dir; ready once it prints its "listening" line."""

    def __init__(self, data_dir: Path, port: int, log: Path, extra: tuple[str, ...] = ()) -> None:
        self.log_path = log
        command = [sys.executable, "-u", "-m", "mdmsim.cli", "serve", "--data-dir", str(data_dir),
                   "--listen", f"ssl:{port}:interface=127.0.0.1", "--push-link", "none", *extra]
        self.log = log.open("ab")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log,
                                        stdin=subprocess.DEVNULL)
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(b"")  # end of output: the process is gone

    def wait_ready(self, deadline: float) -> None:
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("server did not say it was listening in time") from None
            if b"listening on" in line:
                return
            if line == b"":
                self.process.wait(timeout=5)
                tail = self.log_path.read_text(errors="replace")[-3000:]
                code = self.process.returncode
                raise AssertionError(f"server exited with {code} before listening:\n{tail}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.stdout.close()
        self.log.close()


class Client:
    """A blocking device and admin client over TLS that trusts only the server's CA."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(data_dir / "ca.pem"))
        state = json.loads((data_dir / "server.json").read_text())
        self.enroll_token = state["enroll_token"]
        self.admin = "Basic " + base64.b64encode(f"admin:{state['admin_password']}".encode()).decode()
        self.identity = None

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def enroll(self) -> str:
        status, profile_bytes = self.request("GET", f"/mdm/enroll?token={self.enroll_token}")
        assert status == 200, profile_bytes
        profile = parse_profile(unsigned(profile_bytes))
        (p12,) = profile.payloads_of_type("com.apple.security.pkcs12")
        (mdm,) = profile.payloads_of_type("com.apple.mdm")
        self.identity = load_pkcs12(p12.content["PayloadContent"], p12.content["Password"])
        return mdm.content["Topic"]

    def put(self, body: bytes, content_type: str, path: str):
        signature = mdm_signature(body, self.identity.certificate, self.identity.private_key)
        return self.request("PUT", path, body, {"Content-Type": content_type, "Mdm-Signature": signature})

    def report(self, status: Status, uuid: str | None = None) -> str | None:
        body = encode_report(CommandReport(status, udid=UDID, command_uuid=uuid))
        code, answer = self.put(body, CONNECT, "/mdm/connect")
        assert code == 200, answer
        command = decode_server_response(answer)
        return None if command is None else command.command_uuid

    def api(self, method: str, path: str, value=None):
        body = b"" if value is None else json.dumps(value).encode()
        status, answer = self.request(method, path, body, {"Authorization": self.admin,
                                                            "Content-Type": "application/json"})
        return status, json.loads(answer)


def statuses(client: Client) -> dict[str, str]:
    status, body = client.api("GET", f"/api/v1/devices/{UDID}/commands")
    assert status == 200, body
    return {c["commandUuid"]: c["status"] for c in body["items"]}


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_kill_9_mid_queue_loses_nothing(tmp_path):
    deadline = time.monotonic() + DEADLINE
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "server.log"
    server = ServerProcess(data_dir, port, log)
    try:
        server.wait_ready(deadline)
        client = Client(data_dir, port)
        topic = client.enroll()
        for message in (Authenticate(topic=topic, udid=UDID, os_version="17.5"),
                        TokenUpdate(topic=topic, udid=UDID, token=b"\x09" * 32, push_magic="crash-magic")):
            assert client.put(encode_checkin(message), CHECKIN, "/mdm/checkin") == (200, b"")
        queued = []
        for index in range(6):
            command = {"RequestType": "InstallProfile",
                       "Payload": {"$data": base64.b64encode(plistlib.dumps({"n": index})).decode()}}
            status, body = client.api("POST", "/api/v1/commands",
                                      {"deviceIds": [UDID], "command": command, "push": False})
            assert status == 201, body
            queued.append(body["results"][UDID]["commandUuid"])
        # Acknowledge three; the fourth is sent but never answered when the server dies.
        uuid = client.report(Status.IDLE)
        for expected in queued[:3]:
            assert uuid == expected
            uuid = client.report(Status.ACKNOWLEDGED, uuid)
        assert uuid == queued[3]
        server.kill()
        assert server.process.returncode == -signal.SIGKILL

        server.stop()
        server = ServerProcess(data_dir, port, log)
        server.wait_ready(deadline)
        after = statuses(client)
        assert [after[u] for u in queued[:3]] == ["Acknowledged"] * 3
        assert after[queued[3]] in ("Sent", "Queued")
        assert [after[u] for u in queued[4:]] == ["Queued"] * 2
        # The same identity still speaks for the device, and the rest of the queue comes in order.
        uuid = client.report(Status.IDLE)
        for expected in queued[3:]:
            assert uuid == expected
            uuid = client.report(Status.ACKNOWLEDGED, uuid)
        assert uuid is None
        assert set(statuses(client).values()) == {"Acknowledged"}
    finally:
        server.stop()


def test_a_second_server_on_the_same_data_dir_exits_2_and_the_first_keeps_serving(tmp_path):
    deadline = time.monotonic() + DEADLINE
    data_dir, port = tmp_path / "data", free_port()
    server = ServerProcess(data_dir, port, tmp_path / "server.log")
    try:
        server.wait_ready(deadline)
        command = [sys.executable, "-m", "mdmsim.cli", "serve", "--data-dir", str(data_dir),
                   "--listen", f"ssl:{free_port()}:interface=127.0.0.1", "--push-link", "none"]
        second = subprocess.run(command, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
        assert second.returncode == 2, second.stderr
        assert f"pid {server.process.pid}" in second.stderr and "in use by another mdmsim serve" in second.stderr
        assert server.process.poll() is None
    finally:
        server.stop()
