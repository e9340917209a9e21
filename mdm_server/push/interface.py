"""What the server asks of a push provider: APNs' HTTP/2 provider API reduced to its MDM essentials.

A push is `{"mdm": PushMagic}` to a device token under the MDM topic; the answer is an HTTP status and reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps builds a new encoder per call otherwise


@dataclass(frozen=True, slots=True)
class PushRequest:
    token: bytes
    push_magic: str
    topic: str

    def payload(self) -> bytes:
        # Exactly {"mdm": PushMagic}, no "aps" key (SPEC section 2).
        return _COMPACT.encode({"mdm": self.push_magic}).encode()


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """APNs' answer to one POST /3/device/<token>: 200, or 400/410 with APNs' reason string."""

    status: int
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 200

    @property
    def token_invalid(self) -> bool:
        # APNs: 410 Unregistered and 400 BadDeviceToken mean "stop pushing this token".
        return self.status == 410 or self.reason == "BadDeviceToken"


class Pusher(Protocol):
    """Anything that can send MDM pushes: the in-process APNs simulation answers at once, the HTTP/2 provider
    client (`apns_client.APNsProviderClient`) with a Deferred of the answer."""

    def push(self, request: PushRequest) -> ProviderResponse | Deferred[ProviderResponse]: ...
