"""How a simulated iOS device answers the app commands against its small simulated App Store: install, remove,
InstalledApplicationList, ManagedApplicationList and ProvisioningProfileList ([ADM] mdm/commands/application.*).

Response shapes follow the schema's responsekeys by OS version; installs land at once (the user accepts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mdm_protocol.errors import MDM, ErrorChainItem
from mdm_protocol.osversion import OSVersion
from mdm_protocol.report import Command, Status

from .answers import Answer
from .device_state import InstalledApp, store_app
from .facts import DeviceKind

if TYPE_CHECKING:
    from .command_runner import CommandContext

_V = OSVersion.parse
# The app-list keys with the release that added them ([ADM] application.installed.list.yaml responsekeys).
_ITEM_SINCE = (("ShortVersion", "5.0"), ("DynamicSize", "5.0"), ("IsValidated", "9.2"),
               ("ExternalVersionIdentifier", "11.0"), ("AppStoreVendable", "11.3"), ("DeviceBasedVPP", "11.3"),
               ("BetaApp", "11.3"), ("AdHocCodeSigned", "11.3"), ("HasUpdateAvailable", "11.3"),
               ("IsAppClip", "16.0"), ("DistributorIdentifier", "17.4"))
# RemoveApplication of an app MDM did not install: the Error of micromdm/micromdm#841 (MDMErrorDomain, "The app
# “…” is not managed."). FLAG: that capture lost its ErrorCode; 12024 is this project's stand-in, not sourced.
APP_NOT_MANAGED_CODE = 12024


def _item(installed: InstalledApp, version: OSVersion) -> dict[str, Any]:
    app = installed.app
    item: dict[str, Any] = {
        "Identifier": app.identifier, "Name": app.name, "Version": app.version, "ShortVersion": app.short_version,
        "BundleSize": app.bundle_size, "DynamicSize": app.dynamic_size, "IsValidated": True,
        "Installing": installed.installing, "ExternalVersionIdentifier": 0, "AppStoreVendable": False,
        "DeviceBasedVPP": False, "BetaApp": False, "AdHocCodeSigned": False, "HasUpdateAvailable": False,
        "IsAppClip": False, "DistributorIdentifier": "com.apple.AppStore",
    }
    if app.itunes_store_id is not None:
        item["ExternalVersionIdentifier"] = app.itunes_store_id % 1_000_000_000  # a store version id per app
        item["AppStoreVendable"] = True
    for key, since in _ITEM_SINCE:
        if version < _V(since):
            del item[key]
    return item


# The keys the project always listed; the newer ones come only when a server asks by Items (iOS 14+).
_DEFAULT_ITEMS = frozenset({"Identifier", "Name", "Version", "ShortVersion", "BundleSize", "DynamicSize",
                            "IsValidated", "Installing"})


def installed_application_list(command: Command, ctx: CommandContext) -> Answer:
    keys, version = command.keys, ctx.facts.os_version
    identifiers, items = keys.get("Identifiers"), keys.get("Items")
    wanted = set(items) | {"Identifier"} if items and version >= _V("14.0") else _DEFAULT_ITEMS
    apps = []
    for installed in ctx.state.apps.values():
        if identifiers and installed.app.identifier not in identifiers:
            continue
        if keys.get("ManagedAppsOnly") and not installed.managed:
            continue
        apps.append({k: v for k, v in _item(installed, version).items() if k in wanted})
    return Answer(Status.ACKNOWLEDGED, extra={"InstalledApplicationList": apps})


def managed_application_list(command: Command, ctx: CommandContext) -> Answer:
    identifiers, version = command.keys.get("Identifiers"), ctx.facts.os_version
    listed: dict[str, Any] = {}
    for identifier, installed in ctx.state.apps.items():
        if not installed.managed or (identifiers and identifier not in identifiers):
            continue
        entry: dict[str, Any] = {"Status": "Installing" if installed.installing else "Managed",
                                 "ManagementFlags": installed.management_flags, "UnusedRedemptionCode": "",
                                 "HasConfiguration": False, "HasFeedback": False, "IsValidated": True,
                                 "ExternalVersionIdentifier": _item(installed, version).get("ExternalVersionIdentifier",
                                                                                             0)}
        for key, since in (("HasConfiguration", "7.0"), ("HasFeedback", "7.0"), ("IsValidated", "9.2"),
                           ("ExternalVersionIdentifier", "10.3")):
            if version < _V(since):
                del entry[key]
        listed[identifier] = entry
    return Answer(Status.ACKNOWLEDGED, extra={"ManagedApplicationList": listed})


def install_application(command: Command, ctx: CommandContext) -> Answer:
    keys, state = command.keys, ctx.state
    app = store_app(keys.get("Identifier"), keys.get("iTunesStoreID"))
    if app is None:
        return Answer(Status.ACKNOWLEDGED, extra={"RejectionReason": "CouldNotVerifyAppID"})
    present = state.apps.get(app.identifier)
    if present is not None and present.managed:
        return Answer(Status.ACKNOWLEDGED, extra={"Identifier": app.identifier, "RejectionReason":
                                                  "AppAlreadyInstalled"})
    if present is not None and keys.get("ChangeManagementState") != "Managed":
        return Answer(Status.ACKNOWLEDGED, extra={"Identifier": app.identifier, "State": "UserInstalledApp"})
    state.apps[app.identifier] = InstalledApp(app, managed=True, management_flags=keys.get("ManagementFlags", 0))
    # Supervised devices install silently (State Installing, as in the capture of Apple forums thread 731918);
    # on others the user is asked (Prompting) and, simulated, accepts.
    silent = ctx.facts.supervised or ctx.facts.kind is DeviceKind.SHARED_IPAD
    return Answer(Status.ACKNOWLEDGED, extra={"Identifier": app.identifier,
                                              "State": "Installing" if silent else "Prompting"})


def remove_application(command: Command, ctx: CommandContext) -> Answer:
    identifier = command.keys["Identifier"]
    installed = ctx.state.apps.get(identifier)
    if installed is None or not installed.managed:
        text = f"The app “{identifier}” is not managed."
        return Answer(Status.ERROR, (ErrorChainItem(APP_NOT_MANAGED_CODE, MDM, text, text),))
    del ctx.state.apps[identifier]
    return Answer(Status.ACKNOWLEDGED)


def provisioning_profile_list(command: Command, ctx: CommandContext) -> Answer:
    # No enterprise apps are installed on a simulated device, so no provisioning profiles either.
    return Answer(Status.ACKNOWLEDGED, extra={"ProvisioningProfileList": []})
