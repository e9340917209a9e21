"""mdm_protocol.ddm: DDM documents round-trip, refuse what is malformed, and conform to Apple's declarative YAML."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kits.ddm_schema import check_declaration, check_protocol, check_status_item

from mdm_protocol import MessageError
from mdm_protocol.commands import check_command
from mdm_protocol.ddm import (
    Declaration,
    DeclarationItem,
    DeclarationItemsResponse,
    DeclarationKind,
    DeclarationsStatus,
    DeclarationStatus,
    IdentityCredential,
    StatusError,
    StatusReason,
    StatusReport,
    TokensResponse,
    Validity,
    declarations_token,
    declarative_management_command,
    kind_of,
    parse_declaration_endpoint,
    server_token,
)

MAIL = Declaration.create("com.apple.configuration.account.mail", "mail-1", {
    "UserIdentityAssetReference": "id-1",
    "IncomingServer": {"ServerType": "IMAP", "HostName": "imap.example", "AuthenticationMethod": "Password"},
    "OutgoingServer": {"HostName": "smtp.example", "AuthenticationMethod": "Password"},
})
ACTIVATION = Declaration.create("com.apple.activation.simple", "act-1", {"StandardConfigurations": ["mail-1"]})
WHEN = datetime(2026, 12, 3, 18, 30, 5, tzinfo=UTC)


def test_kinds_from_type_names_and_endpoints():
    assert kind_of("com.apple.configuration.account.exchange") is DeclarationKind.CONFIGURATION
    assert kind_of("com.apple.asset.credential.identity") is DeclarationKind.ASSET
    assert kind_of("com.apple.management.server-capabilities") is DeclarationKind.MANAGEMENT
    assert MAIL.endpoint == "declaration/configuration/mail-1"
    assert parse_declaration_endpoint("declaration/activation/a/b") == (DeclarationKind.ACTIVATION, "a/b")
    for bad in ("com.example.configuration.x", "com.apple.configuration", "com.apple.profile.x"):
        with pytest.raises(MessageError, match="not com.apple"):
            kind_of(bad)
    for bad in ("declaration/profile/x", "declaration/asset/", "tokens", "declaration/asset"):
        with pytest.raises(MessageError, match="Endpoint"):
            parse_declaration_endpoint(bad)


def test_server_token_changes_exactly_when_content_changes():
    same = Declaration.create(MAIL.type, MAIL.identifier, dict(reversed(list(MAIL.payload.items()))))
    assert same.server_token == MAIL.server_token  # key order is not content
    changed = Declaration.create(MAIL.type, MAIL.identifier, {**MAIL.payload, "VisibleName": "Mail"})
    renamed = Declaration.create(MAIL.type, "mail-2", dict(MAIL.payload))
    assert len({MAIL.server_token, changed.server_token, renamed.server_token}) == 3
    assert len(MAIL.server_token) <= 64  # DeclarationBase: at most 64 octets
    assert server_token(MAIL.type, MAIL.identifier, MAIL.payload) == MAIL.server_token


def test_declarations_token_covers_every_declaration_in_any_order():
    assert declarations_token([MAIL, ACTIVATION]) == declarations_token([ACTIVATION, MAIL])
    assert declarations_token([MAIL]) != declarations_token([MAIL, ACTIVATION])
    changed = Declaration.create(MAIL.type, MAIL.identifier, {**MAIL.payload, "VisibleName": "Work"})
    assert declarations_token([changed, ACTIVATION]) != declarations_token([MAIL, ACTIVATION])


def test_declaration_round_trips_and_conforms():
    document = json.loads(MAIL.encode())
    assert Declaration.decode(MAIL.encode()) == MAIL
    assert check_declaration(document) == []
    assert check_declaration(ACTIVATION.to_json()) == []
    with pytest.raises(MessageError, match="Payload must be dict"):
        Declaration.from_json({**document, "Payload": []})
    with pytest.raises(MessageError, match="missing required key ServerToken"):
        Declaration.from_json({k: v for k, v in document.items() if k != "ServerToken"})
    with pytest.raises(MessageError, match="not JSON"):
        Declaration.decode(b"{")
    with pytest.raises(TypeError):
        MAIL.payload["x"] = 1  # type: ignore[index]


def test_declaration_items_response():
    items = DeclarationItemsResponse.of([MAIL, ACTIVATION])
    assert items.activations == (DeclarationItem("act-1", ACTIVATION.server_token),)
    assert items.configurations == (MAIL.item,) and items.assets == items.management == ()
    assert items.declarations_token == declarations_token([MAIL, ACTIVATION])
    document = json.loads(items.encode())
    assert set(document["Declarations"]) == {"Activations", "Configurations", "Assets", "Management"}
    assert check_protocol("DeclarationItemsResponse", document) == []
    assert DeclarationItemsResponse.decode(items.encode()) == items
    assert [(kind, item.identifier) for kind, item in items.items()] == [
        (DeclarationKind.ACTIVATION, "act-1"), (DeclarationKind.CONFIGURATION, "mail-1")]
    del document["Declarations"]["Assets"]
    with pytest.raises(MessageError, match="missing required key Assets"):
        DeclarationItemsResponse.from_json(document)


def test_tokens_response_and_command():
    tokens = TokensResponse("abc", WHEN + timedelta(microseconds=7))
    document = json.loads(tokens.encode())
    assert document == {"SyncTokens": {"DeclarationsToken": "abc", "Timestamp": "2026-12-03T18:30:05Z"}}
    assert check_protocol("TokensResponse", document) == []
    assert TokensResponse.decode(tokens.encode()) == TokensResponse("abc", WHEN)
    offset = TokensResponse.from_json(
        {"SyncTokens": {"DeclarationsToken": "a", "Timestamp": "2026-12-03T20:30:05+02:00"}})
    assert offset.timestamp == WHEN and offset.timestamp.tzinfo == timezone(timedelta(hours=2))
    for stamp in ("yesterday", "2026-12-03T18:30:05"):
        with pytest.raises(MessageError, match="Timestamp"):
            TokensResponse.from_json({"SyncTokens": {"DeclarationsToken": "a", "Timestamp": stamp}})
    with pytest.raises(MessageError, match="timezone-aware"):
        TokensResponse("a", datetime(2026, 1, 1))  # noqa: DTZ001 -- the naive value under test
    command = declarative_management_command(tokens, command_uuid="C1")
    assert check_command(command) is command and command.request_type == "DeclarativeManagement"
    assert TokensResponse.decode(command.keys["Data"]) == TokensResponse("abc", WHEN)
    assert "Data" not in declarative_management_command().keys


def _status() -> DeclarationsStatus:
    reason = StatusReason("Error.MissingAssets", "assets missing", {"AssetIdentifiers": ["id-1"]})
    return DeclarationsStatus(
        activations=(DeclarationStatus("act-1", ACTIVATION.server_token, True, Validity.VALID),),
        configurations=(DeclarationStatus("mail-1", MAIL.server_token, False, Validity.INVALID, (reason,)),))


def test_status_report_round_trips_and_conforms():
    report = StatusReport.create({"device.operating-system.version": "17.4"}, declarations=_status(),
                                 errors=[StatusError("softwareupdate.failure-reason",
                                                     (StatusReason("Error.Unknown", details={"Code": "1"}),))],
                                 full_report=True)
    document = json.loads(report.encode())
    assert document["StatusItems"]["management"]["declarations"]["configurations"][0]["reasons"] == [
        {"code": "Error.MissingAssets", "description": "assets missing", "details": {"AssetIdentifiers": ["id-1"]}}]
    assert document["Errors"] == [{"StatusItem": "softwareupdate.failure-reason",
                                   "Reasons": [{"Code": "Error.Unknown", "Details": {"Code": "1"}}]}]
    assert check_protocol("StatusReport", document) == []
    assert check_status_item("management.declarations", report.item("management.declarations")) == []
    parsed = StatusReport.decode(report.encode())
    assert parsed == report and parsed.declarations == _status()
    assert parsed.item("device.operating-system.version") == "17.4"
    assert parsed.item("device.model.family") is None
    assert [(kind, s.identifier) for kind, s in parsed.declarations.all()] == [
        (DeclarationKind.ACTIVATION, "act-1"), (DeclarationKind.CONFIGURATION, "mail-1")]
    assert StatusReport.create({}).declarations is None


def test_status_report_refuses_malformed_declaration_status():
    document = json.loads(StatusReport.create({}, declarations=_status()).encode())
    document["StatusItems"]["management"]["declarations"]["activations"][0]["valid"] = "maybe"
    with pytest.raises(MessageError, match="valid 'maybe'"):
        StatusReport.from_json(document)
    document["StatusItems"]["management"]["declarations"]["activations"][0]["valid"] = "valid"
    document["StatusItems"]["management"]["declarations"]["activations"][0]["active"] = 1
    with pytest.raises(MessageError, match="active must be bool"):
        StatusReport.from_json(document)
    with pytest.raises(MessageError, match="missing required key Errors"):
        StatusReport.from_json({"StatusItems": {}})


def test_identity_credential_document():
    credential = IdentityCredential(b"\x30\x82p12", "secret")
    document = json.loads(credential.encode())
    assert document == {"Type": "com.apple.credential.identity", "Password": "secret", "Identity": "MIJwMTI="}
    assert IdentityCredential.decode(credential.encode()) == credential
    assert "secret" not in repr(credential)
    with pytest.raises(MessageError, match="not base64"):
        IdentityCredential.from_json({**document, "Identity": "**"})
    with pytest.raises(MessageError, match="Type"):
        IdentityCredential.from_json({**document, "Type": "com.apple.credential.usernameandpassword"})


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                  max_size=3), max_leaves=8)


@given(st.dictionaries(st.text(max_size=6), _json, max_size=4), st.text(min_size=1, max_size=10))
def test_any_payload_round_trips_with_a_stable_token(payload, identifier):
    declaration = Declaration.create("com.apple.configuration.management.test", identifier, payload)
    again = Declaration.decode(declaration.encode())
    assert again == declaration
    assert server_token(again.type, again.identifier, again.payload) == declaration.server_token
