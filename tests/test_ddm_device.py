"""A simulated device's DDM: the exact request sequence, only changed declarations fetched, status documents
checked against Apple's YAML, invalid declarations and failed assets reported with reasons, and readiness.

The server is tests/kits/ddm_device.py's in-memory one (mdm_protocol.ddm documents); effects are compared whole,
as the machine tests do, with the deterministic FakeSigner.
"""

from __future__ import annotations

import json

import pytest
from kits.ddm_device import (
    ASSET_BASE,
    DdmServer,
    activation,
    credential,
    declarations_of,
    drive,
    identity_asset,
    mail_account,
    raw,
)
from kits.ddm_status import check_report, item_names
from kits.keychain_pki import p12, pki, trusting_keychain
from test_device_machine import CHECKIN, NOW, SERVER, T0, FakeSigner, _profile, signature

from device_sim import effects as fx
from device_sim.behaviour import Behaviour
from device_sim.effects import WakeReason
from device_sim.facts import make_facts
from device_sim.machine import DeviceMachine
from device_sim.mail.compose import Draft, MailAccount, send
from device_sim.mail.hub import MailHub
from device_sim.readiness import State
from mdm_protocol.checkin import DeclarativeManagement, encode_checkin
from mdm_protocol.ddm import Declaration, declarative_management_command
from mdm_protocol.errors import ErrorChainItem
from mdm_protocol.report import CommandReport, Status, encode_report
from mdm_server.ca import CertificateAuthority

DAY = 86400.0
SIGNING = {"Signing": {"Enabled": True, "IdentityAssetReference": "id-sign"}}
BOTH = {"Signing": {"Enabled": True, "IdentityAssetReference": "id-sign"},
        "Encryption": {"Enabled": True, "IdentityAssetReference": "id-crypt", "PerMessageSwitchEnabled": False}}


@pytest.fixture(scope="module")
def authority():
    return CertificateAuthority.create("test CA", now=NOW)


def enrolled(authority, os_version="17.5", **behaviour) -> DeviceMachine:
    machine = DeviceMachine(make_facts(4, 0, os_version), seed=4, behaviour=Behaviour(**behaviour),
                            signer=FakeSigner(), keychain=trusting_keychain())
    machine.install_enrollment(_profile(authority), T0)
    machine.response(1, 200, b"", T0)
    assert machine.response(2, 200, b"", T0) == [fx.Enrolled(machine.facts.udid)]
    return machine


def server_with(*declarations: Declaration, assets: bool = True) -> DdmServer:
    server = DdmServer()
    server.put(*declarations)
    if assets:
        keys = pki()
        server.assets[ASSET_BASE + "id-sign"] = credential(p12(keys.alice, keys.alice_key, cas=(keys.ca,)))
        server.assets[ASSET_BASE + "id-crypt"] = credential(p12(keys.bob, keys.bob_key, cas=(keys.ca,)))
    return server


def smime_mail(**kw) -> list[Declaration]:
    return [activation("act-1", "mail-1"), mail_account(smime=BOTH, **kw), identity_asset("id-sign"),
            identity_asset("id-crypt")]


def kick(machine: DeviceMachine, server: DdmServer, now: float = T0) -> list[fx.Effect]:
    """The server queues DeclarativeManagement and pushes; the device runs the session and the sync."""
    server.commands.append(declarative_management_command(command_uuid=f"DM-{len(server.sent)}"))
    return drive(machine, server, machine.push(now), now)


# --- expected requests, built independently of the device code --------------------------------------------

def ddm(request_id: int, endpoint: str, now: float = T0, data: bytes | None = None,
        udid: str | None = None) -> fx.SendRequest:
    body = encode_checkin(DeclarativeManagement(endpoint=endpoint, data=data, udid=udid))
    what = endpoint.split("/", 1)[0]
    return fx.SendRequest(request_id, CHECKIN, fx.CHECKIN_TYPE, body, signature(body, now),
                          f"DeclarativeManagement:{what}")


