"""DeviceInformation answers every query Apple documents for iOS, by kind and release, with values that agree
with the device's facts and state; checked against the schema's QueryResponses and the corpus capture."""

from __future__ import annotations

from dataclasses import replace

import pytest
from kits.command_schema import check_response, commands
from kits.corpus import DEVICE_MESSAGES, require
from kits.schema_validator import _ios

from device_sim.answers import device_information
from device_sim.device_information import QUERIES, WIFI_ANSWERS, Device, query_responses
from device_sim.device_state import DeviceState
from device_sim.facts import DeviceKind, make_facts
from mdm_protocol.osversion import OSVersion
from mdm_protocol.report import decode_report

# Documented iOS queries the simulator leaves out, and why.
LEFT_OUT = {
    "DevicePropertiesAttestation": "needs Apple's attestation CA to sign the device's properties",
    "SoftwareUpdateDeviceID": "no sourced example of its value",
    "ProvisioningUDID": "not on iOS",
    "SIMCarrierNetwork": "removed in iOS 5, below the simulated range",
}
VERSIONS = ("9.3.3", "10.3", "12.0", "15.0", "16.0", "17.5", "18.1", "26.1", "27.0")
KINDS = tuple(DeviceKind)


def _ios_queries() -> dict[str, dict]:
    document = commands()["DeviceInformation"]
    (queries,) = document["payloadkeys"][0]["subkeys"]
    inherited = _ios(document["payload"], {})
    return {q["key"]: q for q in queries["subkeys"] if _ios(q, inherited)["introduced"] not in (None, "n/a")}


def _device(version: str, kind: DeviceKind, supervised: bool = True) -> Device:
    facts = make_facts(6, 2, version, kind)
    facts = replace(facts, supervised=(supervised or kind is DeviceKind.SHARED_IPAD)
                    and kind is not DeviceKind.USER_ENROLLMENT)
    return Device(facts, DeviceState.initial(facts), push_token=b"\x07" * 32)


def test_every_documented_ios_query_is_answered_or_left_out_for_a_reason():
    documented = set(_ios_queries())
    assert documented - set(QUERIES) <= set(LEFT_OUT), sorted(documented - set(QUERIES) - set(LEFT_OUT))
    assert set(QUERIES) <= documented
    assert len(QUERIES) >= 44  # Apple's documented example answers 44 keys; we answered 13


@pytest.mark.parametrize("supervised", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", VERSIONS)
def test_the_whole_answer_fits_the_schema_and_the_device(version, kind, supervised):
    if kind is DeviceKind.USER_ENROLLMENT and OSVersion.parse(version) < OSVersion(13):
        pytest.skip("User Enrollment starts with iOS 13")
    device = _device(version, kind, supervised)
    facts = device.facts
    answer = query_responses(device, list(_ios_queries()))
    assert check_response("DeviceInformation", {"Status": "Acknowledged", "QueryResponses": answer}, version) == []
    assert answer["OSVersion"] == version and answer["BuildVersion"] == facts.build_version
    assert answer["ProductName"] == facts.product_name and answer["DeviceName"] == facts.device_name
    assert answer.get("IsSupervised", facts.supervised) is facts.supervised
    if kind is DeviceKind.USER_ENROLLMENT:
        assert not {"UDID", "SerialNumber", "IMEI", "WiFiMAC", "ServiceSubscriptions"} & set(answer)
    else:
        assert answer["UDID"] == facts.udid and answer["SerialNumber"] == facts.serial_number
    assert answer["DeviceCapacity"] == facts.capacity_gb > answer["AvailableDeviceCapacity"] > 0
    # MaximumResidentUsers (9.3+) and the rest: Shared iPad only.
    assert ("MaximumResidentUsers" in answer) is (kind is DeviceKind.SHARED_IPAD)


@pytest.mark.parametrize("version, cellular_keys", [("15.0", True), ("16.0", False), ("27.0", False)])
def test_deprecated_cellular_queries_move_into_service_subscriptions_from_ios_16(version, cellular_keys):
    answer = query_responses(_device(version, DeviceKind.IPHONE), ["IMEI", "ICCID", "PhoneNumber",
                                                                   "ServiceSubscriptions"])
    assert ("IMEI" in answer) is cellular_keys and ("PhoneNumber" in answer) is cellular_keys
    (subscription,) = answer["ServiceSubscriptions"]
    if cellular_keys:
        assert subscription["IMEI"] == answer["IMEI"] and subscription["ICCID"] == answer["ICCID"]
    assert subscription["CurrentMCC"] == "234" and len(subscription["IMEI"]) == 15


def test_ios_27_leaves_out_its_removed_software_update_queries():
    asked = ["SoftwareUpdateSettings", "OSVersion"]
    assert "SoftwareUpdateSettings" in query_responses(_device("26.1", DeviceKind.IPHONE), asked)
    assert set(query_responses(_device("27.0", DeviceKind.IPHONE), asked)) == {"OSVersion"}


def test_answers_follow_the_devices_state():
    device = _device("18.1", DeviceKind.IPHONE)
    device.state.device_name, device.state.time_zone, device.state.lost_mode = "Kiosk 7", "Asia/Tokyo", True
    device.state.settings["DataRoaming"] = True
    answer = query_responses(device, ["DeviceName", "TimeZone", "IsMDMLostModeEnabled", "DataRoamingEnabled",
                                      "PushToken", "ModemFirmwareVersion"])
    assert answer == {"DeviceName": "Kiosk 7", "TimeZone": "Asia/Tokyo", "IsMDMLostModeEnabled": True,
                      "DataRoamingEnabled": True, "PushToken": b"\x07" * 32}  # no sourced baseband for 18.1
    modern = query_responses(_device("27.0.1", DeviceKind.IPHONE), ["ModemFirmwareVersion", "ProductName"])
    assert modern.get("ModemFirmwareVersion") in ("8.00.00", "6.00.01", "3.02.02", "2.10.04")


def test_replay_the_ipad_capture():
    # commandment DeviceInformation/iOS-11.3.1.xml: a Wi-Fi iPad's answer; ours on 11.4 has the same keys and types.
    captured = decode_report(require(DEVICE_MESSAGES / "commandment/DeviceInformation/iOS-11.3.1.xml").read_bytes())
    expected = captured.extra["QueryResponses"]
    ours = query_responses(_device("11.4", DeviceKind.IPAD), list(expected))
    assert set(ours) == set(expected)
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in expected.items()}
    assert {k: ours[k] for k in WIFI_ANSWERS} == {k: expected[k] for k in WIFI_ANSWERS}


def test_the_old_entry_point_still_answers():
    facts = make_facts(1, 0, "17.5")
    assert device_information(facts, ["OSVersion", "Nonsense"]).extra == {"QueryResponses": {"OSVersion": "17.5"}}
