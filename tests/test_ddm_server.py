"""The server's DDM endpoints through the real web tier (signed check-ins on each storage backend): tokens,
declaration-items, declaration/<kind>/<id>, status; the channel checks; the admin API's DDM routes.
"""

from __future__ import annotations

import json

import pytest
from kits.ddm_schema import check_declaration, check_protocol
from server_kit import BACKENDS, CHECKIN, AdminClient, SignedDevice, make_server

from mdm_protocol.checkin import DeclarativeManagement, TokenUpdate, encode_checkin
from mdm_protocol.ddm import (
    Declaration,
    DeclarationItemsResponse,
    DeclarationKind,
    DeclarationsStatus,
    DeclarationStatus,
    StatusReport,
    TokensResponse,
    Validity,
)
from mdm_protocol.report import Status, decode_server_response

UDID = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
SHARED_IPAD_USER = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"
MAIL = Declaration.create("com.apple.configuration.account.mail", "mail-1", {
    "IncomingServer": {"ServerType": "IMAP", "HostName": "imap.example", "AuthenticationMethod": "Password"},
    "OutgoingServer": {"HostName": "smtp.example", "AuthenticationMethod": "Password"},
})
ACTIVATION = Declaration.create("com.apple.activation.simple", "act-1", {"StandardConfigurations": ["mail-1"]})


@pytest.fixture(params=BACKENDS)
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param)


@pytest.fixture
def device(server):
    device = SignedDevice(server, UDID)
    device.enroll()
    return device


def ddm(device: SignedDevice, endpoint: str, data: bytes | None = None, **extra):
    message = DeclarativeManagement(endpoint=endpoint, data=data, udid=device.udid, extra=extra)
    return device.put(encode_checkin(message), CHECKIN)


def test_a_channel_without_declarations_answers_empty_documents(device):
    tokens = ddm(device, "tokens")
    assert tokens.status == 200 and tokens.headers["content-type"] == "application/json"
    assert check_protocol("TokensResponse", json.loads(tokens.body)) == []
    items = ddm(device, "declaration-items")
    assert check_protocol("DeclarationItemsResponse", json.loads(items.body)) == []
    manifest = DeclarationItemsResponse.decode(items.body)
    assert manifest.declarations_token == TokensResponse.decode(tokens.body).declarations_token
    assert list(manifest.items()) == []


def test_tokens_items_and_declarations_follow_the_store(server, device):
    server.admin.declarations.replace_source(UDID, None, "s1", [MAIL, ACTIVATION])
    tokens = TokensResponse.decode(ddm(device, "tokens").body)
    manifest = DeclarationItemsResponse.decode(ddm(device, "declaration-items").body)
    assert manifest.declarations_token == tokens.declarations_token
    assert manifest.configurations == (MAIL.item,) and manifest.activations == (ACTIVATION.item,)
    fetched = ddm(device, "declaration/configuration/mail-1")
    assert fetched.status == 200 and Declaration.decode(fetched.body) == MAIL
    assert check_declaration(json.loads(fetched.body)) == []
    assert Declaration.decode(ddm(device, "declaration/activation/act-1").body) == ACTIVATION
    # The kind is part of the address: a configuration is not found as an activation.
    for endpoint in ("declaration/activation/mail-1", "declaration/asset/nothing"):
        missing = ddm(device, endpoint)
        assert missing.status == 404 and b"imap" not in missing.body
    server.clock.advance(30)
    server.admin.declarations.replace_source(UDID, None, "s1", [MAIL, ACTIVATION])  # unchanged re-send
    assert TokensResponse.decode(ddm(device, "tokens").body) == tokens
    edited = Declaration.create(MAIL.type, MAIL.identifier, {**MAIL.payload, "VisibleName": "Work"})
    server.admin.declarations.replace_source(UDID, None, "s1", [edited, ACTIVATION])
    moved = TokensResponse.decode(ddm(device, "tokens").body)
    assert moved.declarations_token != tokens.declarations_token and moved.timestamp > tokens.timestamp
    after = DeclarationItemsResponse.decode(ddm(device, "declaration-items").body)
    assert after.activations == manifest.activations  # unchanged declarations keep their server tokens
    assert after.configurations[0].server_token == edited.server_token != MAIL.server_token


def _status_report(server_token: str = "x", *, full: bool | None = None) -> bytes:
    declarations = DeclarationsStatus(configurations=(DeclarationStatus("mail-1", server_token, True, Validity.VALID),))
    return StatusReport.create({"device.operating-system.version": "17.5"}, declarations=declarations,
                               full_report=full).encode()


