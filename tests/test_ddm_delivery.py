"""Email and Exchange settings delivered as DDM declarations, end to end on the server: the admin API's
`delivery` field, Apply to Label queuing DeclarativeManagement instead of InstallProfile, declarations that
conform to Apple's schema, and identity assets served to the one device they were declared to.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from kits.admin_kit import PASSWORD, identity, p12_for
from kits.ddm_schema import check_credential, check_declaration
from server_kit import BACKENDS, CHECKIN, AdminClient, SignedDevice, make_server

from mdm_protocol.checkin import Authenticate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.ddm import DeclarationKind, IdentityCredential, TokensResponse
from mdm_protocol.report import decode_command

UDID = "0123456789abcdef0123456789abcdef01234567"
BOB_UDID = "fedcba9876543210fedcba9876543210fedcba98"
EXCHANGE = {"kind": "exchange", "name": "Work mail", "host": "mail.example.com", "user_name": "$USERID$",
            "email_address": "$EMAIL$"}
# The user-provided settings are created first: s1 signs, s2 encrypts; the account is s3.
SMIME = {"signing_enabled": True, "signing_identity": "s1", "signing_user_overrideable": True,
         "encryption_by_default": True, "encryption_identity": "s2", "per_message_switch": True,
         "encryption_identity_user_overrideable": True}
EAS = "s3"
PREFIX = f"com.mdmsim.setting.{EAS}"


@pytest.fixture(params=BACKENDS)
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param)


def _enroll(server, udid: str, user: str, os_version: str = "17.5") -> SignedDevice:
    certificate, key = server.ca.issue_device_identity(f"device {udid[:8]}", server.now(), user_id=user)
    device = SignedDevice(server, udid, certificate, key)
    message = Authenticate(topic=server.state.topic, udid=udid, os_version=os_version, build_version="21F79",
                           product_name="iPhone15,2", serial_number=f"F2L{udid[:5]}")
    assert device.put(encode_checkin(message), CHECKIN).status == 200
    assert device.token_update().status == 200
    return device


def _user(admin: AdminClient, user: str) -> None:
    assert admin.post("/api/v2/users", {"userId": user, "email": f"{user}@example.com"})[0] == 201
    for setting, name in (("s1", "sig"), ("s2", "enc")):
        upload = {"settingId": setting, "p12": base64.b64encode(p12_for(f"{user}-{name}")).decode(),
                  "password": PASSWORD}
        assert admin.post(f"/api/v2/users/{user}/certificates", upload)[0] == 201, upload


@pytest.fixture
def world(server):
    admin = AdminClient(server)
    for setting, purpose in (("sig", "smime_signing"), ("enc", "smime_encryption")):
        status, body = admin.post("/api/v2/settings", {"kind": "user_provided", "name": setting,
                                                       "purpose": purpose})
        assert status == 201, body
    _user(admin, "alice")
    device = _enroll(server, UDID, "alice")
    assert admin.post("/api/v2/labels", {"id": "l", "name": "L", "type": "manual", "deviceUuids": [UDID]})[0] == 201
    return admin, device


def _setting(admin: AdminClient, delivery: str, **extra) -> None:
    body = {**EXCHANGE, "delivery": delivery, "smime": SMIME, **extra}
    status, answer = admin.post("/api/v2/settings", body)
    assert status == 201 and answer["id"] == EAS, answer


def _pending(server, udid: str = UDID) -> list[str]:
    return [c.request_type for c in server.storage.list_commands(udid) if c.pending]


def _get_asset(device: SignedDevice, url: str, *, signed: bool = True, signer: SignedDevice | None = None):
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    signer = signer or device
    headers = {"Mdm-Signature": mdm_signature(b"", signer.certificate, signer.key)} if signed else {}
    return device.http.request("GET", path, b"", headers)


def test_delivery_is_validated_like_the_other_options(world):
    admin, _ = world
    status, answer = admin.post("/api/v2/settings", {**EXCHANGE, "delivery": "email"})
    assert status == 400 and answer["message"] == "delivery must be one of profile, declaration, auto, not 'email'"
    status, answer = admin.post("/api/v2/settings", {**EXCHANGE, "delivery": "auto"})
    assert status == 201 and answer["delivery"] == "auto"
    assert admin.get(f"/api/v2/settings/{answer['id']}")[1]["delivery"] == "auto"
    status, answer = admin.post("/api/v2/settings", EXCHANGE)
    assert answer["delivery"] == "profile"  # what every setting had before


def test_apply_declares_the_account_and_kicks_the_device(server, world):
    admin, device = world
    _setting(admin, "declaration")
    status, report = admin.post("/api/v2/labels/l/apply", {"settingId": EAS})
    assert status == 200, report
    assert _pending(server) == ["DeclarativeManagement"]
    command = decode_command(server.storage.list_commands(UDID)[-1].payload)
    channel = server.admin.declarations.get(UDID)
    assert TokensResponse.decode(command.keys["Data"]) == channel.tokens()
    kinds = {(d.kind, d.identifier) for d in channel.declarations}
    assert kinds == {(DeclarationKind.CONFIGURATION, f"{PREFIX}.account"),
                     (DeclarationKind.ACTIVATION, f"{PREFIX}.activation"),
                     (DeclarationKind.ASSET, f"{PREFIX}.user-identity"),
                     (DeclarationKind.ASSET, f"{PREFIX}.credentials"),
                     (DeclarationKind.ASSET, f"{PREFIX}.smime-signing-identity"),
                     (DeclarationKind.ASSET, f"{PREFIX}.smime-encryption-identity")}
    for declaration in channel.declarations:
        assert check_declaration(declaration.to_json(), "17.5") == [], declaration
    account = channel.find(DeclarationKind.CONFIGURATION, f"{PREFIX}.account").declaration.payload
    assert account["HostName"] == "mail.example.com" and account["EnabledProtocolTypes"] == ["EAS"]
    assert account["SMIME"] == {
        "Signing": {"Enabled": True, "UserOverrideable": True, "IdentityUserOverrideable": False,
                    "IdentityAssetReference": f"{PREFIX}.smime-signing-identity"},
        "Encryption": {"Enabled": True, "UserOverrideable": False, "IdentityUserOverrideable": True,
                       "PerMessageSwitchEnabled": True,
                       "IdentityAssetReference": f"{PREFIX}.smime-encryption-identity"}}
    activation = channel.find(DeclarationKind.ACTIVATION, f"{PREFIX}.activation").declaration.payload
    assert activation == {"StandardConfigurations": [f"{PREFIX}.account"]}
    # Nothing secret in any declaration: the identity assets only name where their data is.
    text = json.dumps([d.to_json() for d in channel.declarations])
    kept = server.admin.identities.profile_identity("alice", "s1").identity
    assert kept.password not in text and base64.b64encode(kept.p12).decode()[:40] not in text


def test_the_identity_asset_is_served_to_its_device_only(server, world):
    admin, device = world
    _setting(admin, "declaration")
    admin.post("/api/v2/labels/l/apply", {"settingId": EAS})
    asset = server.admin.declarations.get(UDID).find(DeclarationKind.ASSET, f"{PREFIX}.smime-signing-identity")
    reference = asset.declaration.payload["Reference"]
    assert asset.declaration.payload["Authentication"] == {"Type": "MDM"}
    assert reference["DataURL"].startswith(server.url + "/mdm/ddm/asset/")
    answer = _get_asset(device, reference["DataURL"])
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    credential = IdentityCredential.decode(answer.body)
    kept = server.admin.identities.profile_identity("alice", "s1").identity
    assert credential == IdentityCredential(kept.p12, kept.password)  # as a profile would embed it
    _, certificate, _ = pkcs12.load_key_and_certificates(credential.identity, credential.password.encode())
    assert certificate == identity("alice-sig", expired=False)[0]  # the key p12_for caches
    assert check_credential("com.apple.credential.identity", json.loads(answer.body)) == []
    assert len(answer.body) == reference["Size"]
    credentials = server.admin.declarations.get(UDID).find(DeclarationKind.ASSET, f"{PREFIX}.credentials")
    user_name = _get_asset(device, credentials.declaration.payload["Reference"]["DataURL"])
    assert json.loads(user_name.body) == {"Type": "com.apple.credential.usernameandpassword", "UserName": "alice"}
    assert check_credential("com.apple.credential.usernameandpassword", json.loads(user_name.body)) == []

    _user(admin, "bob")
    bob = _enroll(server, BOB_UDID, "bob")  # enrolled, but the asset was declared to alice's device
    url = reference["DataURL"]
    refusals = {
        "another device": _get_asset(bob, url),
        "no identity": _get_asset(device, url, signed=False),
        "a user channel the device does not have": _get_asset(device, url + "?user=bob"),
        "an asset never declared": _get_asset(device, url.replace("signing", "nothing")),
        "a signature over other bytes": device.http.request("GET", urlsplit(url).path, b"", {
            "Mdm-Signature": mdm_signature(b"x", device.certificate, device.key)}),
    }
    assert {name: answer.status for name, answer in refusals.items()} == {
        "another device": 404, "no identity": 403, "a user channel the device does not have": 404,
        "an asset never declared": 404, "a signature over other bytes": 403}
    for answer in refusals.values():
        assert answer.body.startswith(b"no asset") or answer.body.startswith(b"asset data needs") \
            or answer.body.startswith(b"device identity refused"), answer.body
        assert credential.password.encode() not in answer.body
    # Bob's own copy of the setting names Bob's identity, at the same address on his device.
    assert admin.call("PUT", "/api/v2/labels/l", {"name": "L", "type": "manual",
                                                  "deviceUuids": [UDID, BOB_UDID]})[0] == 200
    bobs = IdentityCredential.decode(_get_asset(bob, url).body)
    bobs_certificate = pkcs12.load_key_and_certificates(bobs.identity, bobs.password.encode())[1]
    assert bobs_certificate == identity("bob-sig", expired=False)[0]
    device.check_out()
    assert _get_asset(device, url).status == 403  # a checked-out device has no MDM identity any more


def test_unchanged_re_renders_keep_tokens_and_edits_move_only_what_changed(server, world):
    admin, device = world
    _setting(admin, "declaration")
    admin.post("/api/v2/labels/l/apply", {"settingId": EAS})
    before = server.admin.declarations.get(UDID)
    server.clock.advance(60)
    admin.post("/api/v2/labels/l/apply", {"settingId": EAS})  # applied again: nothing new
    device.authenticate()  # a check-in re-renders: still nothing new
    assert _pending(server).count("DeclarativeManagement") == 1
    assert server.admin.declarations.get(UDID).tokens() == before.tokens()
    body = {**EXCHANGE, "delivery": "declaration", "smime": {**SMIME, "per_message_switch": False}}
    assert admin.call("PUT", f"/api/v2/settings/{EAS}", body)[0] == 200
    after = server.admin.declarations.get(UDID)
    assert after.token != before.token
    moved = {d.identifier for d in after.declarations} - {d.identifier for d in before.declarations}
    assert moved == set()
    changed = {d.identifier for d in after.declarations if d not in before.declarations}
    assert changed == {f"{PREFIX}.account"}  # assets and activation keep their server tokens


def test_auto_is_a_declaration_from_ios_17_and_a_profile_below(server, world):
    admin, _ = world
    _user(admin, "bob")
    old = _enroll(server, BOB_UDID, "bob", os_version="16.7")
    admin.call("PUT", "/api/v2/labels/l", {"name": "L", "type": "manual", "deviceUuids": [UDID, BOB_UDID]})
    _setting(admin, "auto")
    admin.post("/api/v2/labels/l/apply", {"settingId": EAS})
    assert _pending(server, UDID) == ["DeclarativeManagement"]
    assert _pending(server, old.udid) == ["InstallProfile"]
    assert server.admin.declarations.get(BOB_UDID).declarations == ()


def test_switching_delivery_removes_the_old_form_first(server, world):
    admin, device = world
    _setting(admin, "profile")
    admin.post("/api/v2/labels/l/apply", {"settingId": EAS})
    assert _pending(server) == ["InstallProfile"]
    device.session()  # installed
    assert admin.call("PUT", f"/api/v2/settings/{EAS}", {**EXCHANGE, "delivery": "declaration", "smime": SMIME})[0] \
        == 200
    assert _pending(server) == ["RemoveProfile", "DeclarativeManagement"]
    device.session()
    assert admin.call("PUT", f"/api/v2/settings/{EAS}", {**EXCHANGE, "delivery": "profile", "smime": SMIME})[0] == 200
    assert _pending(server) == ["DeclarativeManagement", "InstallProfile"]  # withdrawn, then the profile
    assert server.admin.declarations.get(UDID).declarations == ()


def test_remove_from_label_withdraws_the_declarations(server, world):
    admin, device = world
    _setting(admin, "declaration")
    admin.post("/api/v2/labels/l/apply", {"settingId": EAS})
    device.session()
    status, _ = admin.post("/api/v2/labels/l/remove", {"settingId": EAS})
    assert status == 200
    assert _pending(server) == ["DeclarativeManagement"]
    assert server.admin.declarations.get(UDID).declarations == ()
    command = decode_command(server.storage.list_commands(UDID)[-1].payload)
    assert TokensResponse.decode(command.keys["Data"]).declarations_token == server.admin.declarations.get(UDID).token
