"""The DeviceInformation answer: every query Apple documents for iOS ([ADM] information.device.yaml), by the
device's kind and release, with values drawn from its facts and state; only the queries asked are computed.

A query the device does not answer there (not yet, removed, deprecated from iOS 16, forbidden under User
Enrollment, cellular on a Wi-Fi iPad) is left out of QueryResponses, as iOS leaves out what it does not know.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mdm_protocol.osversion import OSVersion

from .device_state import DeviceState
from .facts import DeviceFacts, DeviceKind


@dataclass(frozen=True, slots=True)
class Device:
    """What a DeviceInformation answer reads: the facts, the state commands changed, the push token."""

    facts: DeviceFacts
    state: DeviceState
    push_token: bytes | None = None


@dataclass(frozen=True, slots=True)
class Query:
    value: Callable[[Device], Any]
    introduced: OSVersion = OSVersion(4)
    deprecated: OSVersion | None = None  # from here iOS leaves it out (the cellular ones: ServiceSubscriptions)
    removed: OSVersion | None = None
    not_under_user_enrollment: bool = False
    cellular: bool = False  # only hardware with a modem answers it
    shared_ipad_only: bool = False  # the schema's sharedipad mode "required" (and supervised)
    ipad_only: bool = False


def _q(value: Callable[[Device], Any], introduced: str = "4.0", *, deprecated: str | None = None,
       removed: str | None = None, ue: bool = True, cellular: bool = False, shared: bool = False,
       ipad: bool = False) -> Query:
    def parse(text: str | None) -> OSVersion | None:
        return None if text is None else OSVersion.parse(text)

    return Query(value, OSVersion.parse(introduced), parse(deprecated), parse(removed), not ue, cellular, shared,
                 ipad)


def _derived(device: Device, purpose: str, make: Callable[[bytes], str]) -> str:
    # Hashing per query costs more than the rest of the answer: each device derives each identifier once.
    cache = device.state.derived
    value = cache.get(purpose)
    if value is None:
        value = cache[purpose] = make(hashlib.sha256(f"{device.facts.device_id}:{purpose}".encode()).digest())
    return value


def _digits(device: Device, purpose: str, count: int) -> str:
    return _derived(device, purpose, lambda digest: str(int.from_bytes(digest, "big"))[:count])


def _luhn(body: str) -> str:
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return body + str((10 - total % 10) % 10)


def _imei(device: Device) -> str:
    # 35: a GSMA-allocated reporting body prefix; Luhn check digit last.
    return _derived(device, "imei", lambda digest: _luhn("35" + str(int.from_bytes(digest, "big"))[:12]))


def _mac(device: Device, purpose: str) -> str:
    # Unicast, globally administered.
    return _derived(device, purpose, lambda raw: ":".join(f"{b:02x}" for b in (raw[0] & 0xFC, *raw[1:6])))


# Cellular identity of the simulated SIM: EE (MCC 234, MNC 30), matching the Europe/London time zone; phone
# numbers in Ofcom's range for drama (07700 900000-900999), never a real subscriber's.
MCC, MNC, CARRIER = "234", "30", "EE"
CARRIER_SETTINGS = "64.0"
# Modem firmware by (release, model), from AppleDB `basebandVersions` of 23B85, 23C55, 24A437, 24A446; other
# releases have none sourced, so ModemFirmwareVersion is left out there.
BASEBANDS = {
    ("26.1", "iPhone12,1"): "7.00.00", ("26.1", "iPhone15,2"): "4.10.01", ("26.1", "iPhone17,1"): "2.10.03",
    ("26.1", "iPhone18,1"): "1.10.05", ("26.2", "iPhone12,1"): "7.00.00", ("26.2", "iPhone15,2"): "4.20.01",
    ("26.2", "iPhone17,1"): "2.20.04", ("26.2", "iPhone18,1"): "1.20.06", ("27.0", "iPhone12,1"): "8.00.00",
    ("27.0", "iPhone15,2"): "6.00.01", ("27.0", "iPhone17,1"): "3.02.02", ("27.0", "iPhone18,1"): "2.10.01",
    ("27.0.1", "iPhone12,1"): "8.00.00", ("27.0.1", "iPhone15,2"): "6.00.01", ("27.0.1", "iPhone17,1"): "3.02.02",
    ("27.0.1", "iPhone18,1"): "2.10.04",
}


def _phone(device: Device) -> str:
    return f"+44 7700 900{_digits(device, 'phone', 3)}"


def _iccid(device: Device) -> str:
    # 89 telecom, 44 UK, 30 EE; Luhn check digit last.
    return _derived(device, "iccid", lambda digest: _luhn("894430" + str(int.from_bytes(digest, "big"))[:13]))


def _subscription(device: Device) -> dict[str, Any]:
    version, imei = device.facts.os_version, _imei(device)
    item = {
        "Slot": "CTSubscriptionSlotOne", "Label": "Primary", "LabelID": _uuid(device, "label"),
        "IMEI": imei, "MEID": imei[:14], "ICCID": _iccid(device), "PhoneNumber": _phone(device),
        "CarrierSettingsVersion": CARRIER_SETTINGS, "CurrentCarrierNetwork": CARRIER, "CurrentMCC": MCC,
        "CurrentMNC": MNC, "IsDataPreferred": True, "IsVoicePreferred": True, "IsRoaming": False,
    }
    if version >= OSVersion(14):
        item["EID"] = "8904" + _digits(device, "eid", 28)
    if version >= OSVersion(16):
        item["SubscriberCarrierNetwork"] = CARRIER
    return item


def _uuid(device: Device, purpose: str) -> str:
    def text(digest: bytes) -> str:
        raw = digest.hex().upper()
        return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:32]}"

    return _derived(device, purpose, text)


def _available_capacity(device: Device) -> float:
    apps = sum(app.app.bundle_size + app.app.dynamic_size for app in device.state.apps.values())
    used = 0.22 * device.facts.capacity_gb + apps / 1e9  # the system and its data, then the apps
    return round(device.facts.capacity_gb - used, 2)


def _setting(name: str) -> Callable[[Device], bool]:
    return lambda device: device.state.settings[name]


def _fact(attr: str) -> Callable[[Device], Any]:
    return lambda device: getattr(device.facts, attr)


def _state(attr: str) -> Callable[[Device], Any]:
    return lambda device: getattr(device.state, attr)


QUERIES: dict[str, Query] = {
    "UDID": _q(_fact("udid"), ue=False), "DeviceName": _q(_state("device_name")),
    "OSVersion": _q(lambda d: str(d.facts.os_version)), "BuildVersion": _q(_fact("build_version")),
    "SupplementalBuildVersion": _q(_fact("build_version"), "16.1"),  # no Rapid Security Response applied
    "SupplementalOSVersionExtra": _q(lambda d: "", "16.1"),
    "ModelName": _q(_fact("model_name")), "Model": _q(_fact("model_number")),
    "ModelNumber": _q(_fact("model_number"), "16.4"),
    "ProductName": _q(_fact("product_name")), "SerialNumber": _q(_fact("serial_number"), ue=False),
    "DeviceCapacity": _q(_fact("capacity_gb")), "AvailableDeviceCapacity": _q(_available_capacity),
    "BatteryLevel": _q(lambda d: 0.8, "5.0"), "IsSupervised": _q(_fact("supervised"), "6.0"),
    "IsMultiUser": _q(lambda d: d.facts.kind is DeviceKind.SHARED_IPAD, "9.3", ipad=True),
    "EASDeviceIdentifier": _q(lambda d: (d.facts.udid or d.facts.enrollment_id or "")[:32].upper(), "7.0"),
    "TimeZone": _q(_state("time_zone"), "14.0"),
    "OrganizationInfo": _q(lambda d: d.state.organization, "7.0"),
    "MDMOptions": _q(lambda d: {"ActivationLockAllowedWhileSupervised": False}, "7.0"),
    "LastCloudBackupDate": _q(lambda d: None, "8.0", ue=False),  # never backed up: iOS leaves it out
    "AwaitingConfiguration": _q(lambda d: False, "9.0", ue=False),
    "iTunesStoreAccountIsActive": _q(lambda d: False, "7.0", ue=False),
    "iTunesStoreAccountHash": _q(lambda d: None, "8.0", ue=False),  # no account signed in
    "IsDeviceLocatorServiceEnabled": _q(lambda d: not d.facts.supervised, "7.0"),
    "IsActivationLockEnabled": _q(lambda d: not d.facts.supervised, "7.0", deprecated="16.0", ue=False),
    "IsDoNotDisturbInEffect": _q(lambda d: False, "7.0", ue=False),
    "IsCloudBackupEnabled": _q(lambda d: False, "7.1", ue=False),
    "IsMDMLostModeEnabled": _q(_state("lost_mode"), "9.3", ue=False),
    "PushToken": _q(lambda d: d.push_token, "9.3", ue=False),
    "DiagnosticSubmissionEnabled": _q(_setting("DiagnosticSubmission"), "9.3"),
    "AppAnalyticsEnabled": _q(_setting("AppAnalytics"), "9.3"),
    "WiFiMAC": _q(lambda d: _mac(d, "wifi"), ue=False), "BluetoothMAC": _q(lambda d: _mac(d, "bluetooth"), ue=False),
    "ModemFirmwareVersion": _q(lambda d: BASEBANDS.get((str(d.facts.os_version), d.facts.product_name)), ue=False,
                               cellular=True),
    "CellularTechnology": _q(lambda d: 3, "4.2.6", cellular=True),  # GSM and CDMA
    "IMEI": _q(_imei, deprecated="16.0", ue=False, cellular=True),
    "MEID": _q(lambda d: _imei(d)[:14], deprecated="16.0", ue=False, cellular=True),
    "ICCID": _q(_iccid, deprecated="16.0", ue=False, cellular=True),
    "PhoneNumber": _q(_phone, deprecated="16.0", ue=False, cellular=True),
    "CurrentCarrierNetwork": _q(lambda d: CARRIER, deprecated="16.0", ue=False, cellular=True),
    "SubscriberCarrierNetwork": _q(lambda d: CARRIER, "5.0", deprecated="16.0", ue=False, cellular=True),
    "CarrierSettingsVersion": _q(lambda d: CARRIER_SETTINGS, deprecated="16.0", ue=False, cellular=True),
    "SubscriberMCC": _q(lambda d: MCC, "4.2.6", deprecated="16.0", ue=False, cellular=True),
    "SubscriberMNC": _q(lambda d: MNC, "4.2.6", deprecated="16.0", ue=False, cellular=True),
    "CurrentMCC": _q(lambda d: MCC, deprecated="16.0", ue=False, cellular=True),
    "CurrentMNC": _q(lambda d: MNC, deprecated="16.0", ue=False, cellular=True),
    "IsRoaming": _q(lambda d: False, "4.2", deprecated="16.0", ue=False, cellular=True),
    "DataRoamingEnabled": _q(_setting("DataRoaming"), "5.0", ue=False, cellular=True),
    "VoiceRoamingEnabled": _q(_setting("VoiceRoaming"), "5.0", deprecated="16.0", ue=False, cellular=True),
    "PersonalHotspotEnabled": _q(_setting("PersonalHotspot"), "7.0", ue=False, cellular=True),
    "IsNetworkTethered": _q(lambda d: False, "10.3"),
    "ServiceSubscriptions": _q(lambda d: [_subscription(d)], "12.0", ue=False, cellular=True),
    "SoftwareUpdateSettings": _q(lambda d: {"RecommendationsCadence": 0}, "14.5", removed="27.0", ue=False),
    "AccessibilitySettings": _q(lambda d: {"BoldTextEnabled": False, "IncreaseContrastEnabled": False,
                                           "ReduceMotionEnabled": False, "ReduceTransparencyEnabled": False,
                                           "TextSize": 3, "TouchAccommodationsEnabled": False,
                                           "VoiceOverEnabled": False, "ZoomEnabled": False}, "16.0", ue=False),
    # Shared iPad (supervised) only.
    "MaximumResidentUsers": _q(lambda d: 8, "9.3", ue=False, shared=True),
    "EstimatedResidentUsers": _q(lambda d: 8, "14.0", ue=False, shared=True),
    "QuotaSize": _q(lambda d: 6144, "13.4", ue=False, shared=True),  # MB per user
    "ResidentUsers": _q(lambda d: 8, "13.4", ue=False, shared=True),
    "UserSessionTimeout": _q(lambda d: 0, "14.5", ue=False, shared=True),
    "TemporarySessionTimeout": _q(lambda d: 0, "14.5", ue=False, shared=True),
    "TemporarySessionOnly": _q(lambda d: False, "14.5", ue=False, shared=True),
    "ManagedAppleIDDefaultDomains": _q(lambda d: [], "16.0", ue=False, shared=True),
    "OnlineAuthenticationGracePeriod": _q(lambda d: 0, "16.0", ue=False, shared=True),
    "SkipLanguageAndLocaleSetupForNewUsers": _q(lambda d: False, "16.2", ue=False, shared=True),
}
# Supervised-only queries (the schema's `supervised: true`) besides the Shared iPad ones.
SUPERVISED_ONLY = frozenset({"AccessibilitySettings"})
_CELLULAR = frozenset({DeviceKind.IPHONE, DeviceKind.USER_ENROLLMENT})  # the simulated iPads are Wi-Fi models
# What a Wi-Fi iPad still answers to the cellular queries: the commandment capture DeviceInformation/iOS-11.3.1.xml
# (iPad4,1) has these, false and empty; the other cellular queries it leaves out.
WIFI_ANSWERS = {"DataRoamingEnabled": False, "IsRoaming": False, "SubscriberMCC": "", "SubscriberMNC": "",
                "VoiceRoamingEnabled": False}


@functools.cache
def answerable(version: OSVersion, kind: DeviceKind, supervised: bool) -> frozenset[str]:
    """The queries a device of this release, kind and supervision answers (a few hundred combinations)."""
    return frozenset(name for name, query in QUERIES.items() if _answers(query, name, version, kind, supervised))


def _answers(query: Query, name: str, version: OSVersion, kind: DeviceKind, supervised: bool) -> bool:
    if version < query.introduced or (query.deprecated is not None and version >= query.deprecated):
        return False
    if query.removed is not None and version >= query.removed:
        return False
    if kind is DeviceKind.USER_ENROLLMENT and query.not_under_user_enrollment:
        return False
    if query.ipad_only and kind not in (DeviceKind.IPAD, DeviceKind.SHARED_IPAD):
        return False
    if query.shared_ipad_only and kind is not DeviceKind.SHARED_IPAD:
        return False
    return supervised or name not in SUPERVISED_ONLY


def query_responses(device: Device, queries: list[str]) -> dict[str, Any]:
    """QueryResponses for `queries`: each known, answerable one with a value; unknown names are left out."""
    out: dict[str, Any] = {}
    facts = device.facts
    ready = answerable(facts.os_version, facts.kind, facts.supervised)
    for name in queries:
        if name not in ready:
            continue
        query = QUERIES[name]
        if query.cellular and facts.kind not in _CELLULAR:
            if name in WIFI_ANSWERS:
                out[name] = WIFI_ANSWERS[name]
            continue
        value = query.value(device)
        if value is not None:
            out[name] = value
    return out
