"""What MDM commands change on a simulated device: its name, lock, passcode, Lost Mode, settings and apps.

One mutable `DeviceState` per machine; the command answers read and change it, the machine acts on `erase_due`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .facts import DeviceFacts, DeviceKind


@dataclass(frozen=True, slots=True)
class StoreApp:
    """An app of the simulated App Store: what InstallApplication can install."""

    identifier: str
    name: str
    version: str  # CFBundleVersion
    short_version: str  # CFBundleShortVersionString
    itunes_store_id: int | None
    bundle_size: int
    dynamic_size: int = 3_000_000


# Store IDs are the apps' real App Store ones (apps.apple.com/app/id<N>); versions and sizes are illustrative.
STORE = (
    StoreApp("com.microsoft.Office.Outlook", "Microsoft Outlook", "4.2413.0", "4.2413.0", 951937596, 281_000_000),
    StoreApp("com.tinyspeck.chatlyio", "Slack", "25.11.10", "25.11.10", 618783545, 212_000_000),
    StoreApp("com.microsoft.skype.teams", "Microsoft Teams", "7.21.1", "7.21.1", 1113153706, 305_000_000),
    StoreApp("us.zoom.videomeetings", "Zoom Workplace", "6.6.5", "6.6.5", 546505307, 189_000_000),
)
# On the device before MDM (unmanaged): the apps InstalledApplicationList always listed.
PREINSTALLED = (
    StoreApp("com.apple.mobilemail", "Mail", "3731.500", "3731.500", None, 52_000_000),
    StoreApp("com.microsoft.Office.Outlook", "Outlook", "4.2413.0", "4.2413.0", 951937596, 52_000_000),
    StoreApp("com.mobileiron.phoenix", "Mobile@Work", "12.11.0", "12.11.0", None, 52_000_000),
    StoreApp("com.apple.mobilesafari", "Safari", "8617.2.4", "8617.2.4", None, 52_000_000),
)


@dataclass(slots=True)
class InstalledApp:
    app: StoreApp
    managed: bool = False
    management_flags: int = 0
    installing: bool = False


def store_app(identifier: str | None, itunes_store_id: int | None) -> StoreApp | None:
    for app in STORE:
        if (identifier and app.identifier == identifier) or (
                itunes_store_id and app.itunes_store_id == itunes_store_id):
            return app
    return None


@dataclass(slots=True)
class DeviceState:
    device_name: str
    passcode_present: bool
    time_zone: str = "Europe/London"
    locked: bool = False
    lost_mode: bool = False
    restrictions_password: bool = False  # Screen Time passcode (ClearRestrictionsPassword clears it)
    settings: dict[str, bool] = field(default_factory=lambda: {
        "DataRoaming": False, "VoiceRoaming": True, "PersonalHotspot": False, "Bluetooth": True,
        "DiagnosticSubmission": False, "AppAnalytics": False})
    organization: dict[str, str] | None = None
    apps: dict[str, InstalledApp] = field(default_factory=dict)
    scheduled_updates: dict[str, str] = field(default_factory=dict)  # ProductKey -> InstallAction
    derived: dict[str, str] = field(default_factory=dict)  # identifiers DeviceInformation derived (IMEI, MACs)
    erase_due: bool = False  # EraseDevice acknowledged: wipe once the server has the report
    restart_due: bool = False

    @classmethod
    def initial(cls, facts: DeviceFacts) -> DeviceState:
        # A Shared iPad has no device passcode; every other simulated device has one (MDM can only clear it).
        state = cls(facts.device_name, passcode_present=facts.kind is not DeviceKind.SHARED_IPAD)
        state.apps = {app.identifier: InstalledApp(app) for app in PREINSTALLED}
        return state
