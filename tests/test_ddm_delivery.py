"""Email and Exchange settings delivered as DDM declarations, end to end on the server: the admin API's
`delivery` field, Apply to Label queuing DeclarativeManagement instead of InstallProfile, declarations that
conform to Apple's schema, and identity assets served to the one device they were declared to.
"""

from __future__ import annotations

import base64
import functools
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from kits.admin_kit import PASSWORD
from kits.ddm_schema import check_credential, check_declaration
from server_kit import BACKENDS, CHECKIN, START, AdminClient, SignedDevice, make_server

from mdm_protocol.checkin import Authenticate, DeclarativeManagement, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.ddm import (
    DeclarationKind,
    DeclarationsStatus,
    DeclarationStatus,
    IdentityCredential,
    StatusReason,
    StatusReport,
    TokensResponse,
    Validity,
)
from mdm_protocol.report import decode_command
from mdm_server.ca import CertificateAuthority
from mdm_server.pki import export_pkcs12

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


@functools.cache
def mail_ca() -> CertificateAuthority:
    """The CA of the users' S/MIME identities, valid at the test server's time."""
    return CertificateAuthority.create("mail CA", now=datetime.fromtimestamp(START, UTC) - timedelta(days=30))


_IDENTITIES: dict[str, tuple[x509.Certificate, object]] = {}


def identity(name: str, key_type: str = "ec") -> tuple[x509.Certificate, object]:
    """One identity per name (issued once, whatever the arguments of later calls)."""
    if name not in _IDENTITIES:
        issued = datetime.fromtimestamp(START, UTC) - timedelta(days=1)
        _IDENTITIES[name] = mail_ca().issue_device_identity(name, issued, key_type)
    return _IDENTITIES[name]


def _p12(name: str, key_type: str = "ec") -> bytes:
    certificate, key = identity(name, key_type)
    return export_pkcs12(certificate, key, PASSWORD, name, chain=[mail_ca().certificate])


def _user(admin: AdminClient, user: str) -> None:
    assert admin.post("/api/v2/users", {"userId": user, "email": f"{user}@example.com"})[0] == 201
    # Mail is encrypted to RSA keys only; signing may use EC.
    for setting, p12 in (("s1", _p12(f"{user}-sig")), ("s2", _p12(f"{user}-enc", "rsa"))):
        upload = {"settingId": setting, "p12": base64.b64encode(p12).decode(), "password": PASSWORD}
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
    assert certificate == identity("alice-sig")[0]
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
    assert bobs_certificate == identity("bob-sig")[0]
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


def _report_status(device: SignedDevice, *, broken: str | None = None, stale: str | None = None) -> None:
    """What a device that applied everything sends: each declaration active and valid at its server token
    (`broken`: that one invalid; `stale`: that one at an earlier token)."""
    channel = device.server.admin.declarations.get(device.udid)
    lists: dict[str, list[DeclarationStatus]] = {"activations": [], "configurations": [], "assets": []}
    for declaration in channel.declarations:
        token = "earlier" if declaration.identifier == stale else declaration.server_token
        if declaration.identifier == broken:
            status = DeclarationStatus(declaration.identifier, token, False, Validity.INVALID,
                                       (StatusReason("Error.AssetCannotBeDownloaded"),))
        else:
            status = DeclarationStatus(declaration.identifier, token, True, Validity.VALID)
        lists[declaration.kind.status_key].append(status)
    report = StatusReport.create({}, declarations=DeclarationsStatus(
        tuple(lists["activations"]), tuple(lists["configurations"]), tuple(lists["assets"])))
    message = DeclarativeManagement(endpoint="status", data=report.encode(), udid=device.udid)
    assert device.put(encode_checkin(message), CHECKIN).status == 200


def _trust_the_mail_ca(admin: AdminClient, *devices: SignedDevice, labels: tuple[str, ...] = ("l",)) -> None:
    """A Certificate setting with the CA of the users' identities, installed by profile (as EPMM does)."""
    der = base64.b64encode(mail_ca().certificate.public_bytes(Encoding.DER)).decode()
    status, ca = admin.post("/api/v2/settings", {"kind": "certificate", "name": "Mail CA", "certificate": der})
    assert status == 201, ca
    for label in labels:
        admin.post(f"/api/v2/labels/{label}/apply", {"settingId": ca["id"]})
    for device in devices:
        device.session()


