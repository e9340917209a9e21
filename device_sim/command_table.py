"""Which MDM commands a simulated iOS device answers, by OS version, supervision and kind ([ADM] mdm/commands).

A command the device cannot run there gets the 12021 chain: so real iOS answers RestartDevice on an
unsupervised iPhone (micromdm/micromdm#970) and, from iOS 27, the removed software-update commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mdm_protocol.osversion import OSVersion

from .facts import DeviceFacts, DeviceKind


class Mode(StrEnum):
    """The schema's sharedipad / userenrollment `mode` for a command."""

    ALLOWED = "allowed"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class Availability:
    introduced: OSVersion
    supervised: bool = False  # supervised devices only
    shared_ipad: Mode = Mode.ALLOWED
    user_enrollment: Mode = Mode.ALLOWED
    removed: OSVersion | None = None  # first release without it

    def on(self, facts: DeviceFacts) -> bool:
        version = facts.os_version
        if version < self.introduced or (self.removed is not None and version >= self.removed):
            return False
        if facts.kind is DeviceKind.USER_ENROLLMENT:
            return self.user_enrollment is Mode.ALLOWED  # never supervised
        if facts.kind is DeviceKind.SHARED_IPAD and self.shared_ipad is Mode.FORBIDDEN:
            return False
        return facts.supervised or not self.supervised


def _a(introduced: str, supervised: bool = False, shared: Mode = Mode.ALLOWED, ue: Mode = Mode.ALLOWED,
       removed: str | None = None) -> Availability:
    return Availability(OSVersion.parse(introduced), supervised, shared, ue,
                        None if removed is None else OSVersion.parse(removed))


_NO, _SUPERVISED = Mode.FORBIDDEN, True


def _software_update() -> Availability:
    # iOS 27 removed mdm/commands/system.update.{available,status,schedule} (corpus PROVENANCE.md, CHANGES.md).
    return _a("9.0", _SUPERVISED, ue=_NO, removed="27.0")


COMMANDS: dict[str, Availability] = {
    "InstallProfile": _a("4.0"), "RemoveProfile": _a("4.0"), "ProfileList": _a("4.0"),
    "CertificateList": _a("4.0"), "DeviceInformation": _a("4.0"), "SecurityInfo": _a("4.0"),
    "ProvisioningProfileList": _a("4.0"), "DeviceLock": _a("4.0"), "EraseDevice": _a("4.0", ue=_NO),
    "ClearPasscode": _a("4.0", shared=_NO, ue=_NO), "Restrictions": _a("4.0", ue=_NO),
    "Settings": _a("5.0"), "InstalledApplicationList": _a("5.0"), "ManagedApplicationList": _a("5.0"),
    "InstallApplication": _a("5.0"), "RemoveApplication": _a("5.0"),
    "AvailableOSUpdates": _software_update(), "OSUpdateStatus": _software_update(),
    "ScheduleOSUpdate": _software_update(),
    "RestartDevice": _a("10.3", _SUPERVISED, ue=_NO), "ShutDownDevice": _a("10.3", _SUPERVISED, ue=_NO),
    "ClearRestrictionsPassword": _a("8.0", _SUPERVISED, shared=_NO, ue=_NO),
    "EnableLostMode": _a("9.3", _SUPERVISED, ue=_NO), "DisableLostMode": _a("9.3", _SUPERVISED, ue=_NO),
    "DeclarativeManagement": _a("15.0"),  # [ADM] mdm/commands/declarativemanagement.yaml; before 15: 12021
}


def available(request_type: str, facts: DeviceFacts) -> bool:
    rule = COMMANDS.get(request_type)
    return rule is not None and rule.on(facts)
