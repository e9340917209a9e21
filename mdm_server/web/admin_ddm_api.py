"""The V2 admin JSON API for Declarative Device Management: what a channel is offered, what it reported, and
the DeclarativeManagement command that makes a device sync now.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from twisted.web.server import Request

from mdm_protocol.clocks import Clock

from ..declaration_status import StatusStore
from ..declarations import DeclarationStore, sync_command
from ..storage.interface import Device, DeviceDirectory, EnrollmentState, QueueAdmin, UserChannelStore
from ..wakeups import Waker
from .api_shapes import arg
from .json_api import Route, accepts
from .json_io import ApiError

Handler = Callable[..., tuple[int, Any]]
_DEVICE = r"(?P<device_id>[^/]+)"


class DeclarativeStorage(DeviceDirectory, UserChannelStore, QueueAdmin, Protocol):
    """Devices and their user channels, and the queue the DeclarativeManagement command goes into."""


class AdminDeclarativeAPI:
    """Routes under /api/v2/devices/{device_id}/: declarations, ddm-status, declarative-management."""

    def __init__(self, storage: DeclarativeStorage, declarations: DeclarationStore, status: StatusStore,
                 waker: Waker, *, clock: Clock) -> None:
        self.storage, self.declarations, self.status = storage, declarations, status
        self.waker, self.clock = waker, clock
        table: list[tuple[bytes, str, Handler]] = [
            (b"GET", f"/api/v2/devices/{_DEVICE}/declarations", self.show_declarations),
            (b"GET", f"/api/v2/devices/{_DEVICE}/ddm-status", self.show_status),
            (b"POST", f"/api/v2/devices/{_DEVICE}/declarative-management", self.sync_now),
        ]
        self.routes: list[Route] = [(method, re.compile(path), handler) for method, path, handler in table]

    def _channel(self, request: Request, device_id: str) -> tuple[Device, str | None]:
        device = self.storage.get_device(device_id)
        if device is None:
            raise ApiError(404, f"unknown device {device_id!r}", "not_found")
        user = arg(request, "user") or None
        if user is not None and self.storage.get_user_channel(device_id, user) is None:
            raise ApiError(404, f"device {device_id!r} has no user channel {user!r}", "not_found")
        return device, user

    @accepts("user")
    def show_declarations(self, request: Request, device_id: str) -> tuple[int, Any]:
        _, user = self._channel(request, device_id)
        channel = self.declarations.get(device_id, user)
        tokens = channel.tokens().to_json()["SyncTokens"]
        return 200, {
            "deviceId": device_id, "user": user, "declarationsToken": tokens["DeclarationsToken"],
            "timestamp": tokens["Timestamp"],
            # Payloads hold no secret: an identity asset names only the URL its data is fetched from.
            "items": [{"kind": item.declaration.kind.value, "source": item.source, **item.declaration.to_json()}
                      for item in channel.offered],
        }

    @accepts("user", "history")
    def show_status(self, request: Request, device_id: str) -> tuple[int, Any]:
        _, user = self._channel(request, device_id)
        history = arg(request, "history") or "true"
        if history not in ("true", "false"):
            raise ApiError(400, "history must be true or false", "invalid_parameter")
        status = self.status.get(device_id, user)
        if status is None:
            return 200, {"deviceId": device_id, "user": user, "updatedAt": None, "statusItems": {}, "errors": [],
                         "declarations": {"activations": [], "configurations": [], "assets": [], "management": []},
                         **({"history": []} if history == "true" else {})}
        return 200, status.to_json(with_history=history == "true")

    def sync_now(self, request: Request, device_id: str) -> tuple[int, Any]:
        """Queue DeclarativeManagement (Data: the device channel's tokens) and push the device."""
        device, _ = self._channel(request, device_id)
        if device.state is EnrollmentState.UNENROLLED:
            raise ApiError(409, f"device {device_id!r} checked out: nothing was queued", "conflict")
        new = sync_command(self.declarations.get(device_id))
        self.storage.enqueue([device_id], new, now=self.clock.seconds())
        outcome = self.waker.push_now([device_id])[device_id]
        pushed = not isinstance(outcome, str) and outcome.outcome.value == "accepted"
        return 202, {"commandUuid": new.command_uuid, "pushed": pushed,
                     "reason": outcome if isinstance(outcome, str) else outcome.reason}
