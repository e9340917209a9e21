"""Waking devices: pushes now (admin, force check-in) or later (NotNow retries, sync intervals).

Each outcome is recorded; a token the provider calls invalid is not pushed again until the next TokenUpdate.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from mdm_protocol.clocks import Clock, DelayedCall

from .push.interface import Pusher, PushRequest
from .storage.interface import DeviceDirectory, PushOutcome, PushRecord, PushStore

log = logging.getLogger(__name__)


class WakerStorage(DeviceDirectory, PushStore, Protocol):
    """What the waker reads and writes: the device (is it pushable?) and its push outcomes."""


class Waker:
    """Pushes devices through a `Pusher`, on the reactor clock given; at most one pending wake per device."""

    def __init__(self, storage: WakerStorage, pusher: Pusher, *, clock: Clock) -> None:
        self.storage = storage
        self.pusher = pusher
        self.clock = clock
        self._scheduled: dict[str, DelayedCall] = {}
        self.outcomes: Counter[str] = Counter()  # accepted, rejected, or why no push was sent (GET /metrics)

    def push_now(self, device_ids: Iterable[str]) -> dict[str, PushRecord | str]:
        """Push each device; per device the recorded outcome, or why it could not be pushed."""
        return {device_id: self._push_one(device_id) for device_id in device_ids}

    def schedule(self, device_id: str, delay: float) -> None:
        call = self._scheduled.get(device_id)
        due = self.clock.seconds() + delay
        if call is not None and call.active():
            if call.getTime() <= due:
                return  # an earlier wake is already pending
            call.cancel()
        self._scheduled[device_id] = self.clock.callLater(delay, self._fire, device_id)

    def _fire(self, device_id: str) -> None:
        self._scheduled.pop(device_id, None)
        self._push_one(device_id)

    def _push_one(self, device_id: str) -> PushRecord | str:
        outcome = self._try_push(device_id)
        self.outcomes[_outcome_label(outcome)] += 1
        return outcome

    def _try_push(self, device_id: str) -> PushRecord | str:
        device = self.storage.get_device(device_id)
        if device is None:
            return "unknown device"
        if not device.pushable:
            return f"not pushable: device is {device.state.value} without a push token"
        last = self.storage.get_push(device_id)
        if last is not None and last.token_invalid:  # storage clears the flag at TokenUpdate
            return f"push token invalid ({last.reason}); waiting for a new TokenUpdate"
        response = self.pusher.push(PushRequest(device.push_token, device.push_magic, device.topic))
        outcome = PushOutcome.ACCEPTED if response.accepted else PushOutcome.REJECTED
        if not response.accepted:
            log.warning("push to %s refused: %s %s", device_id, response.status, response.reason)
        return self.storage.record_push(
            device_id, outcome, now=self.clock.seconds(), reason=response.reason,
            token_invalid=response.token_invalid,
        )


def _outcome_label(outcome: PushRecord | str) -> str:
    if isinstance(outcome, PushRecord):
        return outcome.outcome.value
    for prefix, label in (("unknown device", "unknown_device"), ("not pushable", "not_pushable"),
                          ("push token invalid", "token_invalid")):
        if outcome.startswith(prefix):
            return label
    return "not_sent"
