"""The in-process APNs simulation: the `mdmsim apns` gateway's core behind the server's synchronous `Pusher`
interface, for virtual-time worlds and single-process runs (no HTTP/2, no certificates: the caller is trusted).

Same coalescing, holding and faults as the gateway; devices attach a callback per token (their push link).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apns_sim.faults import FaultPlan
from apns_sim.gateway import Gateway, GatewayStats
from apns_sim.provider_api import MAX_PAYLOAD, STATUS, STORAGE_POLICY, Notification, Reason
from mdm_protocol.clocks import Clock

from .interface import ProviderResponse, PushRequest

Deliver = Callable[[bytes, dict[str, Any]], None]
TimedDeliver = Callable[[bytes, dict[str, Any], float], None]  # also given the push's time on the clock


class DeliveryStats:
    """The simulation's counters under their old names, read live from the gateway's (GET /metrics keeps one)."""

    def __init__(self, stats: GatewayStats) -> None:
        self._stats = stats

    accepted = property(lambda self: self._stats.accepted)
    rejected = property(lambda self: sum(self._stats.refused.values()))
    coalesced = property(lambda self: self._stats.coalesced)
    dropped = property(lambda self: self._stats.dropped)
    delivered = property(lambda self: self._stats.delivered)
    held_for_offline = property(lambda self: self._stats.held)


class APNsSimulation:
    """`push()` is the provider side; `register`/`attach`/`detach`/`invalidate` the device side."""

    def __init__(self, clock: Clock, seed: int = 0, drop_rate: float = 0.0, delay: float = 0.0,
                 jitter: float = 0.0) -> None:
        self.clock = clock
        # Uniform jitter and the same seeded draws (drop, then delay) as before the gateway existed, so seeded
        # worlds replay as they did.
        faults = FaultPlan(delay=delay, jitter=jitter, drop_rate=drop_rate, seed=seed, jitter_shape="uniform")
        self.gateway = Gateway(clock, faults=faults, seed=seed, immediate=False)
        self.stats = DeliveryStats(self.gateway.stats)

    # Device side -------------------------------------------------------------------------------------

    def register(self, token: bytes, topic: str) -> None:
        """The device obtained `token` for `topic` (it will report it in TokenUpdate)."""
        self.gateway.register(token, topic)

    def attach(self, token: bytes, deliver: Deliver | TimedDeliver, *, timed: bool = False) -> int:
        """The device is online; a push held while it was offline is delivered now. `timed`: `deliver` also
        gets the time the provider sent the push (the clock's; wall-clock time on a real reactor)."""
        if timed:
            return self.gateway.attach(token, deliver)  # type: ignore[arg-type]
        untimed: Deliver = deliver  # type: ignore[assignment]
        return self.gateway.attach(token, lambda t, payload, _sent_at: untimed(t, payload))

    def detach(self, token: bytes) -> None:
        """The device went offline; APNs stores the last push for it."""
        self.gateway.detach(token)

    def invalidate(self, token: bytes) -> None:
        """The app was uninstalled / the device unenrolled: APNs now answers 410 Unregistered."""
        self.gateway.unregister(token)

    def unregister(self, token: bytes) -> None:
        """The push link's name for `invalidate` (a fleet reports a CheckOut or an erased device)."""
        self.invalidate(token)

    # Provider side -----------------------------------------------------------------------------------

    def push(self, request: PushRequest) -> ProviderResponse:
        if len(request.token) != 32:
            return self._refused(Reason.BAD_DEVICE_TOKEN)
        if len(request.payload()) > MAX_PAYLOAD:
            return self._refused(Reason.PAYLOAD_TOO_LARGE)
        now = self.clock.seconds()
        # No apns-expiration from the in-process provider: held under the storage policy, like Apple does.
        notification = Notification(request.token, request.topic, {"mdm": request.push_magic}, "",
                                    int(now) + STORAGE_POLICY, 10)
        answer = self.gateway.accept(notification, now)
        if answer.reason is not None:
            self.gateway.stats.refused[answer.reason] += 1
        return ProviderResponse(answer.status, answer.reason.value if answer.reason else None)

    def _refused(self, reason: Reason) -> ProviderResponse:
        self.gateway.stats.refused[reason] += 1
        return ProviderResponse(STATUS[reason], reason.value)
