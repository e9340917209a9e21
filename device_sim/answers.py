"""How a simulated iOS device answers each MDM command: status, ErrorChain and command-specific keys.

Unknown commands get iOS's real 12021 error; NotNow only where iOS can return it (SPEC section 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mdm_protocol.errors import MC_MDM, ErrorChainItem
from mdm_protocol.osversion import OSVersion
from mdm_protocol.report import Command, Status

from .device_information import Device, query_responses
from .device_state import DeviceState
from .facts import DeviceFacts

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


def device_information(facts: DeviceFacts, queries: list[str], state: DeviceState | None = None,
                       push_token: bytes | None = None) -> Answer:
    """DeviceInformation's answer (device_sim/device_information.py holds every query)."""
    device = Device(facts, state or DeviceState.initial(facts), push_token)
    return Answer(Status.ACKNOWLEDGED, extra={"QueryResponses": query_responses(device, queries)})