def asset_get(request_id: int, identifier: str, now: float = T0) -> fx.SendRequest:
    return fx.SendRequest(request_id, ASSET_BASE + identifier, "", b"", signature(b"", now), "DDM asset",
                          method="GET")


def session(machine: DeviceMachine, first_id: int, command_uuid: str, now: float = T0) -> list[fx.Effect]:
    """Idle, the command acknowledged, the session's end: what every DDM kick starts with."""
    udid = machine.facts.udid
    idle = encode_report(CommandReport(Status.IDLE, udid=udid))
    ack = encode_report(CommandReport(Status.ACKNOWLEDGED, udid=udid, command_uuid=command_uuid))
    return [fx.SendRequest(first_id, SERVER, fx.CONNECT_TYPE, idle, signature(idle, now), "Idle"),
            fx.CommandHandled("DeclarativeManagement", command_uuid, Status.ACKNOWLEDGED),
            fx.SendRequest(first_id + 1, SERVER, fx.CONNECT_TYPE, ack, signature(ack, now),
                           "DeclarativeManagement:Acknowledged"),
            fx.SessionEnded(1, "done")]


# --- the request sequence ------------------------------------------------------------------------------------

def test_first_sync_follows_a_real_devices_sequence(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    effects = kick(machine, server)
    udid = machine.facts.udid
    status = server.sent[-1]
    assert effects == [
        *session(machine, 3, "DM-0"),
        ddm(5, "tokens", udid=udid), ddm(6, "declaration-items", udid=udid),
        ddm(7, "declaration/activation/act-1", udid=udid), ddm(8, "declaration/configuration/mail-1", udid=udid),
        ddm(9, "declaration/asset/id-crypt", udid=udid), ddm(10, "declaration/asset/id-sign", udid=udid),
        asset_get(11, "id-crypt"), asset_get(12, "id-sign"),
        ddm(13, "tokens", udid=udid),
        fx.ReadinessChanged("mail-1", machine.readiness["mail-1"]),
        ddm(14, "status", udid=udid, data=json_data(status)),
        fx.Log("DDM sync: status reported"),
        fx.WakeAt(T0 + DAY, WakeReason.DDM_FULL_REPORT),
    ]
    assert server.requests == ["Idle", "DeclarativeManagement:Acknowledged", "tokens", "declaration-items",
                               "declaration/activation/act-1", "declaration/configuration/mail-1",
                               "declaration/asset/id-crypt", "declaration/asset/id-sign",
                               f"GET {ASSET_BASE}id-crypt", f"GET {ASSET_BASE}id-sign", "tokens", "status"]
    assert len(server.reports) == 1


def json_data(request: fx.SendRequest) -> bytes:
    from mdm_protocol.checkin import decode_checkin
    message = decode_checkin(request.body)
    assert isinstance(message, DeclarativeManagement) and message.data is not None
    return message.data


def test_the_first_status_report_says_what_is_active(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    kick(machine, server)
    [report] = server.reports
    declarations = declarations_of(report)
    assert {name: (entry["active"], entry["valid"], entry.get("reasons")) for name, entry in declarations.items()} \
        == {name: (True, "valid", None) for name in ("act-1", "mail-1", "id-sign", "id-crypt")}
    assert declarations["mail-1"]["server-token"] == server.declarations["mail-1"].server_token
    assert report.item("account.list.mail.incoming") == [
        {"identifier": "mail-1", "declaration-identifier": "mail-1", "visible-name": "Work mail",
         "hostname": "imap.example.com", "port": 993, "is-mail-enabled": True}]
    certificates = {entry.get("declaration-identifier"): entry for entry in report.item("security.certificate.list")}
    assert certificates["id-sign"]["subject-summary"] == "alice@example.com"
    assert certificates["id-sign"]["is-identity"] is True
    assert report.full_report is False


def test_resending_unchanged_declarations_gives_only_command_and_tokens(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    kick(machine, server)
    before = len(server.requests)
    effects = kick(machine, server, T0 + 60)
    assert effects == [*session(machine, 15, "DM-12", T0 + 60), ddm(17, "tokens", T0 + 60, udid=machine.facts.udid),
                       fx.Log("DDM sync: declarations unchanged")]
    assert server.requests[before:] == ["Idle", "DeclarativeManagement:Acknowledged", "tokens"]
    assert len(server.reports) == 1


def test_only_new_or_changed_declarations_are_fetched(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    kick(machine, server)
    server.put(mail_account(smime=BOTH, VisibleName="Renamed"), mail_account("mail-2"),
               activation("act-1", "mail-1", "mail-2"))
    before = len(server.requests)
    kick(machine, server, T0 + 60)
    assert server.requests[before:] == [
        "Idle", "DeclarativeManagement:Acknowledged", "tokens", "declaration-items",
        "declaration/activation/act-1", "declaration/configuration/mail-1", "declaration/configuration/mail-2",
        "tokens", "status"]  # the identity assets are unchanged: neither declaration nor data fetched again
    report = server.reports[-1]
    assert [entry["visible-name"] for entry in report.item("account.list.mail.incoming")] == ["Renamed", "Work mail"]
    assert report.item("security.certificate.list") is None  # incremental: the certificates did not change


def test_a_removed_declaration_leaves_and_is_reported_removed(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    kick(machine, server)
    for name in ("mail-1", "id-sign", "id-crypt"):
        del server.declarations[name]
    server.put(activation("act-1"))
    kick(machine, server, T0 + 60)
    report = server.reports[-1]
    assert report.item("account.list.mail.incoming") == [{"identifier": "mail-1", "_removed": True}]
    assert set(declarations_of(report)) == {"act-1"}
    assert "mail-1" not in machine.readiness
    assert [i.payload_uuid for i in machine.profiles.keychain.identities() if i.payload_uuid.startswith("ddm:")] == []


def test_a_server_that_changes_mid_sync_is_asked_for_its_manifest_again(authority):
    machine, server = enrolled(authority), server_with(activation("act-1", "mail-1"), mail_account())
    server.changes[5] = [mail_account("mail-1", VisibleName="Newer")]  # after the device's 5th request
    kick(machine, server)
    assert server.requests[2:] == ["tokens", "declaration-items", "declaration/activation/act-1",
                                   "declaration/configuration/mail-1", "tokens", "declaration-items",
                                   "declaration/configuration/mail-1", "tokens", "status"]
    assert server.reports[-1].item("account.list.mail.incoming")[0]["visible-name"] == "Newer"


def test_a_push_during_the_sync_waits_for_its_end(authority):
    machine, server = enrolled(authority), server_with(activation("act-1", "mail-1"), mail_account())
    server.commands.append(declarative_management_command(command_uuid="DM"))
    effects = machine.push(T0)
    effects += machine.response(3, 200, server.answer(effects[0])[1], T0)  # Idle answered: the command
    effects += machine.response(4, 200, b"", T0)  # Acknowledged answered: the session ends, tokens go out
    assert effects[-1].message == "DeclarativeManagement:tokens"
    assert machine.push(T0) == []  # pushed mid-sync: the session starts after it
    rest = drive(machine, server, [effects[-1]], T0)
    assert [e.message for e in rest if isinstance(e, fx.SendRequest)][-2:] == ["DeclarativeManagement:status", "Idle"]


# --- OS versions --------------------------------------------------------------------------------------------

def test_before_ios_15_the_command_is_unknown(authority):
    machine, server = enrolled(authority, os_version="14.0"), server_with(*smime_mail())
    effects = kick(machine, server)
    chain = (ErrorChainItem(12021, "MCMDMErrorDomain", "“DeclarativeManagement” is not a valid request type.",
                            "“DeclarativeManagement” is not a valid request type."),)
    assert fx.CommandHandled("DeclarativeManagement", "DM-0", Status.ERROR, chain) in effects
    assert server.requests == ["Idle", "DeclarativeManagement:Error"]


@pytest.mark.parametrize(("version", "items", "full"), [
    ("15.0", ["management.declarations"], None),
    ("16.0", ["account.list.mail.incoming", "account.list.mail.outgoing", "management.declarations"], None),
    ("17.5", ["account.list.mail.incoming", "account.list.mail.outgoing", "management.declarations",
              "security.certificate.list"], False),
])
def test_status_reports_conform_to_apples_yaml_at_each_version(authority, version, items, full):
    machine, server = enrolled(authority, os_version=version), server_with(*smime_mail())
    kick(machine, server)
    [report] = server.reports
    document = report.to_json()
    assert check_report(document, version) == []
    assert item_names(document) == items
    assert document.get("FullReport") is full


def test_the_status_validator_finds_what_is_wrong():
    bad = {"StatusItems": {"management": {"declarations": {"activations": [
        {"identifier": "a", "server-token": "t", "active": "yes", "valid": "maybe"}], "configurations": [],
        "assets": [], "management": []}}, "security": {"certificate": {"list": [
            {"identifier": "c", "subject-summary": "x", "is-identity": True, "data": "!!"}]}},
        "device": {"colour": "red"}}, "Errors": []}
    problems = check_report(bad, "17.5")
    assert "management.declarations.activations[].active must be <boolean>, not str" in problems
    assert any("'maybe' is not one of" in p for p in problems)
    assert "security.certificate.list[].data is not base64" in problems
    assert "StatusItems.device.colour is not a status item of the schema" in problems


def test_smime_before_ios_17_is_ignored_and_identity_assets_are_not_supported(authority):
    machine, server = enrolled(authority, os_version="16.0"), server_with(*smime_mail())
    kick(machine, server)
    declarations = declarations_of(server.reports[-1])
    assert declarations["mail-1"]["active"] is True  # the account installs; its SMIME is not read
    assert declarations["id-sign"]["valid"] == "invalid"
    assert declarations["id-sign"]["reasons"][0]["code"] == "Error.ConfigurationNotSupported"
    assert "GET" not in " ".join(server.requests)
    readiness = machine.readiness["mail-1"]
    assert (readiness.signing.state, readiness.encryption.state, readiness.ignored_keys) == (
        State.DISABLED, State.DISABLED, ("SMIME",))
    assert readiness.signing.reason == "iOS 16.0 does not read SMIME in account declarations (from iOS 17.0)"


# --- full reports -------------------------------------------------------------------------------------------

def test_a_full_report_about_every_24_hours(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    kick(machine, server)
    effects = drive(machine, server, machine.timer(T0 + DAY), T0 + DAY)
    assert [e.message for e in effects if isinstance(e, fx.SendRequest)] == ["DeclarativeManagement:status"]
    assert effects[-1] == fx.WakeAt(T0 + 2 * DAY, WakeReason.DDM_FULL_REPORT)
    report = server.reports[-1]
    assert report.full_report is True
    assert item_names(report.to_json()) == ["account.list.exchange", "account.list.mail.incoming",  # [] included
                                            "account.list.mail.outgoing", "management.declarations",
                                            "security.certificate.list"]
    assert check_report(report.to_json(), "17.5") == []


def test_no_full_reports_before_ios_17(authority):
    machine, server = enrolled(authority, os_version="16.0"), server_with(*smime_mail())
    effects = kick(machine, server)
    assert not [e for e in effects if isinstance(e, fx.WakeAt)]


# --- invalid declarations and failed assets -----------------------------------------------------------------

def test_invalid_declarations_are_reported_with_reasons_and_never_crash(authority):
    machine, server = enrolled(authority), server_with(
        activation("act-1", "mail-bad", "mail-ghost", "odd"),
        mail_account("mail-bad", OutgoingServer={"HostName": 25, "AuthenticationMethod": "None"}, Colour="red"),
        raw("com.apple.configuration.made.up", "odd", {}), assets=False)
    server.declarations["odd"] = raw("com.apple.configuration.made.up", "odd", {})
    kick(machine, server)
    declarations = declarations_of(server.reports[-1])
    bad = declarations["mail-bad"]
    assert (bad["active"], bad["valid"]) == (False, "invalid")
    assert [reason["code"] for reason in bad["reasons"]] == ["Error.ConfigurationCannotBeDeserialized",
                                                             "Error.UnknownPayloadKeys"]
    assert bad["reasons"][1]["details"] == {"UnknownPayloadKeys": ["Payload.Colour"]}
    assert declarations["odd"]["reasons"][0]["code"] == "Error.ConfigurationNotSupported"
    act = declarations["act-1"]
    assert (act["active"], act["reasons"]) == (True, [{
        "code": "Error.MissingConfigurations", "description": "configurations mail-ghost are not on the device",
        "details": {"Identifier": "act-1", "ServerToken": server.declarations["act-1"].server_token,
                    "ConfigurationIdentifiers": ["mail-ghost"]}}])
    assert machine.readiness == {}
    assert check_report(server.reports[-1].to_json(), "17.5") == []


def test_a_declaration_body_that_is_not_json_is_invalid(authority):
    machine, server = enrolled(authority), server_with(activation("act-1", "mail-1"), mail_account(), assets=False)
    real = server._ddm
    server._ddm = lambda message: b"{not json" if message.endpoint.endswith("mail-1") else real(message)
    kick(machine, server)
    entry = declarations_of(server.reports[-1])["mail-1"]
    assert (entry["valid"], entry["reasons"][0]["code"]) == ("invalid", "Error.InvalidPayload")


def test_unreferenced_configurations_and_assets_say_so(authority):
    machine, server = enrolled(authority), server_with(mail_account(), identity_asset("id-sign"))
    kick(machine, server)
    declarations = declarations_of(server.reports[-1])
    assert declarations["mail-1"]["reasons"][0]["code"] == "Info.NotReferencedByActivation"
    assert declarations["id-sign"]["reasons"][0]["code"] == "Info.NotReferencedByConfiguration"
    assert "GET" not in " ".join(server.requests)  # nothing active needs the asset's data


@pytest.mark.parametrize(("data", "code", "words"), [
    (404, "Error.AssetCannotBeDownloaded", "HTTP 404"),
    (b"not json", "Error.AssetCannotBeDeserialized", "not JSON"),
    (credential(p12(pki().alice, pki().alice_key), password="wrong"), "Error.AssetCannotBeDeserialized",
     "the password does not open the PKCS#12"),
    (json.dumps({"Type": "com.apple.credential.identity", "Password": "x"}).encode(),
     "Error.AssetCannotBeDeserialized", "required key Identity is missing"),
])
def test_a_failed_asset_is_a_reason_in_status(authority, data, code, words):
    machine, server = enrolled(authority), server_with(activation("act-1", "mail-1"), mail_account(smime=SIGNING),
                                                        identity_asset("id-sign"))
    server.assets[ASSET_BASE + "id-sign"] = data
    kick(machine, server)
    declarations = declarations_of(server.reports[-1])
    asset, account = declarations["id-sign"], declarations["mail-1"]
    assert (asset["active"], asset["reasons"][0]["code"]) == (False, code)
    assert words in asset["reasons"][0]["description"]
    assert (account["active"], account["reasons"][0]["code"]) == (False, "Error.ConfigurationCannotBeApplied")
    assert "mail-1" not in machine.readiness


def test_an_asset_that_fails_verification(authority):
    machine, server = enrolled(authority), server_with(
        activation("act-1", "mail-1"), mail_account(smime=SIGNING),
        identity_asset("id-sign", **{"Hash-SHA-256": "00" * 32}))
    kick(machine, server)
    reason = declarations_of(server.reports[-1])["id-sign"]["reasons"][0]
    assert reason["code"] == "Error.AssetCannotBeVerified"


def test_an_unreachable_asset_is_retried_then_reported(authority):
    machine, server = enrolled(authority, retry_delays=(5.0,)), server_with(
        activation("act-1", "mail-1"), mail_account(smime=SIGNING), identity_asset("id-sign"))
    server.assets[ASSET_BASE + "id-sign"] = "connection refused"
    effects = kick(machine, server)
    assert effects[-2:] == [fx.Log("DDM asset failed (connection refused); retry in 5s"),
                            fx.WakeAt(T0 + 5, WakeReason.RETRY)]
    drive(machine, server, machine.timer(T0 + 5), T0 + 5)  # fails again: no retries left
    assert server.requests[-4:] == [f"GET {ASSET_BASE}id-sign", f"GET {ASSET_BASE}id-sign", "tokens", "status"]
    reason = declarations_of(server.reports[-1])["id-sign"]["reasons"][0]
    assert reason == {"code": "Error.AssetCannotBeDownloaded",
                      "description": f"{ASSET_BASE}id-sign: connection refused",
                      "details": {"Error": f"{ASSET_BASE}id-sign: connection refused"}}


def test_a_data_url_that_is_not_https_is_never_fetched(authority):
    machine, server = enrolled(authority), server_with(
        activation("act-1", "mail-1"), mail_account(smime=SIGNING),
        identity_asset("id-sign", url="http://assets.example.com/id"))
    kick(machine, server)
    assert "GET" not in " ".join(server.requests)
    assert declarations_of(server.reports[-1])["id-sign"]["reasons"][0]["code"] == "Error.AssetCannotBeDownloaded"


def test_authentication_none_fetches_without_the_device_identity(authority):
    machine, server = enrolled(authority), server_with(
        activation("act-1", "mail-1"), mail_account(smime=SIGNING), identity_asset("id-sign", authentication=None))
    kick(machine, server)
    [get] = [request for request in server.sent if request.method == "GET"]
    assert (get.signature, get.client_identity) == (None, None)
    mdm = [request for request in server.sent if request.method == "PUT"][0]
    assert mdm.client_identity is not None


# --- predicates ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("predicate", "active", "code"), [
    ("@status(device.operating-system.version) >= '17.0'", True, None),
    ("@status(device.operating-system.version) >= '17.10'", False, "Info.Predicate"),
    ("@status(device.model.family) == 'iPhone' AND NOT (@property(tier) == 'gold')", True, None),
    ("@status(device.colour) == 'red'", False, "Error.UnableToEvaluatePredicate"),
    ("SUBQUERY(x, $y, $y > 1).@count > 0", False, "Error.UnableToParsePredicate"),
])
def test_activation_predicates(authority, predicate, active, code):
    machine, server = enrolled(authority), server_with(activation("act-1", "mail-1", predicate=predicate),
                                                        mail_account(), assets=False)
    kick(machine, server)
    declarations = declarations_of(server.reports[-1])
    act = declarations["act-1"]
    assert act["active"] is active and declarations["mail-1"]["active"] is active
    assert [reason["code"] for reason in act.get("reasons", [])] == ([code] if code else [])
    if code:
        assert act["reasons"][0]["details"]["Predicate"] == predicate


def test_management_properties_feed_predicates(authority):
    machine, server = enrolled(authority), server_with(
        Declaration.create("com.apple.management.properties", "props", {"tier": "gold"}),
        activation("act-1", "mail-1", predicate="@property(tier) == 'gold'"), mail_account(), assets=False)
    kick(machine, server)
    declarations = declarations_of(server.reports[-1])
    assert declarations["act-1"]["active"] and declarations["props"]["active"]


# --- accounts, readiness and mail -----------------------------------------------------------------------------

def test_a_ddm_account_is_ready_and_its_identity_signs_mail(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    kick(machine, server)
    readiness = machine.readiness["mail-1"]
    assert (readiness.signing.state, readiness.signing.identity) == (State.READY, "ddm:id-sign")
    assert (readiness.encryption.state, readiness.encryption.identity) == (State.READY, "ddm:id-crypt")
    assert (readiness.encrypt_by_default, readiness.per_message_switch) == (True, False)
    assert readiness.payload_type == "com.apple.configuration.account.mail"
    switch = {**BOTH, "Encryption": {**BOTH["Encryption"], "PerMessageSwitchEnabled": True}}
    server.put(mail_account(smime=switch))
    kick(machine, server, T0 + 60)
    readiness = machine.readiness["mail-1"]
    assert (readiness.encrypt_by_default, readiness.per_message_switch) == (True, True)
    hub = MailHub("example.com")
    hub.add_mailbox("alice@example.com")
    hub.add_mailbox("carol@example.com")
    account = MailAccount("alice@example.com", hub, machine.profiles.keychain)
    sent = send(account, Draft(("carol@example.com",), "hi", "signed by DDM"), readiness=readiness, now=NOW,
                encrypt=False)
    assert (sent.signed, sent.encrypted) == (True, False)


def test_unenrolling_removes_what_declarations_installed(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    kick(machine, server)
    machine.remove_mdm_profile(T0 + 60)
    assert "mail-1" not in machine.readiness
    assert not [i for i in machine.profiles.keychain.identities() if i.payload_uuid.startswith("ddm:")]
    assert machine.ddm.store.held == {}


def test_bad_command_data_is_a_format_error(authority):
    machine, server = enrolled(authority), server_with(*smime_mail())
    from mdm_protocol.commands import declarative_management
    server.commands.append(declarative_management(b"{}", command_uuid="DM-bad"))
    effects = drive(machine, server, machine.push(T0), T0)
    assert fx.CommandHandled("DeclarativeManagement", "DM-bad", Status.COMMAND_FORMAT_ERROR) in effects
    assert "tokens" not in server.requests


def test_exchange_accounts_and_legacy_profiles(authority):
    exchange = Declaration.create("com.apple.configuration.account.exchange", "eas-1", {
        "VisibleName": "Exchange", "EnabledProtocolTypes": ["EAS"], "UserIdentityAssetReference": "me",
        "HostName": "eas.example.com", "NotesServiceActive": False})
    me = Declaration.create("com.apple.asset.useridentity", "me", {"FullName": "Alice", "EmailAddress": "a@x.com"})
    legacy = Declaration.create("com.apple.configuration.legacy", "old", {"ProfileURL": "https://x/p.mobileconfig"})
    machine, server = enrolled(authority), server_with(activation("act-1", "eas-1", "old"), exchange, me, legacy,
                                                        assets=False)
    kick(machine, server)
    report = server.reports[-1]
    assert report.item("account.list.exchange") == [{
        "identifier": "eas-1", "declaration-identifier": "eas-1", "visible-name": "Exchange",
        "hostname": "eas.example.com", "is-mail-enabled": True, "are-calendars-enabled": True,
        "are-contacts-enabled": True, "are-notes-enabled": False, "are-reminders-enabled": True}]
    declarations = declarations_of(report)
    assert declarations["me"]["active"] is True
    assert (declarations["old"]["active"], declarations["old"]["reasons"][0]["code"]) == (
        False, "Error.ConfigurationCannotBeApplied")
    assert machine.readiness["eas-1"].signing.state is State.DISABLED  # no SMIME: off, with its reason
    assert machine.readiness["eas-1"].signing.reason == "the declaration has no SMIME settings"
    assert check_report(report.to_json(), "17.5") == []
