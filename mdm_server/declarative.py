"""The server's DDM endpoints (SPEC section 10): tokens, declaration-items, declaration/<kind>/<id>, status,
and the asset data an identity asset's DataURL names, given only to the channel it was declared to. No IO.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mdm_protocol.checkin import DeclarativeManagement
from mdm_protocol.ddm import DeclarationKind, StatusReport, parse_declaration_endpoint
from mdm_protocol.errors import ProtocolError

from .declaration_status import StatusStore
from .declarations import DeclarationStore
from .service import DeviceIdentity, Response
from .storage.interface import DeviceDirectory, EnrollmentState, UserChannelStore

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
STATUS_RECEIVED = Response(200)


def _json(body: bytes) -> Response:
    return Response(200, body, JSON_TYPE)


def not_found(reason: str) -> Response:
    # 404, never 401/410: those tell a device to unenroll. The reason names nothing the caller may not see.
    return Response(404, (reason + "\n").encode(), "text/plain; charset=utf-8", reason)


def forbidden(reason: str) -> Response:
    return Response(403, (reason + "\n").encode(), "text/plain; charset=utf-8", reason)


class AssetData(Protocol):
    def asset_document(self, device_id: str, private: Mapping[str, Any]) -> bytes | None:
        """The bytes behind an asset's DataURL, from what the server kept privately with it; None if gone."""
        ...


class ChannelDirectory(DeviceDirectory, UserChannelStore, Protocol):
    """Devices by identity certificate, and their user channels: who may fetch what."""


class DeclarativeService:
    """Answers DeclarativeManagement check-ins of an identified channel, and asset fetches by device identity."""

    def __init__(self, declarations: DeclarationStore, status: StatusStore, devices: ChannelDirectory, *,
                 now: Callable[[], float], assets: AssetData | None = None) -> None:
        self.declarations, self.status, self.devices = declarations, status, devices
        self._now = now
        self.assets = assets

    def answer(self, device_id: str, user: str | None, message: DeclarativeManagement) -> Response:
        """The answer to one DDM check-in; the caller has checked the identity and that the channel exists."""
        endpoint = message.endpoint
        if endpoint == "tokens":
            return _json(self.declarations.get(device_id, user).tokens().encode())
        if endpoint == "declaration-items":
            return _json(self.declarations.get(device_id, user).manifest().encode())
        if endpoint == "status":
            return self._status(device_id, user, message.data)
        try:
            kind, identifier = parse_declaration_endpoint(endpoint)
        except ProtocolError as exc:
            return Response.refuse(exc.reason)
        offered = self.declarations.get(device_id, user).find(kind, identifier)
        if offered is None:
            return not_found(f"no {kind.value} {identifier!r} is declared to this channel")
        return _json(offered.declaration.encode())

    def _status(self, device_id: str, user: str | None, data: bytes | None) -> Response:
        if data is None:
            return Response.refuse("DeclarativeManagement status: Data (the status report) is missing")
        try:
            report = StatusReport.decode(data)
        except ProtocolError as exc:
            return Response.refuse(f"DeclarativeManagement status: {exc.reason}")
        self.status.record(device_id, user, report, now=self._now())  # readiness reads it when asked
        return STATUS_RECEIVED

    def asset(self, identity: DeviceIdentity | None, identifier: str, user: str | None = None) -> Response:
        """The data of asset `identifier` for the device `identity` proves, on its channel `user`. No identity,
        or one of a device that is not enrolled, is 403; another device, a channel it does not have, or an asset
        not declared to it is 404 with one message, so nothing tells them whether the asset exists."""
        if identity is None:
            return forbidden("asset data needs the device's MDM identity")
        device = self.devices.device_for_certificate(identity.cert_sha256)
        if device is None or device.state is not EnrollmentState.ENROLLED:
            return forbidden("asset data needs an enrolled device's MDM identity")
        refused = not_found(f"no asset {identifier!r} is declared to this device")
        if user is not None and self.devices.get_user_channel(device.device_id, user) is None:
            return refused
        offered = self.declarations.get(device.device_id, user).find(DeclarationKind.ASSET, identifier)
        if offered is None or offered.private is None or self.assets is None:
            return refused
        document = self.assets.asset_document(device.device_id, offered.private)
        if document is None:
            log.warning("device %s: data of asset %s is gone (%s)", device.device_id, identifier,
                        offered.private.get("reason", "no longer available"))
            return refused
        return _json(document)