def test_status_reports_are_stored_and_shown_in_the_admin_api(server, device):
    assert ddm(device, "status", _status_report(MAIL.server_token)).status == 200
    server.clock.advance(10)
    assert ddm(device, "status", StatusReport.create({"device.model.family": "iPhone"}).encode()).status == 200
    status, body = AdminClient(server).get(f"/api/v2/devices/{UDID}/ddm-status")
    assert status == 200
    assert body["statusItems"] == {"device": {"operating-system": {"version": "17.5"}, "model": {"family": "iPhone"}}}
    assert body["declarations"]["configurations"] == [
        {"identifier": "mail-1", "server-token": MAIL.server_token, "active": True, "valid": "valid"}]
    assert [entry["receivedAt"] for entry in body["history"]] == [server.clock.seconds() - 10, server.clock.seconds()]
    status, short = AdminClient(server).call("GET", f"/api/v2/devices/{UDID}/ddm-status?history=false")
    assert status == 200 and "history" not in short
    for bad in (b"not json", b'{"StatusItems": {}}', json.dumps({"StatusItems": {"management": {"declarations": {
            "activations": [], "configurations": [{"identifier": "a"}], "assets": [], "management": []}}},
            "Errors": []}).encode()):
        refused = ddm(device, "status", bad)
        assert refused.status == 400 and b"DeclarativeManagement status" in refused.body
    assert ddm(device, "status").status == 400  # no Data
    assert len(server.admin.ddm_status.get(UDID).history) == 2  # refused reports left nothing


def test_only_the_enrolled_device_itself_is_answered(server, device):
    server.admin.declarations.replace_source(UDID, None, "s1", [MAIL])
    stranger = SignedDevice(server, UDID)  # another identity claiming this UDID
    refused = ddm(stranger, "declaration/configuration/mail-1")
    assert refused.status == 400 and b"does not belong" in refused.body and b"imap" not in refused.body
    unknown = SignedDevice(server, OTHER)
    assert ddm(unknown, "tokens").status == 400
    unknown.authenticate()  # not yet enrolled: no DDM
    assert b"not enrolled" in ddm(unknown, "tokens").body
    device.check_out()
    assert ddm(device, "tokens").status == 400


def test_user_channels_have_their_own_declarations(server, device):
    user_keys = {"UserID": SHARED_IPAD_USER, "UserShortName": "alice@example.com"}
    assert ddm(device, "tokens", **user_keys).status == 400  # no user channel yet
    token_update = TokenUpdate(topic=server.state.topic, udid=UDID, token=b"u" * 32, push_magic="user-magic",
                               user_id=SHARED_IPAD_USER, user_short_name="alice@example.com")
    assert device.put(encode_checkin(token_update), CHECKIN).status == 200
    server.admin.declarations.replace_source(UDID, "alice@example.com", "s1", [ACTIVATION])
    server.admin.declarations.replace_source(UDID, None, "s1", [MAIL])
    user = DeclarationItemsResponse.decode(ddm(device, "declaration-items", **user_keys).body)
    assert user.activations == (ACTIVATION.item,) and user.configurations == ()
    assert ddm(device, "declaration/configuration/mail-1", **user_keys).status == 404
    assert ddm(device, "declaration/activation/act-1").status == 404  # and the other way round
    assert ddm(device, "status", _status_report(), **user_keys).status == 200
    assert server.admin.ddm_status.get(UDID) is None
    kept = server.admin.ddm_status.get(UDID, "alice@example.com")
    assert kept.declaration(DeclarationKind.CONFIGURATION, "mail-1").valid is Validity.VALID
    admin = AdminClient(server)
    status, body = admin.get(f"/api/v2/devices/{UDID}/declarations?user=alice%40example.com")
    assert status == 200 and [item["Identifier"] for item in body["items"]] == ["act-1"]
    assert admin.get(f"/api/v2/devices/{UDID}/declarations?user=bob")[0] == 404


def test_the_admin_api_lists_declarations_and_kicks_a_sync(server, device):
    server.admin.declarations.replace_source(UDID, None, "s1", [MAIL, ACTIVATION])
    admin = AdminClient(server)
    status, body = admin.get(f"/api/v2/devices/{UDID}/declarations")
    assert status == 200 and body["declarationsToken"] == server.admin.declarations.get(UDID).token
    assert {(item["kind"], item["Identifier"], item["source"]) for item in body["items"]} == {
        ("configuration", "mail-1", "s1"), ("activation", "act-1", "s1")}
    inbox = device.online()
    status, queued = admin.post(f"/api/v2/devices/{UDID}/declarative-management")
    assert status == 202 and queued["pushed"] is True
    server.clock.advance(1)
    assert inbox
    command = decode_server_response(device.report(Status.IDLE).body)
    assert command.request_type == "DeclarativeManagement" and command.command_uuid == queued["commandUuid"]
    tokens = TokensResponse.decode(command.keys["Data"])
    assert tokens.declarations_token == body["declarationsToken"]
    assert admin.get("/api/v2/devices/nope/declarations")[0] == 404
    device.check_out()
    assert admin.post(f"/api/v2/devices/{UDID}/declarative-management")[0] == 409
