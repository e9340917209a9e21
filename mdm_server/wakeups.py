"""Waking devices: pushes now (admin, force check-in) or later (NotNow retries, sync intervals).

Each outcome is recorded; a token the provider calls invalid is not pushed again until the next TokenUpdate.
Several server processes on one database push from one of them, the leader: the others hand pushes over (`Relay`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Protocol, cast

from twisted.internet import defer

from mdm_protocol.clocks import Clock, DelayedCall

from .push.interface import ProviderResponse, Pusher, PushRequest
from .storage.interface import DeviceDirectory, PushOutcome, PushRecord, PushStore
from .storage.push_batch import BulkPushStore, PushTarget

log = logging.getLogger(__name__)
# What push_now says for a push handed to an asynchronous provider (HTTP/2 APNs): its answer is recorded later.
SENT = "sent to APNs; its answer is recorded when it arrives"
BULK_PUSH = 50  # devices in one push_now from which a storage that offers it reads and writes in bulk
# What push_now says in a server process that is not the leader: the leading process pushes (workers/leader.py).
RELAYED = "handed to the leading server process, which pushes"


class Relay(Protocol):
    """Where a process that does not lead sends its pushes (workers/leader.py's PushRelay)."""

    @property
    def leading(self) -> bool: ...

    def forward(self, device_ids: list[str]) -> None: ...


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
        self.in_flight: set[defer.Deferred] = set()  # pushes an asynchronous provider has not answered yet
        self.relay: Relay | None = None  # set when several server processes share the database

    def push_now(self, device_ids: Iterable[str]) -> dict[str, PushRecord | str]:
        """Push each device; per device the recorded outcome, or why it could not be pushed."""
        relay = self.relay
        if relay is not None and not relay.leading:
            ids = list(device_ids)
            relay.forward(ids)
            self.outcomes["relayed"] += len(ids)
            return dict.fromkeys(ids, RELAYED)
        if isinstance(self.storage, BulkPushStore):
            ids = list(dict.fromkeys(device_ids))
            if len(ids) >= BULK_PUSH:
                return self._push_many(ids)
            return {device_id: self._push_one(device_id) for device_id in ids}
        return {device_id: self._push_one(device_id) for device_id in device_ids}

    def _push_many(self, ids: list[str]) -> dict[str, PushRecord | str]:
        """`_push_one` for each device, the reads and writes done in one statement each (PostgreSQL)."""
        storage = cast(BulkPushStore, self.storage)
        targets, out, answers = storage.push_targets(ids), {}, []
        for device_id in ids:
            target = targets.get(device_id)
            refusal = _refusal(target)
            if refusal is not None or target is None:
                out[device_id] = refusal or "unknown device"
                self.outcomes[_outcome_label(out[device_id])] += 1
                continue
            response = self.pusher.push(PushRequest(target.push_token or b"", target.push_magic or "", target.topic))
            if isinstance(response, defer.Deferred):
                out[device_id] = self._answer_later(response, device_id)
                self.outcomes["sent"] += 1
            else:
                answers.append((device_id, response))
        now = self.clock.seconds()
        records = [self._judged(response, device_id, now) for device_id, response in answers]
        storage.record_pushes(records)
        for record in records:
            out[record.device_id] = record
            self.outcomes[record.outcome.value] += 1
        return out

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
        self.push_now([device_id])

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
        if isinstance(response, defer.Deferred):
            return self._answer_later(response, device_id)
        return self._record(response, device_id)

    def _answer_later(self, response: defer.Deferred, device_id: str) -> str:
        self.in_flight.add(response)
        response.addCallback(self._record, device_id)
        response.addCallback(self._count)
        response.addErrback(lambda failure: log.error("recording the push to %s: %s", device_id,
                                                      failure.getErrorMessage()))
        response.addBoth(lambda result: self.in_flight.discard(response) or result)
        return SENT

    def _count(self, record: PushRecord) -> PushRecord:
        self.outcomes[record.outcome.value] += 1  # the provider's answer, after the "sent" counted at sending
        return record

    def _record(self, response: ProviderResponse, device_id: str) -> PushRecord:
        judged = self._judged(response, device_id, self.clock.seconds())
        return self.storage.record_push(device_id, judged.outcome, now=judged.pushed_at, reason=judged.reason,
                                        token_invalid=judged.token_invalid)

    @staticmethod
    def _judged(response: ProviderResponse, device_id: str, now: float) -> PushRecord:
        if response.accepted:
            outcome = PushOutcome.ACCEPTED
        else:
            # 5xx after the client's retries, or no answer at all: the provider failed, the push was not refused.
            failed = response.status == 0 or response.status >= 500
            outcome = PushOutcome.FAILED if failed else PushOutcome.REJECTED
            log.warning("push to %s refused: %s %s", device_id, response.status, response.reason)
        return PushRecord(device_id, now, outcome, response.reason, response.token_invalid)


def _refusal(target: PushTarget | None) -> str | None:
    """Why no push goes to this device (as `_try_push` says it), or None to push it."""
    if target is None:
        return "unknown device"
    if not target.pushable:
        return f"not pushable: device is {target.state.value} without a push token"
    last = target.last
    if last is not None and last.token_invalid:
        return f"push token invalid ({last.reason}); waiting for a new TokenUpdate"
    return None


def _outcome_label(outcome: PushRecord | str) -> str:
    if isinstance(outcome, PushRecord):
        return outcome.outcome.value
    for prefix, label in (("unknown device", "unknown_device"), ("not pushable", "not_pushable"),
                          ("push token invalid", "token_invalid"), (SENT, "sent"), (RELAYED, "relayed")):
        if outcome.startswith(prefix):
            return label
    return "not_sent"
