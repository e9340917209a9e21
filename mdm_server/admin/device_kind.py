"""What a filter label can ask about a device: platform, kind, OS version, ownership and user attributes.

Kind and platform come from check-in facts; ownership is a server-side attribute the administrator sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mdm_protocol.errors import MessageError
from mdm_protocol.osversion import OSVersion

from ..storage.interface import Device, EnrollmentState
from .contracts import AdminError, User, UserDirectory
from .docstore import Documents

ATTRIBUTES_KIND = "device_attributes"


class DeviceKind(StrEnum):
    IPHONE = "iPhone"
    IPAD = "iPad"
    # A multi-user iPad: DeviceInformation's IsMultiUser (iOS 9.3+) is the one fact that says so.
    SHARED_IPAD = "Shared iPad"
    # Apple's UE devices check in with an EnrollmentID and never a UDID (SPEC section 1).
    USER_ENROLLMENT = "User Enrollment"
    IPOD = "iPod touch"
    OTHER = "other"


class Ownership(StrEnum):
    COMPANY = "company"
    EMPLOYEE = "employee"
    UNKNOWN = "unknown"  # nobody said; EPMM's default for a newly registered device


# ProductName prefixes ("iPhone15,2", "iPad13,4", "AppleTV6,2") to the platform EPMM shows.
_PLATFORMS = (
    ("iPhone", "iOS"), ("iPad", "iOS"), ("iPod", "iOS"), ("Watch", "watchOS"), ("AppleTV", "tvOS"),
    ("RealityDevice", "visionOS"), ("Mac", "macOS"), ("iMac", "macOS"),
)


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """The inventory view of one device that label criteria are evaluated against."""

    device_id: str
    platform: str  # "iOS", "tvOS", ... or "unknown"
    kind: DeviceKind
    os_version: OSVersion | None
    ownership: Ownership
    state: EnrollmentState
    user: User | None = None

    def user_attribute(self, name: str) -> str | None:
        """user_id, email, display_name, or a custom attribute (USER_CUSTOM1..4 and the like)."""
        user = self.user
        if user is None:
            return None
        if name in ("user_id", "email", "display_name"):
            return getattr(user, name)
        return user.custom.get(name)


def platform_of(facts: Mapping[str, Any]) -> str:
    product = facts.get("ProductName")
    if not isinstance(product, str):
        return "unknown"
    return next((platform for prefix, platform in _PLATFORMS if product.startswith(prefix)), "unknown")


def kind_of(facts: Mapping[str, Any]) -> DeviceKind:
    """Classify from check-in facts; User Enrollment wins over the hardware, as it limits what MDM may do."""
    if isinstance(facts.get("EnrollmentID"), str) and "UDID" not in facts:
        return DeviceKind.USER_ENROLLMENT
    product = facts.get("ProductName")
    if not isinstance(product, str):
        return DeviceKind.OTHER
    if product.startswith("iPad"):
        return DeviceKind.SHARED_IPAD if facts.get("IsMultiUser") is True else DeviceKind.IPAD
    if product.startswith("iPhone"):
        return DeviceKind.IPHONE
    if product.startswith("iPod"):
        return DeviceKind.IPOD
    return DeviceKind.OTHER


def os_version_of(facts: Mapping[str, Any]) -> OSVersion | None:
    """The device's OSVersion, or None when it never said (or said something that is not a version)."""
    text = facts.get("OSVersion")
    if not isinstance(text, str):
        return None
    try:
        return OSVersion.parse(text)
    except MessageError:
        return None


def parse_ownership(value: Any) -> Ownership:
    try:
        return Ownership(value)
    except ValueError:
        allowed = ", ".join(o.value for o in Ownership)
        raise AdminError(f"ownership must be one of {allowed}, not {value!r}") from None


class Inventory:
    """Device facts for labels: check-in facts from storage, ownership kept here, users from the directory."""

    def __init__(self, docs: Documents, users: UserDirectory) -> None:
        self._docs = docs
        self._users = users
        self._ownership = {
            device_id: Ownership(body.get("ownership", Ownership.UNKNOWN))
            for device_id, body in docs.list(ATTRIBUTES_KIND)
        }

    def ownership(self, device_id: str) -> Ownership:
        return self._ownership.get(device_id, Ownership.UNKNOWN)

    def set_ownership(self, device_id: str, ownership: Ownership | str) -> Ownership:
        value = parse_ownership(ownership)
        with self._docs.transaction():
            self._docs.put(ATTRIBUTES_KIND, device_id, {"ownership": value.value})
        self._ownership[device_id] = value
        return value

    def reload(self, device_id: str) -> None:
        """Another server process changed this device's attributes: read them again."""
        body = self._docs.get(ATTRIBUTES_KIND, device_id)
        if body is None:
            self._ownership.pop(device_id, None)
        else:
            self._ownership[device_id] = Ownership(body.get("ownership", Ownership.UNKNOWN))

    def facts(self, device: Device) -> DeviceFacts:
        user = self._users.get_user(device.user_id) if device.user_id else None
        return DeviceFacts(
            device.device_id, platform_of(device.facts), kind_of(device.facts), os_version_of(device.facts),
            self.ownership(device.device_id), device.state, user,
        )
