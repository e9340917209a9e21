"""Test kit for the server: an MDMServer on a fake clock, on either storage backend, and a signed device client.

The client speaks real plists and real Mdm-Signature CMS through the real twisted.web tree, with no sockets.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from kits.postgres import postgres_storage

from device_sim.clock import HeapClock
from device_sim.memory_http import HTTPResponse, MemoryHTTP
from mdm_protocol.checkin import Authenticate, CheckOut, TokenUpdate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.report import CommandReport, Status, decode_server_response, encode_report
from mdm_server.app import DATABASE_FILE, MDMServer, ServerConfig
from mdm_server.storage import MemoryStorage, SQLiteStorage

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC).timestamp()
CHECKIN = "application/x-apple-aspen-mdm-checkin"
CONNECT = "application/x-apple-aspen-mdm"


# The web-tier test files run their server on each backend: the same requests, the same answers.
BACKENDS = ("memory", "sqlite", "postgresql")


def make_server(tmp_path, *, backend: str | None = None, in_memory: bool = True, **config) -> MDMServer:
    """A server in `tmp_path`; `backend` (one of BACKENDS) picks its storage, None leaves it to `in_memory`.

    "postgresql" is a fresh schema on the session's server (kits/postgres.py: skipped, or failed under CI=1,
    where none can be started)."""
    clock = HeapClock(START)
    data = tmp_path / "data"
    storage = None
    if backend == "sqlite":
        data.mkdir(parents=True, exist_ok=True)
        storage = SQLiteStorage(data / DATABASE_FILE)
    elif backend == "memory":
        storage = MemoryStorage()
    elif backend == "postgresql":
        storage = postgres_storage()
    elif backend is not None:
        raise ValueError(f"unknown storage backend {backend!r}; expected one of {BACKENDS}")
    server = MDMServer(ServerConfig(data_dir=data, in_memory=in_memory, **config), clock=clock, storage=storage)
    server.startService()  # the admin model's sync wake-ups and key purge
    return server


@dataclass
class SignedDevice:
    server: MDMServer
    udid: str
    certificate: object = None
    key: object = None
    token: bytes = field(default=b"")
    push_magic: str = ""

    def __post_init__(self) -> None:
        if self.certificate is None:
            self.certificate, self.key = self.server.ca.issue_device_identity(
                f"device {self.udid[:8]}", self.server.now()
            )
        self.http = MemoryHTTP(self.server.http)
        self.token = self.token or hashlib.sha256(self.udid.encode()).digest()
        self.push_magic = self.push_magic or f"magic-{self.udid[:8]}"

    @property
    def cert_sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    def put(self, body: bytes, content_type: str, *, signature: str | None = None, path="/mdm/checkin"):
        headers = {"Content-Type": content_type}
        signature = signature if signature is not None else mdm_signature(body, self.certificate, self.key)
        if signature:
            headers["Mdm-Signature"] = signature
        return self.http.request("PUT", path, body, headers)

    def authenticate(self, **facts) -> HTTPResponse:
        message = Authenticate(topic=self.server.state.topic, udid=self.udid, os_version="17.5",
                               build_version="21F79", product_name="iPhone15,2", serial_number="F2LX0000",
                               **facts)
        return self.put(encode_checkin(message), CHECKIN)

    def token_update(self) -> HTTPResponse:
        message = TokenUpdate(topic=self.server.state.topic, udid=self.udid, token=self.token,
                              push_magic=self.push_magic)
        return self.put(encode_checkin(message), CHECKIN)

    def check_out(self) -> HTTPResponse:
        return self.put(encode_checkin(CheckOut(topic=self.server.state.topic, udid=self.udid)), CHECKIN)

    def enroll(self) -> None:
        assert self.authenticate().status == 200
        assert self.token_update().status == 200
        self.server.apns.register(self.token, self.server.state.topic)

    def report(self, status: Status, command_uuid: str | None = None, **extra) -> HTTPResponse:
        body = encode_report(CommandReport(status, udid=self.udid, command_uuid=command_uuid, extra=extra))
        return self.put(body, CONNECT, path="/mdm/connect")

    def online(self) -> list[dict]:
        """Register the push token with the APNs simulation; delivered pushes land in the list returned."""
        inbox: list[dict] = []
        self.server.apns.register(self.token, self.server.state.topic)
        self.server.apns.attach(self.token, lambda token, payload: inbox.append(payload))
        return inbox

    def session(self, answer=lambda command: Status.ACKNOWLEDGED) -> list[str]:
        """Idle, then answer every command until the zero-byte body; returns the RequestTypes seen."""
        seen = []
        response = self.report(Status.IDLE)
        while True:
            assert response.status == 200, response.body
            command = decode_server_response(response.body)
            if command is None:
                return seen
            seen.append(command.request_type)
            response = self.report(answer(command), command.command_uuid)


class AdminClient:
    """The admin JSON API through the same in-memory HTTP channel, HTTP Basic with the server's password."""

    def __init__(self, server: MDMServer, *, user: str = "admin", password: str | None = None) -> None:
        self.http = MemoryHTTP(server.http)
        password = server.admin_password if password is None else password
        self.authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, value=None, *, raw: bytes | None = None):
        """(status, decoded JSON body); `raw` sends bytes as they are (malformed-JSON tests)."""
        body = raw if raw is not None else (b"" if value is None else json.dumps(value).encode())
        headers = {"Authorization": self.authorization, "Content-Type": "application/json"}
        response = self.http.request(method, path, body, headers)
        return response.status, json.loads(response.body) if response.body else None

    def get(self, path: str):
        return self.call("GET", path)

    def post(self, path: str, value=None, **kwargs):
        return self.call("POST", path, value, **kwargs)

    def delete(self, path: str):
        return self.call("DELETE", path)

    def enqueue(self, device_ids, request_type: str, *, push: bool = False, priority: int = 0,
                timeout: float | None = None, **keys):
        """Queue one command for devices; returns {device_id: CommandUUID} for those queued."""
        request = {"deviceIds": list(device_ids), "command": {"RequestType": request_type, **keys},
                   "push": push, "priority": priority}
        if timeout is not None:
            request["timeout"] = timeout
        status, body = self.post("/api/v1/commands", request)
        assert status in (201, 207), body
        return {d: r["commandUuid"] for d, r in body["results"].items() if r["status"] == 201}


def snapshot(server: MDMServer, *device_ids: str):
    """Everything storage holds about these devices, to assert a refused request changed nothing."""
    storage = server.storage
    return [
        (storage.get_device(d), storage.list_commands(d), storage.get_push(d)) for d in device_ids
    ]
