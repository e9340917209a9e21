"""How a simulated iOS device answers the device-level commands: security, lock, erase, passcode, restrictions,
Settings, Lost Mode, restart and software updates ([ADM] mdm/commands; response shapes from its responsekeys).

Each answer reads the command context and may change the device's state (the machine acts on erase/restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mdm_protocol.osversion import OSVersion
from mdm_protocol.report import Command, Status

from .answers import Answer
from .catalogue import BUILDS, MODELS, build_of
from .facts import DeviceKind

if TYPE_CHECKING:
    from .command_runner import CommandContext

_V = OSVersion.parse
HARDWARE_ENCRYPTION = 3  # block-level | file-level: every iOS device since the iPhone 3GS


def security_info(command: Command, ctx: CommandContext) -> Answer:
    facts, state, version = ctx.facts, ctx.state, ctx.facts.os_version
    user_enrolled = facts.kind is DeviceKind.USER_ENROLLMENT
    info: dict[str, Any] = {"HardwareEncryptionCaps": HARDWARE_ENCRYPTION, "PasscodeCompliant": True}
    if not user_enrolled:  # the schema forbids these under User Enrollment
        info["PasscodePresent"] = state.passcode_present
        info["PasscodeCompliantWithProfiles"] = True
        if version >= _V("9.3.2"):
            info["PasscodeLockGracePeriod"] = info["PasscodeLockGracePeriodEnforced"] = 0  # immediately
        if version >= _V("17.0") and facts.kind is DeviceKind.SHARED_IPAD:
            info["AutoLockTime"] = 120  # Shared iPad only ("required" mode)
    if version >= _V("13.0"):
        info["ManagementStatus"] = {"IsUserEnrollment": user_enrolled}
    return Answer(Status.ACKNOWLEDGED, extra={"SecurityInfo": info})


def device_lock(command: Command, ctx: CommandContext) -> Answer:
    ctx.state.locked = True
    if "Message" not in command.keys and "PhoneNumber" not in command.keys:
        return Answer(Status.ACKNOWLEDGED)
    shown = ctx.state.passcode_present and ctx.facts.kind is not DeviceKind.SHARED_IPAD
    result = "DeviceInLostMode" if ctx.state.lost_mode else "Success" if shown else "NoPasscodeSet"
    return Answer(Status.ACKNOWLEDGED, extra={"MessageResult": result})


def erase_device(command: Command, ctx: CommandContext) -> Answer:
    ctx.state.erase_due = True  # acknowledged first: the wipe follows once the server has the report
    return Answer(Status.ACKNOWLEDGED)


def clear_passcode(command: Command, ctx: CommandContext) -> Answer:
    ctx.state.passcode_present = False  # any UnlockToken clears it: the simulator keeps no keybag to check
    return Answer(Status.ACKNOWLEDGED)


def clear_restrictions_password(command: Command, ctx: CommandContext) -> Answer:
    ctx.state.restrictions_password = False
    return Answer(Status.ACKNOWLEDGED)


def restart_device(command: Command, ctx: CommandContext) -> Answer:
    ctx.state.restart_due = True
    return Answer(Status.ACKNOWLEDGED)


def enable_lost_mode(command: Command, ctx: CommandContext) -> Answer:
    ctx.state.lost_mode = ctx.state.locked = True
    return Answer(Status.ACKNOWLEDGED)


def disable_lost_mode(command: Command, ctx: CommandContext) -> Answer:
    ctx.state.lost_mode = False
    return Answer(Status.ACKNOWLEDGED)


RESTRICTIONS = "com.apple.applicationaccess"
_PAYLOAD_KEYS = frozenset({"PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID", "PayloadDisplayName",
                           "PayloadDescription", "PayloadOrganization"})


def restrictions(command: Command, ctx: CommandContext) -> Answer:
    per_profile = {
        profile.identifier: {k: v for payload in profile.payloads_of_type(RESTRICTIONS)
                             for k, v in payload.items() if k not in _PAYLOAD_KEYS}
        for profile in ctx.profiles.installed() if profile.payloads_of_type(RESTRICTIONS)
    }
    extra: dict[str, Any] = {"GlobalRestrictions": _combined(per_profile.values())}
    if command.keys.get("ProfileRestrictions"):
        extra["ProfileRestrictions"] = {identifier: _combined([keys]) for identifier, keys in per_profile.items()}
    return Answer(Status.ACKNOWLEDGED, extra=extra)


def _combined(payloads) -> dict[str, Any]:
    # The most restrictive value wins: an allow* false, any other flag true, the smallest number.
    booleans: dict[str, bool] = {}
    values: dict[str, int] = {}
    for keys in payloads:
        for name, value in keys.items():
            if isinstance(value, bool):
                allow = name.startswith("allow")
                old = booleans.get(name, allow)
                booleans[name] = (old and value) if allow else (old or value)
            elif isinstance(value, int):
                values[name] = min(values.get(name, value), value)
    return {"restrictedBool": {n: {"value": v} for n, v in sorted(booleans.items())},
            "restrictedValue": {n: {"value": v} for n, v in sorted(values.items())}}


@dataclass(frozen=True, slots=True)
class _SettingItem:
    key: str | None  # the value's key beside Item (None: the item has only optional keys)
    kind: type | tuple[type, ...]
    introduced: str = "4.0"
    supervised: bool = False
    shared_only: bool = False  # the schema's sharedipad mode "required"
    removed: str | None = None


# [ADM] settings.yaml: the iOS items, each with the key that carries its value.
SETTING_ITEMS = {
    "DeviceName": _SettingItem("DeviceName", str, supervised=True),
    "DataRoaming": _SettingItem("Enabled", bool), "VoiceRoaming": _SettingItem("Enabled", bool),
    "PersonalHotspot": _SettingItem("Enabled", bool),
    "Bluetooth": _SettingItem("Enabled", bool, "11.3", supervised=True),
    "TimeZone": _SettingItem("TimeZone", str, "14.0", supervised=True),
    "Wallpaper": _SettingItem("Image", bytes, "8.0", supervised=True),
    "OrganizationInfo": _SettingItem(None, dict), "MDMOptions": _SettingItem("MDMOptions", dict, "7.0"),
    "ApplicationConfiguration": _SettingItem("Identifier", str, "7.0"),
    "ApplicationAttributes": _SettingItem("Identifier", str, "7.0"),
    "DiagnosticSubmission": _SettingItem("Enabled", bool, "9.3", shared_only=True),
    "AppAnalytics": _SettingItem("Enabled", bool, "9.3.2", shared_only=True),
    "PasscodeLockGracePeriod": _SettingItem("PasscodeLockGracePeriod", int, "9.3.2", shared_only=True),
    "MaximumResidentUsers": _SettingItem("MaximumResidentUsers", int, "9.3", shared_only=True),
    "SharedDeviceConfiguration": _SettingItem(None, dict, "13.4", shared_only=True),
    # iOS 27 removed Settings' SoftwareUpdateSettings (corpus PROVENANCE.md).
    "SoftwareUpdateSettings": _SettingItem("RecommendationCadence", int, "14.5", supervised=True, removed="27.0"),
    "AccessibilitySettings": _SettingItem(None, dict, "16.0", supervised=True),
}


# The items the schema allows under User Enrollment (every other one is "forbidden" there).
USER_ENROLLMENT_ITEMS = frozenset({"ApplicationConfiguration", "ApplicationAttributes", "OrganizationInfo",
                                   "MDMOptions"})


def settings(command: Command, ctx: CommandContext) -> Answer:
    results = [_setting(item, ctx) for item in command.keys["Settings"]]
    return Answer(Status.ACKNOWLEDGED, extra={"Settings": results})


def _setting(item: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
    name, facts = item["Item"], ctx.facts
    spec = SETTING_ITEMS.get(name)
    version, shared = facts.os_version, facts.kind is DeviceKind.SHARED_IPAD
    if spec is None or version < _V(spec.introduced) or (spec.removed and version >= _V(spec.removed)):
        return {"Item": name, "Status": Status.ERROR.value}
    user_enrolled = facts.kind is DeviceKind.USER_ENROLLMENT
    if (spec.supervised and not facts.supervised) or (spec.shared_only and not shared) \
            or (user_enrolled and name not in USER_ENROLLMENT_ITEMS):
        return {"Item": name, "Status": Status.ERROR.value}
    value = item.get(spec.key) if spec.key else None
    if spec.key and not (isinstance(value, spec.kind) and not (spec.kind is int and isinstance(value, bool))):
        return {"Item": name, "Status": Status.COMMAND_FORMAT_ERROR.value}  # as micromdm/micromdm#637 shows
    _apply(name, value, item, ctx)
    result = {"Item": name, "Status": Status.ACKNOWLEDGED.value}
    if name in ("ApplicationConfiguration", "ApplicationAttributes"):
        result["Identifier"] = value
    return result


def _apply(name: str, value: Any, item: dict[str, Any], ctx: CommandContext) -> None:
    state = ctx.state
    if name == "DeviceName":
        state.device_name = value
    elif name == "TimeZone":
        state.time_zone = value
    elif name in state.settings:
        state.settings[name] = value
    elif name == "OrganizationInfo":
        state.organization = dict(item.get("OrganizationInfo") or {})


# Software updates (supervised, iOS 9 to 26): the newest simulated release the hardware runs is on offer; the
# product key is Apple's iOS form (iOSUpdate<build>).
def _offer(ctx: CommandContext) -> tuple[str, str, str] | None:
    facts = ctx.facts
    model = next(m for m in MODELS if m.product_name == facts.product_name)
    newer = [_V(v) for v in BUILDS if _V(v) > facts.os_version and model.runs(_V(v))]
    if not newer:
        return None
    target = max(newer)
    build = build_of(target, facts.product_name)
    return f"iOSUpdate{build}", str(target), build


def available_os_updates(command: Command, ctx: CommandContext) -> Answer:
    offer = _offer(ctx)
    updates = []
    if offer is not None:
        key, version, build = offer
        update = {"ProductKey": key, "HumanReadableName": f"iOS {version}", "ProductName": "iOS",
                  "Version": version, "Build": build, "DownloadSize": 1_450_000_000, "InstallSize": 5_800_000_000,
                  "IsCritical": False, "RestartRequired": True, "AllowsInstallLater": True}
        if ctx.facts.os_version >= _V("16.2"):
            update["IsSecurityResponse"] = False
        updates.append(update)
    return Answer(Status.ACKNOWLEDGED, extra={"AvailableOSUpdates": updates})


def os_update_status(command: Command, ctx: CommandContext) -> Answer:
    # A scheduled update is reported, not downloaded: the simulator never installs a new iOS.
    status = [{"ProductKey": key, "IsDownloaded": False, "DownloadPercentComplete": 0.0, "Status": "Idle"}
              for key in ctx.state.scheduled_updates]
    return Answer(Status.ACKNOWLEDGED, extra={"OSUpdateStatus": status})


def schedule_os_update(command: Command, ctx: CommandContext) -> Answer:
    offer = _offer(ctx)
    results = []
    for update in command.keys["Updates"]:
        key, action = update.get("ProductKey") or (offer[0] if offer else ""), update["InstallAction"]
        if offer is not None and key == offer[0]:
            ctx.state.scheduled_updates[key] = action
        results.append({"ProductKey": key, "InstallAction": action, "Status": "Idle"})
    return Answer(Status.ACKNOWLEDGED, extra={"UpdateResults": results})
