"""The seams between the admin model's parts: what label/apply code needs from settings and users.

Settings and users (settings.py, users.py, render.py) implement these; labels and Apply to Label use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..storage.interface import Device

if TYPE_CHECKING:
    from ..declarations import Offered


class AdminError(Exception):
    """An admin request that cannot be done; `reason` is shown to the administrator (HTTP 4xx)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RenderError(AdminError):
    """A setting cannot be rendered for one device (e.g. $MANAGED_APPLE_ID$ on an ordinary iPhone)."""


@dataclass(frozen=True)
class User:
    user_id: str
    email: str | None = None
    display_name: str | None = None
    custom: Mapping[str, str] = field(default_factory=dict)  # USER_CUSTOM1..4 and any other attributes


@dataclass(frozen=True)
class Rendered:
    """One setting rendered for one device: the profile bytes and what identifies its content."""

    setting_id: str
    identifier: str  # the profile's PayloadIdentifier: stable per (setting, device) so re-pushes replace
    profile: bytes
    content_hash: str  # hash of the rendered content, ignoring fresh UUIDs: equal hash = nothing to re-send
    warnings: tuple[str, ...] = ()
    # Identities left out because the server deleted their private keys ("delete private keys after N
    # days"): devices that already hold them keep them, so this render must not replace what they have.
    keys_deleted: tuple[str, ...] = ()
    # Delivered by DDM instead (the setting's delivery for this device): the declarations its channel is
    # offered, `profile` empty, `identifier` the account configuration's Identifier.
    declarations: tuple[Offered, ...] | None = None
    # The soonest "delete private keys after N days" of the identities embedded: no copy of them (the queued
    # command included) is kept past it. None: no embedded key has a deletion date.
    keys_expire_at: datetime | None = None


class Renderer(Protocol):
    def setting_kind(self, setting_id: str) -> str:
        """'certificate', 'user_provided', 'email', 'exchange' (AdminError 404 if unknown)."""
        ...

    def check_applicable_to_label(self, setting_id: str) -> None:
        """AdminError if this setting must not be applied to labels (user-provided certificate settings)."""
        ...

    def render(self, setting_id: str, device: Device) -> Rendered:
        """RenderError when this device cannot get the setting; the admin sees the reason."""
        ...

    def smime_encryption(self, setting_id: str) -> bool:
        """Whether the setting turns S/MIME encryption on (for the Sentry conflict check)."""
        ...

    def account_key(self, setting_id: str, device: Device) -> tuple[str, str] | None:
        """(host, user) of an Exchange setting for this device, for the two-Exchange-settings conflict."""
        ...


class UserDirectory(Protocol):
    def get_user(self, user_id: str) -> User | None: ...


JSON = dict[str, Any]
