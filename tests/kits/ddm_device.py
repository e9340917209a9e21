"""A test-side DDM server answering a device machine's requests in memory, and a loop that drives the machine.

It speaks mdm_protocol.ddm's documents (the same the real server serves) and records every request and status
report, so tests can compare the exact sequence a device sent. Nothing here is the device code under test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from device_sim import effects as fx
from mdm_protocol.checkin import DeclarativeManagement, decode_checkin
from mdm_protocol.ddm import (
    Declaration,
    DeclarationItemsResponse,
    IdentityCredential,
    StatusReport,
    TokensResponse,
    parse_declaration_endpoint,
)
from mdm_protocol.report import Command, encode_command

MAIL = "com.apple.configuration.account.mail"
EXCHANGE = "com.apple.configuration.account.exchange"
IDENTITY = "com.apple.asset.credential.identity"
ACTIVATION = "com.apple.activation.simple"
ASSET_BASE = "https://assets.example.com/identity/"


@dataclass
class DdmServer:
    """Declarations by identifier; asset data by URL (bytes, an int HTTP status to answer with, or a str: the
    transport fails with that reason)."""

    declarations: dict[str, Declaration] = field(default_factory=dict)
    assets: dict[str, bytes | int | str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # "tokens", "declaration/...", "status", "GET <url>"
    reports: list[StatusReport] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)  # answers to the command channel, in order
    sent: list[fx.SendRequest] = field(default_factory=list)
    # Declarations to publish right after the device's n-th request (a server changing mid-sync).
    changes: dict[int, list[Declaration]] = field(default_factory=dict)

    def put(self, *declarations: Declaration) -> None:
        for declaration in declarations:
            self.declarations[declaration.identifier] = declaration

    def manifest(self) -> DeclarationItemsResponse:
        return DeclarationItemsResponse.of(self.declarations.values())

    def answer(self, request: fx.SendRequest) -> tuple[int, bytes] | str:
        self.sent.append(request)
        if request.method == "GET":
            self.requests.append(f"GET {request.url}")
            data = self.assets.get(request.url, 404)
            if isinstance(data, str):
                return data
            return (data, b"") if isinstance(data, int) else (200, data)
        if request.content_type == fx.CONNECT_TYPE:
            self.requests.append(request.message)
            return 200, encode_command(self.commands.pop(0)) if self.commands else b""
        message = decode_checkin(request.body)
        if not isinstance(message, DeclarativeManagement):
            self.requests.append(message.message_type)
            return 200, b""
        self.requests.append(message.endpoint)
        try:
            return 200, self._ddm(message)
        finally:
            for declaration in self.changes.pop(len(self.requests), []):
                self.put(declaration)

    def _ddm(self, message: DeclarativeManagement) -> bytes:
        if message.endpoint == "tokens":
            stamp = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
            return TokensResponse(self.manifest().declarations_token, stamp).encode()
        if message.endpoint == "declaration-items":
            return self.manifest().encode()
        if message.endpoint == "status":
            assert message.data is not None
            self.reports.append(StatusReport.decode(message.data))
            return b""
        _, identifier = parse_declaration_endpoint(message.endpoint)
        return self.declarations[identifier].encode()


def drive(machine: Any, server: DdmServer, effects: list[fx.Effect], now: float, *, limit: int = 200
          ) -> list[fx.Effect]:
    """Answer every request the machine makes until it stops asking; return every effect seen, in order."""
    seen = list(effects)
    queue = [effect for effect in effects if isinstance(effect, fx.SendRequest)]
    while queue:
        limit -= 1
        assert limit > 0, "the machine kept asking"
        request = queue.pop(0)
        answer = server.answer(request)
        if isinstance(answer, str):
            produced = machine.transport_failed(request.request_id, answer, now)
        else:
            produced = machine.response(request.request_id, answer[0], answer[1], now)
        seen += produced
        queue += [effect for effect in produced if isinstance(effect, fx.SendRequest)]
    return seen


def identity_asset(identifier: str, *, url: str | None = None, authentication: str | None = "MDM",
                   **reference: Any) -> Declaration:
    payload: dict[str, Any] = {"Reference": {"DataURL": url or ASSET_BASE + identifier,
                                             "ContentType": "application/json", **reference}}
    if authentication is not None:
        payload["Authentication"] = {"Type": authentication}
    return Declaration.create(IDENTITY, identifier, payload)


def credential(p12: bytes, password: str = "secret") -> bytes:
    return IdentityCredential(p12, password).encode()


def mail_account(identifier: str = "mail-1", *, smime: dict[str, Any] | None = None, **payload: Any) -> Declaration:
    body: dict[str, Any] = {
        "VisibleName": "Work mail",
        "IncomingServer": {"ServerType": "IMAP", "HostName": "imap.example.com", "Port": 993,
                           "AuthenticationMethod": "None"},
        "OutgoingServer": {"HostName": "smtp.example.com", "Port": 587, "AuthenticationMethod": "None"},
        **payload,
    }
    if smime is not None:
        body["SMIME"] = smime
    return Declaration.create(MAIL, identifier, body)


def activation(identifier: str, *configurations: str, predicate: str | None = None) -> Declaration:
    payload: dict[str, Any] = {"StandardConfigurations": list(configurations)}
    if predicate is not None:
        payload["Predicate"] = predicate
    return Declaration.create(ACTIVATION, identifier, payload)


def declarations_of(report: StatusReport) -> dict[str, dict[str, Any]]:
    """management.declarations of a report, every kind merged, by identifier."""
    value = report.item("management.declarations") or {}
    return {entry["identifier"]: entry for entries in value.values() for entry in entries}


def raw(declaration_type: str, identifier: str, payload: Any, token: str = "t1") -> Declaration:
    """A declaration the server may serve even though the device will refuse it (bypasses nothing but
    ServerToken computation: the document is what it is)."""
    return Declaration(declaration_type, identifier, token, payload)


def json_body(request: fx.SendRequest) -> Any:
    message = decode_checkin(request.body)
    assert isinstance(message, DeclarativeManagement) and message.data is not None
    return json.loads(message.data)
