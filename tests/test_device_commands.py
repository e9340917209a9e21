"""Every command a simulated iPhone/iPad answers, by OS version, kind and supervision, checked against Apple's
command schema (tests/command_schema.py); unavailable ones get the real 12021 chain; state-changing ones change
the device; corpus captures replayed."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from kits.command_schema import check_response, command_ios, commands
from kits.corpus import DEVICE_MESSAGES, require

from device_sim import effects as fx
from device_sim.behaviour import Behaviour
from device_sim.command_runner import ANSWERS, CommandContext, answer_command
from device_sim.command_table import COMMANDS, Mode
from device_sim.device_commands import SETTING_ITEMS, USER_ENROLLMENT_ITEMS
from device_sim.device_state import DeviceState
from device_sim.facts import DeviceKind, make_facts
from device_sim.machine import DeviceMachine, Phase
from device_sim.profiles import DeviceProfiles, InstalledProfile
from mdm_protocol.commands import REQUEST_KEYS
from mdm_protocol.osversion import OSVersion
from mdm_protocol.report import Command, Status, decode_report, encode_command
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import build_enrollment

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
T0 = NOW.timestamp()
TOPIC = "com.apple.mgmt.External.0c4f3f0e-9a7e-4f43-8d2b-3b0a4f1e2d3c"

# A valid request for every command the device speaks.
REQUESTS = {
    "InstallProfile": None, "RemoveProfile": {"Identifier": "com.example.absent"}, "ProfileList": {},
    "CertificateList": {}, "DeviceInformation": {"Queries": ["UDID", "OSVersion", "DeviceName"]},
    "SecurityInfo": {}, "DeviceLock": {"Message": "Call IT", "PhoneNumber": "+44 20 7946 0000"},
    "EraseDevice": {}, "ClearPasscode": {"UnlockToken": b"\x01" * 64}, "ClearRestrictionsPassword": {},
    "RestartDevice": {}, "ShutDownDevice": {}, "EnableLostMode": {"Message": "Lost"}, "DisableLostMode": {},
    "Restrictions": {"ProfileRestrictions": True},
    "Settings": {"Settings": [{"Item": "DeviceName", "DeviceName": "Kiosk 7"},
                              {"Item": "DataRoaming", "Enabled": True}, {"Item": "Bluetooth", "Enabled": "on"}]},
    "AvailableOSUpdates": {}, "OSUpdateStatus": {}, "ScheduleOSUpdate": {"Updates": [{"InstallAction": "Default"}]},
    "InstalledApplicationList": {}, "ManagedApplicationList": {},
    "InstallApplication": {"iTunesStoreID": 618783545, "ManagementFlags": 1},
    "RemoveApplication": {"Identifier": "com.apple.mobilesafari"}, "ProvisioningProfileList": {},
}
VERSIONS = ("9.3.3", "10.3", "12.0", "16.0", "17.5", "18.1", "26.1", "27.0")
KINDS = (DeviceKind.IPHONE, DeviceKind.IPAD, DeviceKind.SHARED_IPAD, DeviceKind.USER_ENROLLMENT)


def _context(version: str, kind: DeviceKind, supervised: bool) -> CommandContext:
    facts = replace(make_facts(8, 0, version, kind), supervised=supervised or kind is DeviceKind.SHARED_IPAD)
    if kind is DeviceKind.USER_ENROLLMENT:
        facts = replace(facts, supervised=False)
    state = DeviceState.initial(facts)
    return CommandContext(facts, DeviceProfiles(), True, Behaviour(), random.Random(1), T0, lambda: state)


def _report(answer) -> dict:
    report = {"Status": answer.status.value, **answer.extra}
    if answer.error_chain:
        report["ErrorChain"] = [item.to_plist() for item in answer.error_chain]
    return report


def _is_12021(answer, request_type: str) -> bool:
    text = f"“{request_type}” is not a valid request type."
    return answer.status is Status.ERROR and [i.to_plist() for i in answer.error_chain] == [{
        "ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain", "LocalizedDescription": text,
        "USEnglishDescription": text}]


def _schema_says_available(request_type: str, version: str, kind: DeviceKind, supervised: bool) -> bool:
    ios = command_ios(request_type)
    removed = {"AvailableOSUpdates", "OSUpdateStatus", "ScheduleOSUpdate"}  # iOS 27 (PROVENANCE.md)
    if OSVersion.parse(version) < OSVersion.parse(ios["introduced"]):
        return False
    if request_type in removed and OSVersion.parse(version) >= OSVersion.parse("27.0"):
        return False
    if kind is DeviceKind.USER_ENROLLMENT:
        return (ios.get("userenrollment") or {}).get("mode", "allowed") == "allowed"
    if kind is DeviceKind.SHARED_IPAD and (ios.get("sharedipad") or {}).get("mode") == "forbidden":
        return False
    return supervised or kind is DeviceKind.SHARED_IPAD or not ios.get("supervised")


def test_every_handled_command_has_request_keys_and_a_schema_availability():
    assert set(ANSWERS) == set(COMMANDS) <= set(REQUEST_KEYS)
    for request_type, rule in COMMANDS.items():
        ios = command_ios(request_type)
        assert str(rule.introduced) == str(OSVersion.parse(ios["introduced"])), request_type
        assert rule.supervised is bool(ios.get("supervised")), request_type
        assert rule.shared_ipad is Mode((ios.get("sharedipad") or {}).get("mode", "allowed")), request_type
        assert rule.user_enrollment is Mode((ios.get("userenrollment") or {}).get("mode", "allowed")), request_type


@pytest.mark.parametrize("supervised", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_command_answers_as_the_schema_says(version, kind, supervised):
    if kind is DeviceKind.USER_ENROLLMENT and OSVersion.parse(version) < OSVersion.parse("13.0"):
        pytest.skip("User Enrollment starts with iOS 13")
    checked = 0
    for request_type, keys in REQUESTS.items():
        if keys is None:
            continue  # InstallProfile: tests/test_device_install.py
        context = _context(version, kind, supervised)
        answer = answer_command(Command(request_type, keys), context)
        if not _schema_says_available(request_type, version, kind, context.facts.supervised):
            assert _is_12021(answer, request_type), (request_type, answer)
            continue
        assert not _is_12021(answer, request_type), request_type
        assert check_response(request_type, _report(answer), version) == [], request_type
        checked += 1
    assert checked >= 8


def test_ios_27_answers_the_removed_software_update_commands_with_12021():
    for request_type in ("AvailableOSUpdates", "OSUpdateStatus", "ScheduleOSUpdate"):
        on_26 = answer_command(Command(request_type, REQUESTS[request_type]), _context("26.1", DeviceKind.IPHONE, True))
        on_27 = answer_command(Command(request_type, REQUESTS[request_type]), _context("27.0", DeviceKind.IPHONE, True))
        assert on_26.status is Status.ACKNOWLEDGED and _is_12021(on_27, request_type)
    settings = Command("Settings", {"Settings": [{"Item": "SoftwareUpdateSettings", "RecommendationCadence": 1}]})
    assert answer_command(settings, _context("26.1", DeviceKind.IPHONE, True)).extra["Settings"][0]["Status"] == \
        "Acknowledged"
    assert answer_command(settings, _context("27.0", DeviceKind.IPHONE, True)).extra["Settings"][0]["Status"] == "Error"


def test_an_unsupervised_iphone_answers_restart_with_the_captured_12021():
    # micromdm/micromdm#970: RestartDevice on an unsupervised iPhone.
    assert _is_12021(answer_command(Command("RestartDevice"), _context("17.5", DeviceKind.IPHONE, False)),
                     "RestartDevice")


def test_a_26_device_is_offered_27_and_a_27_0_device_27_0_1():
    updates = answer_command(Command("AvailableOSUpdates"), _context("26.1", DeviceKind.IPHONE, True))
    (offer,) = updates.extra["AvailableOSUpdates"]
    assert (offer["Version"], offer["Build"], offer["ProductKey"]) == ("27.0.1", "24A446", "iOSUpdate24A446")


def test_apps_install_list_and_remove_against_the_simulated_store():
    context = _context("18.1", DeviceKind.IPHONE, True)
    installed = answer_command(Command("InstallApplication", {"iTunesStoreID": 618783545}), context)
    assert installed.extra == {"Identifier": "com.tinyspeck.chatlyio", "State": "Installing"}
    again = answer_command(Command("InstallApplication", {"Identifier": "com.tinyspeck.chatlyio"}), context)
    assert again.extra["RejectionReason"] == "AppAlreadyInstalled"
    unknown = answer_command(Command("InstallApplication", {"iTunesStoreID": 1}), context)
    assert unknown.extra == {"RejectionReason": "CouldNotVerifyAppID"}
    managed = answer_command(Command("ManagedApplicationList"), context).extra["ManagedApplicationList"]
    assert set(managed) == {"com.tinyspeck.chatlyio"} and managed["com.tinyspeck.chatlyio"]["Status"] == "Managed"
    listed = answer_command(Command("InstalledApplicationList", {"ManagedAppsOnly": True}), context)
    assert [app["Identifier"] for app in listed.extra["InstalledApplicationList"]] == ["com.tinyspeck.chatlyio"]
    items = answer_command(Command("InstalledApplicationList", {"Items": ["Name", "IsAppClip"]}), context)
    assert all(set(app) == {"Identifier", "Name", "IsAppClip"} for app in items.extra["InstalledApplicationList"])
    assert answer_command(Command("RemoveApplication", {"Identifier": "com.tinyspeck.chatlyio"}), context).status \
        is Status.ACKNOWLEDGED
    assert "com.tinyspeck.chatlyio" not in context.state.apps
    unmanaged = answer_command(Command("RemoveApplication", {"Identifier": "com.apple.mobilesafari"}), context)
    assert unmanaged.status is Status.ERROR  # micromdm/micromdm#841: only what MDM installed
    assert unmanaged.error_chain[0].localized_description == "The app “com.apple.mobilesafari” is not managed."
    unsupervised = _context("18.1", DeviceKind.IPHONE, False)
    assert answer_command(Command("InstallApplication", {"iTunesStoreID": 618783545}), unsupervised).extra[
        "State"] == "Prompting"


def test_restrictions_come_from_the_installed_restrictions_payloads():
    context = _context("18.1", DeviceKind.IPHONE, True)
    payload = {"PayloadType": "com.apple.applicationaccess", "PayloadVersion": 1, "PayloadIdentifier": "r",
               "PayloadUUID": "U", "allowCamera": False, "maxInactivity": 5, "forceEncryptedBackup": True}
    profile = InstalledProfile("com.example.r", "UUID", None, None, (payload,), NOW, (), True)
    context.profiles._profiles[profile.identifier] = profile
    answer = answer_command(Command("Restrictions", {"ProfileRestrictions": True}), context)
    assert answer.extra["GlobalRestrictions"] == {
        "restrictedBool": {"allowCamera": {"value": False}, "forceEncryptedBackup": {"value": True}},
        "restrictedValue": {"maxInactivity": {"value": 5}}}
    assert set(answer.extra["ProfileRestrictions"]) == {"com.example.r"}
    assert check_response("Restrictions", _report(answer), "18.1") == []


# State changes, through the machine -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def enrollment_profile():
    authority = CertificateAuthority.create("test CA", now=NOW)
    return build_enrollment(authority, server_url="https://mdm.example.com", topic=TOPIC, now=NOW,
                            key_type="ec").profile


def _enrolled(profile, version="18.1", supervised=True) -> DeviceMachine:
    facts = replace(make_facts(5, 1, version), supervised=supervised)
    machine = DeviceMachine(facts, seed=5)
    machine.install_enrollment(profile, T0)
    machine.response(1, 200, b"", T0)
    assert machine.response(2, 200, b"", T0) == [fx.Enrolled(facts.device_id)]
    return machine


def _send(machine: DeviceMachine, command: Command) -> tuple[dict, list]:
    pending = machine._pending or machine.push(T0)[0]
    request = pending.request if hasattr(pending, "request") else pending
    effects = machine.response(request.request_id, 200, encode_command(command), T0)
    report = decode_report(effects[-1].body)
    return {"Status": report.status.value, **report.extra}, effects


def _info(machine: DeviceMachine, *queries: str) -> dict:
    report, _ = _send(machine, Command("DeviceInformation", {"Queries": list(queries)}))
    return report["QueryResponses"]


def test_device_lock_locks_and_clear_passcode_clears(enrollment_profile):
    machine = _enrolled(enrollment_profile)
    report, _ = _send(machine, Command("DeviceLock", {"Message": "Return to IT"}))
    assert report == {"Status": "Acknowledged", "MessageResult": "Success"} and machine.state.locked
    security, _ = _send(machine, Command("SecurityInfo"))
    assert security["SecurityInfo"]["PasscodePresent"] is True
    _send(machine, Command("ClearPasscode", {"UnlockToken": b"token"}))
    security, _ = _send(machine, Command("SecurityInfo"))
    assert security["SecurityInfo"]["PasscodePresent"] is False
    machine.unlock(T0)
    assert not machine.state.locked


def test_settings_device_name_renames_the_device(enrollment_profile):
    machine = _enrolled(enrollment_profile)
    report, _ = _send(machine, Command("Settings", {"Settings": [{"Item": "DeviceName", "DeviceName": "Kiosk 7"}]}))
    assert report["Settings"] == [{"Item": "DeviceName", "Status": "Acknowledged"}]
    assert machine.facts.device_name == "Kiosk 7" and _info(machine, "DeviceName") == {"DeviceName": "Kiosk 7"}
    unsupervised = _enrolled(enrollment_profile, supervised=False)
    report, _ = _send(unsupervised, Command("Settings", {"Settings": [{"Item": "DeviceName", "DeviceName": "X"}]}))
    assert report["Settings"] == [{"Item": "DeviceName", "Status": "Error"}]  # DeviceName: supervised only
    assert unsupervised.facts.device_name != "X"


def test_erase_device_acknowledges_then_wipes_and_unenrolls(enrollment_profile):
    machine = _enrolled(enrollment_profile)
    _send(machine, Command("InstallApplication", {"iTunesStoreID": 618783545}))
    report, effects = _send(machine, Command("EraseDevice"))
    assert report == {"Status": "Acknowledged"} and machine.phase is Phase.ENROLLED  # the report goes out first
    after = machine.response(effects[-1].request_id, 200, b"", T0)
    assert after[0] == fx.SessionEnded(2, "erased")
    assert after[1] == fx.UnregisterPush(machine.push_token)  # an erased device's token is dead (410)
    assert machine.phase is Phase.NEW and len(machine.profiles) == 0 and machine.enrollment is None
    assert "com.tinyspeck.chatlyio" not in machine.state.apps
    assert machine.push(T0 + 1) == [fx.Log("push while new: ignored")]
    assert isinstance(machine.install_enrollment(enrollment_profile, T0 + 2)[-1], fx.SendRequest)  # enrolls again


def test_restart_ends_the_session_and_the_device_comes_back_locked(enrollment_profile):
    machine = _enrolled(enrollment_profile)
    _, effects = _send(machine, Command("RestartDevice"))
    assert machine.response(effects[-1].request_id, 200, b"", T0) == [fx.SessionEnded(1, "restarted")]
    assert machine.state.locked and not machine.first_unlocked


# Corpus replays -------------------------------------------------------------------------------------------

def test_replay_the_invalid_request_type_capture_on_ios_27(enrollment_profile):
    body = require(DEVICE_MESSAGES / "commandment/Errors/error_invalid_request_type.plist").read_bytes()
    captured = decode_report(body)
    for machine in (_enrolled(enrollment_profile, version="27.0"), _enrolled(enrollment_profile, supervised=False)):
        report, effects = _send(machine, Command("OSUpdateStatus"))
        assert report["Status"] == captured.status.value
        assert decode_report(effects[-1].body).error_chain == captured.error_chain


def test_replay_the_command_format_error_capture(enrollment_profile):
    captured = decode_report(require(DEVICE_MESSAGES / "commandment/Errors/iOS-11.3.1-CommandFormatError.xml")
                             .read_bytes())
    machine = _enrolled(enrollment_profile)
    report, _ = _send(machine, Command("Settings", {"Settings": "DeviceName"}))
    assert report == {"Status": captured.status.value}


def test_the_response_validator_catches_wrong_types_unknown_keys_versions_and_missing_keys():
    bad = {"Status": "Acknowledged", "SecurityInfo": {"PasscodePresent": "yes", "Bogus": 1, "AutoLockTime": 5}}
    assert check_response("SecurityInfo", bad, "16.0") == [
        "SecurityInfo: SecurityInfo.PasscodePresent must be <boolean>, not str",
        "SecurityInfo: SecurityInfo.Bogus is not in the schema",
        "SecurityInfo: SecurityInfo.AutoLockTime is not yet on iOS 16.0"]
    assert check_response("SecurityInfo", {"Status": "Acknowledged"}, "16.0") == [
        "SecurityInfo: required SecurityInfo missing"]
    assert check_response("Settings", {"Status": "Acknowledged", "Settings": [{"Item": "X"}]}, "16.0") == [
        "Settings: Settings.Status is required"]
    assert "ManagedApplicationList: ManagedApplicationList.a.ManagementFlags is required" in check_response(
        "ManagedApplicationList", {"Status": "Acknowledged", "ManagedApplicationList": {"a": {"Status": "x"}}}, "8.0")


def test_the_settings_items_follow_the_schema():
    (settings,) = commands()["Settings"]["payloadkeys"]
    items = {k["key"]: (k.get("supportedOS") or {}).get("iOS") or {} for k in settings["subkeys"]}
    ios_items = {name for name, ios in items.items() if ios.get("introduced") != "n/a"}
    assert set(SETTING_ITEMS) == ios_items
    for name, spec in SETTING_ITEMS.items():
        ios = items[name]
        assert OSVersion.parse(spec.introduced) == OSVersion.parse(ios.get("introduced") or "4.0"), name
        assert spec.supervised is bool(ios.get("supervised")), name
        assert spec.shared_only is ((ios.get("sharedipad") or {}).get("mode") == "required"), name
        allowed = (ios.get("userenrollment") or {}).get("mode", "allowed") == "allowed"
        assert (name in USER_ENROLLMENT_ITEMS) is allowed, name