def _accounts(admin: AdminClient, udid: str = UDID) -> tuple[list[dict], list[str]]:
    status, body = admin.get(f"/api/v2/devices/{udid}/readiness")
    assert status == 200, body
    return body["accounts"], body["notes"]


def _view(account: dict) -> tuple:
    return (account["signing"]["state"], account["encryption"]["state"], account["encryptByDefault"],
            account["perMessageSwitch"], account["signingUserOverrideable"],
            account["encryptionIdentityUserOverrideable"])


def test_readiness_covers_declared_accounts_once_the_device_reports_them(server, world):
    admin, device = world
    _setting(admin, "declaration")
    _trust_the_mail_ca(admin, device)
    admin.post("/api/v2/labels/l/apply", {"settingId": EAS})
    accounts, notes = _accounts(admin)
    assert accounts == [] and f"declaration {PREFIX}.account: the device has not reported it yet" in notes
    device.session()  # DeclarativeManagement acknowledged; the device syncs and reports
    _report_status(device)
    (account,), _ = _accounts(admin)
    assert (account["delivery"], account["profileIdentifier"], account["settingId"]) == (
        "declaration", f"{PREFIX}.account", EAS)
    assert account["payloadType"] == "com.apple.configuration.account.exchange"
    assert account["account"] == "alice@example.com on mail.example.com"
    assert _view(account) == ("ready", "ready", True, True, True, True), account
    assert account["encryption"]["reason"] == f"identity from identity asset {PREFIX}.smime-encryption-identity"
    _report_status(device, broken=f"{PREFIX}.smime-encryption-identity")
    (account,), _ = _accounts(admin)
    assert account["encryption"]["state"] == "not-functional"
    assert "Error.AssetCannotBeDownloaded" in account["encryption"]["reason"]
    assert account["signing"]["state"] == "ready"
    _report_status(device, stale=f"{PREFIX}.account")
    accounts, notes = _accounts(admin)
    assert accounts == [] and any("earlier version" in note for note in notes)


def test_declared_and_profile_accounts_are_judged_by_the_same_rules(server, world):
    """iOS 17: the same EPMM S/MIME options give the same readiness, by profile or by declaration."""
    admin, device = world
    _setting(admin, "declaration")
    status, profile = admin.post("/api/v2/settings", {**EXCHANGE, "name": "P", "smime": SMIME})
    assert status == 201, profile
    _user(admin, "bob")
    bob = _enroll(server, BOB_UDID, "bob")
    admin.post("/api/v2/labels", {"id": "l2", "name": "L2", "type": "manual", "deviceUuids": [BOB_UDID]})
    _trust_the_mail_ca(admin, device, bob, labels=("l", "l2"))
    admin.post("/api/v2/labels/l/apply", {"settingId": EAS})
    admin.post("/api/v2/labels/l2/apply", {"settingId": profile["id"]})
    seen = set()
    for options in (SMIME, {**SMIME, "per_message_switch": False}, {**SMIME, "encryption_by_default": False},
                    {"signing_enabled": True}, {**SMIME, "encryption_identity": None},
                    {**SMIME, "signing_identity": None, "signing_user_overrideable": False}):
        assert admin.call("PUT", f"/api/v2/settings/{EAS}", {**EXCHANGE, "delivery": "declaration",
                                                             "smime": options})[0] == 200
        assert admin.call("PUT", f"/api/v2/settings/{profile['id']}", {**EXCHANGE, "name": "P",
                                                                       "smime": options})[0] == 200
        device.session()
        _report_status(device)
        bob.session()
        (declared,), _ = _accounts(admin)
        (installed,), _ = _accounts(admin, BOB_UDID)
        assert (declared["delivery"], installed["delivery"]) == ("declaration", "profile")
        assert _view(declared) == _view(installed), options
        seen.add(_view(declared))
    assert len(seen) >= 4  # the options really lead to different judgements
