"""EPMM substitution variables ($USERID$, $EMAIL$, $MANAGED_APPLE_ID$...) and their per-device values.

Variables are replaced per device and user before a profile leaves the server; the device sees only values.
"""

from __future__ import annotations

import re

from ..storage.interface import Device
from .contracts import AdminError, RenderError, User
from .device_kind import DeviceKind, kind_of
from .field_names import camel_name

USERID, EMAIL = "USERID", "EMAIL"
USER_CUSTOM = tuple(f"USER_CUSTOM{n}" for n in range(1, 5))
DEVICE_UUID_NO_DASHES = "DEVICE_UUID_NO_DASHES"
MANAGED_APPLE_ID = "MANAGED_APPLE_ID"
KNOWN = (USERID, EMAIL, *USER_CUSTOM, DEVICE_UUID_NO_DASHES, MANAGED_APPLE_ID)
_VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)\$")

__all__ = ["KNOWN", "DeviceKind", "check_template", "substitute", "variables_in"]


def variables_in(text: str) -> tuple[str, ...]:
    return tuple(match.group(1) for match in _VARIABLE.finditer(text))


def check_template(text: str, field: str) -> None:
    """AdminError naming the field when `text` uses a variable EPMM does not know (a typo stays visible)."""
    unknown = [name for name in variables_in(text) if name not in KNOWN]
    if unknown:
        known = ", ".join(f"${name}$" for name in KNOWN)
        raise AdminError(f"{camel_name(field)}: unknown variable ${unknown[0]}$ (known: {known})")


def substitute(text: str, device: Device, user: User | None) -> str:
    """`text` with every variable replaced for this device and user; RenderError says what is missing."""
    if "$" not in text:
        return text
    return _VARIABLE.sub(lambda match: _value(match.group(1), device, user), text)


def _value(name: str, device: Device, user: User | None) -> str:
    if name == DEVICE_UUID_NO_DASHES:
        return device.device_id.replace("-", "")
    if name == MANAGED_APPLE_ID:
        return _managed_apple_id(device, user)
    if name not in KNOWN:
        raise RenderError(f"unknown variable ${name}$")
    if user is None:
        owner = f"user {device.user_id!r} is unknown" if device.user_id else "it has no user"
        raise RenderError(f"${name}$ needs the device's user, but {owner} (device {device.device_id})")
    value = user.user_id if name == USERID else user.email if name == EMAIL else user.custom.get(name)
    if not value:
        raise RenderError(f"${name}$: user {user.user_id!r} has no value for it (device {device.device_id})")
    return value


def _managed_apple_id(device: Device, user: User | None) -> str:
    # Shared iPad is an iPad whose facts say IsMultiUser; UE sends an EnrollmentID (device_kind.kind_of).
    kind = kind_of(device.facts)
    if kind not in (DeviceKind.SHARED_IPAD, DeviceKind.USER_ENROLLMENT):
        product = device.facts.get("ProductName", "unknown product")
        raise RenderError(
            f"$MANAGED_APPLE_ID$ is only available on Shared iPad and User Enrollment devices; "
            f"device {device.device_id} is {kind.value} ({product})"
        )
    value = (user.custom.get(MANAGED_APPLE_ID) if user else None) or device.facts.get("ManagedAppleID")
    if not isinstance(value, str) or not value:
        who = f"user {user.user_id!r}" if user else "the device's user"
        raise RenderError(f"$MANAGED_APPLE_ID$: no Managed Apple ID known for {who} "
                          f"(device {device.device_id})")
    return value
