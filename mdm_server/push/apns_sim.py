"""A faithful APNs simulation: provider-API answers, per-token coalescing, delay, drops, offline storage.

Devices attach a callback per token (their push link); the clock is passed in, never the global reactor.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdm_protocol.clocks import Clock

from .interface import ProviderResponse, PushRequest

MAX_PAYLOAD = 4096  # APNs' limit for a regular push payload
Deliver = Callable[[bytes, dict[str, Any]], None]
TimedDeliver = Callable[[bytes, dict[str, Any], float], None]  # also given the push's time on the clock


@dataclass
class DeliveryStats:
    accepted: int = 0
    rejected: int = 0
    coalesced: int = 0
    dropped: int = 0
    delivered: int = 0
    held_for_offline: int = 0


@dataclass
class _Endpoint:
    topic: str
    deliver: Deliver | TimedDeliver | None = None  # None while the device is offline
    timed: bool = False  # deliver takes the push's time too
    pending: dict[str, Any] | None = None  # the one push APNs keeps for this token
    pending_at: float = 0.0  # when the provider sent it (the clock's time)
    timer: Any = None
    invalid: bool = False


@dataclass
class APNsSimulation:
    """`push()` is the provider side; `attach()`/`detach()` are the device side (its push connection)."""

    clock: Clock
    seed: int = 0
    drop_rate: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    stats: DeliveryStats = field(default_factory=DeliveryStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._endpoints: dict[bytes, _Endpoint] = {}

    # Device side -------------------------------------------------------------------------------------

    def register(self, token: bytes, topic: str) -> None:
        """The device obtained `token` for `topic` (it will report it in TokenUpdate)."""
        self._endpoints.setdefault(token, _Endpoint(topic=topic)).topic = topic

    def attach(self, token: bytes, deliver: Deliver | TimedDeliver, *, timed: bool = False) -> None:
        """The device is online; a push held while it was offline is delivered now. `timed`: `deliver` also
        gets the time the provider sent the push (the clock's; wall-clock time on a real reactor)."""
        endpoint = self._endpoints.get(token)
        if endpoint is None:
            raise KeyError(f"token {token.hex()} was never registered")
        endpoint.deliver, endpoint.timed = deliver, timed
        if endpoint.pending is not None and endpoint.timer is None:
            self._schedule(token, endpoint)

    def detach(self, token: bytes) -> None:
        """The device went offline; APNs stores the last push for it."""
        endpoint = self._endpoints.get(token)
        if endpoint is not None:
            endpoint.deliver = None
            if endpoint.timer is not None and endpoint.timer.active():
                endpoint.timer.cancel()
            endpoint.timer = None

    def invalidate(self, token: bytes) -> None:
        """The app was uninstalled / the device unenrolled: APNs now answers 410 Unregistered."""
        endpoint = self._endpoints.get(token)
        if endpoint is not None:
            endpoint.invalid = True
            endpoint.pending = None
            self.detach(token)

    # Provider side -----------------------------------------------------------------------------------

    def push(self, request: PushRequest) -> ProviderResponse:
        response = self._check(request)
        if not response.accepted:
            self.stats.rejected += 1
            return response
        self.stats.accepted += 1
        endpoint = self._endpoints[request.token]
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.stats.dropped += 1
            return response
        if endpoint.pending is not None:
            self.stats.coalesced += 1  # APNs keeps only the last push per device
        endpoint.pending = {"mdm": request.push_magic}  # what the device receives: the decoded payload
        endpoint.pending_at = self.clock.seconds()  # the last push's: it is the one APNs keeps
        if endpoint.deliver is None:
            self.stats.held_for_offline += 1
        elif endpoint.timer is None:
            self._schedule(request.token, endpoint)
        return response

    def _check(self, request: PushRequest) -> ProviderResponse:
        endpoint = self._endpoints.get(request.token)
        if endpoint is None or len(request.token) != 32:
            return ProviderResponse(400, "BadDeviceToken")
        if endpoint.invalid:
            return ProviderResponse(410, "Unregistered")
        if endpoint.topic != request.topic:
            return ProviderResponse(400, "DeviceTokenNotForTopic")
        if len(request.payload()) > MAX_PAYLOAD:
            return ProviderResponse(413, "PayloadTooLarge")
        return ProviderResponse(200)

    def _schedule(self, token: bytes, endpoint: _Endpoint) -> None:
        wait = self.delay + (self._rng.random() * self.jitter if self.jitter else 0.0)
        endpoint.timer = self.clock.callLater(wait, self._deliver, token)

    def _deliver(self, token: bytes) -> None:
        endpoint = self._endpoints[token]
        endpoint.timer = None
        payload, endpoint.pending = endpoint.pending, None
        if payload is None or endpoint.deliver is None:
            return
        self.stats.delivered += 1
        if endpoint.timed:
            endpoint.deliver(token, payload, endpoint.pending_at)
        else:
            endpoint.deliver(token, payload)
