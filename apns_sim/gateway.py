"""The simulated APNs core: answers provider requests and delivers to attached devices, on the clock passed in.

One pending notification per token (a newer one replaces it), held for an unreachable device until it expires;
faults from a `FaultPlan`. Devices attach through the push link (`register`/`attach`/`detach`/`unregister`).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .faults import FaultPlan
from .provider_api import Answer, Environment, Notification, ProviderRequest, Reason, check_request
from .registry import HeldPush, TokenRegistry

Deliver = Callable[[bytes, dict[str, Any], float], None]  # token, payload, when the provider sent it
FLUSH_INTERVAL = 0.5  # seconds of registry changes a crash may lose (a clean stop loses none)


@dataclass
class GatewayStats:
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by Apple's reason
    coalesced: int = 0  # replaced by a newer push before delivery
    dropped: int = 0  # the drop-rate fault
    held: int = 0  # kept for an unreachable device
    expired: int = 0  # held past apns-expiration, or 0-expiration for an unreachable device
    delivered: int = 0


class Gateway:
    """`answer()` is the provider side; `register`/`attach`/`detach`/`unregister` the device side."""

    def __init__(self, clock: Any, registry: TokenRegistry | None = None, faults: FaultPlan | None = None, *,
                 environment: Environment = Environment.PRODUCTION, seed: int = 0,
                 flush_interval: float = FLUSH_INTERVAL, immediate: bool = True) -> None:
        self.clock = clock
        self.registry = registry if registry is not None else TokenRegistry()
        self.faults = faults or FaultPlan(seed=seed)
        self.environment = environment
        self.stats = GatewayStats()
        self.shutting_down = False
        # The start time too: a restarted gateway must not hand out the apns-ids of its last run again.
        self._rng = random.Random(f"{seed}:{clock.seconds()}:apns-id")
        self._online: dict[bytes, Deliver] = {}
        self._timers: dict[bytes, Any] = {}
        self._missed: Counter[bytes] = Counter()  # per token: pushes it will never see, since it last attached
        self._flush_interval = flush_interval
        self._flush_call: Any = None
        # Without delay a push is handed over inside the provider's call (the gateway's fast path); in-process,
        # the server's own call stack must not run the device, so `immediate=False` waits a turn of the clock.
        self._immediate = immediate

    # Provider side -------------------------------------------------------------------------------------

    def answer(self, request: ProviderRequest) -> Answer:
        now = self.clock.seconds()
        checked = check_request(request, now=now, environment=self.environment, new_id=self._new_id)
        if isinstance(checked, Notification):
            checked = self.accept(checked, now)
        elif self.shutting_down:
            checked = Answer.refuse(Reason.SHUTDOWN, checked.apns_id)
        if checked.reason is not None:
            self.stats.refused[checked.reason] += 1
        return checked

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def accept(self, notification: Notification, now: float) -> Answer:
        """A valid request for a token: Apple's registry checks, then the faults, then delivery or hold."""
        token, apns_id = notification.token, notification.apns_id
        registration = self.registry.tokens.get(token)
        if self.shutting_down:
            return Answer.refuse(Reason.SHUTDOWN, apns_id)
        if registration is None:
            return Answer.refuse(Reason.BAD_DEVICE_TOKEN, apns_id)
        if registration.unregistered_at is not None:
            reason = Reason(registration.reason or Reason.UNREGISTERED)
            return Answer.refuse(reason, apns_id, int(registration.unregistered_at * 1000))
        if registration.topic != notification.topic:
            return Answer.refuse(Reason.DEVICE_TOKEN_NOT_FOR_TOPIC, apns_id)
        fault = self.faults.refusal(now)
        if fault is not None:
            return Answer.refuse(fault, apns_id)
        self.stats.accepted += 1
        if self.faults.drops():
            self.stats.dropped += 1
        else:
            push = HeldPush(notification.payload, apns_id, notification.expiration, notification.priority, now)
            self._take(token, push)
        return Answer(200, apns_id)

    def _reachable(self, token: bytes) -> bool:
        return token in self._online and not self.faults.offline(token)

    def _take(self, token: bytes, push: HeldPush) -> None:
        reachable = self._reachable(token)
        replaced = token in self.registry.pending
        if replaced:
            self.stats.coalesced += 1  # APNs keeps only the last push per token
            if not reachable:
                self._missed[token] += 1
        if reachable and token not in self._timers:
            delay = self.faults.delivery_delay()
            if delay <= 0 and not replaced and self._immediate:
                self._hand_over(token, push)  # the common case costs neither a timer nor a registry write
                return
            self._timers[token] = self.clock.callLater(max(delay, 0.0), self._deliver, token)
        elif not reachable and push.expiration == 0:
            self.stats.expired += 1  # "now or never", and the device is not there now
            self._missed[token] += 1
            self.registry.hold(token, None)
            self._dirtied()
            return
        elif not reachable:
            self.stats.held += 1
        self.registry.hold(token, push)
        self._dirtied()

    def _deliver(self, token: bytes) -> None:
        self._timers.pop(token, None)
        push = self.registry.pending.get(token)
        if push is None or not self._reachable(token):
            return
        self.registry.hold(token, None)
        self._dirtied()
        if push.expired(self.clock.seconds()):
            self.stats.expired += 1
            self._missed[token] += 1
            return
        self._hand_over(token, push)

    def _hand_over(self, token: bytes, push: HeldPush) -> None:
        self.stats.delivered += 1
        self._online[token](token, push.payload, push.accepted_at)

    # Device side ---------------------------------------------------------------------------------------

    def register(self, token: bytes, topic: str) -> None:
        """The device obtained `token` for `topic`; registering again makes an unregistered token valid."""
        self.registry.register(token, topic, self.clock.seconds())
        self._dirtied()

    def attach(self, token: bytes, deliver: Deliver, *, timed: bool = True) -> int:
        """The device is reachable: its held push (if still valid) goes out now. Returns how many pushes it
        missed since it last attached (replaced while it was away, or expired). `timed` is always true here:
        `deliver` gets the provider's send time (accepted for the push link's call shape)."""
        if token not in self.registry.tokens:
            raise KeyError(f"token {token.hex()} was never registered")
        self._online[token] = deliver
        if token in self.registry.pending and token not in self._timers and self._reachable(token):
            delay = self.faults.delivery_delay()
            if delay <= 0 and self._immediate:
                self._deliver(token)
            else:
                self._timers[token] = self.clock.callLater(delay, self._deliver, token)
        return self._missed.pop(token, 0)

    def detach(self, token: bytes) -> None:
        """The device became unreachable; APNs keeps the last push for it."""
        self._online.pop(token, None)
        timer = self._timers.pop(token, None)
        if timer is not None and timer.active():
            timer.cancel()

    def unregister(self, token: bytes, reason: Reason = Reason.UNREGISTERED) -> None:
        """The device unenrolled or was erased: from now on APNs answers 410 with this time."""
        self.detach(token)
        if self.registry.unregister(token, self.clock.seconds(), reason.value):
            self._dirtied()

    # Lifecycle -----------------------------------------------------------------------------------------

    def _dirtied(self) -> None:
        if self._flush_call is None and self.registry.dirty:
            self._flush_call = self.clock.callLater(self._flush_interval, self.flush)

    def flush(self) -> None:
        self._flush_call = None
        self.registry.flush()

    def stop(self) -> None:
        """Refuse new pushes (503 Shutdown), keep held ones on disk, close the registry."""
        self.shutting_down = True
        for token in list(self._timers):
            self.detach(token)
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.registry.close()
