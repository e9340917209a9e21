"""How a simulated iOS device answers each MDM command: status, ErrorChain and command-specific keys.

Unknown commands get iOS's real 12021 error; NotNow only where iOS can return it (SPEC section 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mdm_protocol.errors import MC_MDM, ErrorChainItem
from mdm_protocol.osversion import OSVersion
from mdm_protocol.report import Command, Status

from .facts import DeviceFacts, DeviceKind

# iOS never answers NotNow to these (SPEC section 2).
NEVER_NOT_NOW = frozenset({
    "DeviceInformation", "ProfileList", "DeviceLock", "EraseDevice", "ClearPasscode",
    "ProvisioningProfileList", "InstalledApplicationList", "Restrictions",
})
CERTIFICATE_LIST_NOT_NOW_FROM = OSVersion.parse("15.4")


@dataclass(frozen=True, slots=True)
class Answer:
    status: Status
    error_chain: tuple[ErrorChainItem, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def unknown_request_type(request_type: str) -> Answer:
    text = f"“{request_type}” is not a valid request type."
    return Answer(Status.ERROR, (ErrorChainItem(12021, MC_MDM, text, text),))


def format_error() -> Answer:
    return Answer(Status.COMMAND_FORMAT_ERROR)


def may_answer_not_now(command: Command, os_version: OSVersion, first_unlocked: bool) -> bool:
    """Before the first unlock after boot, iOS defers what needs the keychain (SPEC section 2)."""
    if first_unlocked or command.request_type in NEVER_NOT_NOW:
        return False
    if command.request_type == "CertificateList":
        return os_version >= CERTIFICATE_LIST_NOT_NOW_FROM
    return command.request_type in ("InstallProfile", "RemoveProfile")


def device_information(facts: DeviceFacts, queries: list[str]) -> Answer:
    known = _device_information_values(facts)
    return Answer(Status.ACKNOWLEDGED, extra={"QueryResponses": {q: known[q] for q in queries if q in known}})


MULTI_USER_SINCE = OSVersion.parse("9.3")  # Shared iPad's first release


def _device_information_values(facts: DeviceFacts) -> dict[str, Any]:
    values: dict[str, Any] = {
        "DeviceName": facts.device_name, "OSVersion": str(facts.os_version),
        "BuildVersion": facts.build_version, "ModelName": facts.model_name, "Model": facts.model_number,
        "ModelNumber": facts.model_number,
        "ProductName": facts.product_name, "DeviceCapacity": 128.0, "AvailableDeviceCapacity": 71.5,
        "BatteryLevel": 0.8, "IsSupervised": facts.supervised, "TimeZone": "Europe/London",
    }
    if facts.udid:
        values["UDID"] = facts.udid
        values["EASDeviceIdentifier"] = facts.udid[:32].upper()
    if facts.serial_number:
        values["SerialNumber"] = facts.serial_number
    if facts.kind in (DeviceKind.IPAD, DeviceKind.SHARED_IPAD) and facts.os_version >= MULTI_USER_SINCE:
        values["IsMultiUser"] = facts.kind is DeviceKind.SHARED_IPAD  # how a server tells a Shared iPad
    return values
