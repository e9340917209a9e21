"""Wakes each device by push once per sync interval, spread over the interval so a fleet never fires at once.

A device's phase within its interval comes from a hash of its id; due devices are grouped in time buckets
and a single timer on any IReactorTime clock (reactor, task.Clock, HeapClock) fires the next bucket.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from mdm_protocol.clocks import Clock, DelayedCall

log = logging.getLogger(__name__)

DEFAULT_BUCKET = 10.0  # seconds: wake-ups due within one bucket go out together (60 s made
# bursts of ~850 devices a minute at 50,000 devices; 10 s spreads them six times finer for 6 timers a minute)
Wake = Callable[[list[str]], Any]  # push these devices now (Waker.push_now)


def phase(device_id: str) -> float:
    """Where in every interval this device wakes, as a fraction in [0, 1); the same on every run."""
    digest = hashlib.sha256(device_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def next_wake_time(device_id: str, interval: float, after: float) -> float:
    """The first time strictly after `after` that is `phase(device_id)` of the way into an interval.

    Phases are anchored at clock time 0, so a device keeps its slot across restarts and interval changes.
    """
    offset = phase(device_id) * interval
    cycles = math.floor((after - offset) / interval) + 1
    when = cycles * interval + offset
    while when <= after:  # float rounding can land exactly on `after`
        when += interval
    return when


class SpreadWakeScheduler:
    """Due devices live in buckets (`bucket` seconds wide); one timer is armed for the earliest bucket.

    Memory is O(devices); a bucket fires at its end, so no device wakes before its computed time.
    """

    def __init__(self, clock: Clock, wake: Wake, *, bucket: float = DEFAULT_BUCKET) -> None:
        if not bucket > 0:
            raise ValueError(f"bucket must be a positive number of seconds, not {bucket!r}")
        self.clock, self.wake, self.bucket = clock, wake, bucket
        self._intervals: dict[str, float] = {}
        self._slot_of: dict[str, int] = {}  # device -> bucket number
        self._slots: dict[int, set[str]] = {}  # bucket number -> devices due then
        self._heap: list[int] = []  # bucket numbers, each pushed once while its slot exists
        self._call: DelayedCall | None = None
        self._running = False

    # Configuring.

    def set_interval(self, device_id: str, interval: float) -> None:
        """Wake `device_id` every `interval` seconds from now on (a no-op when unchanged)."""
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        if self._intervals.get(device_id) == interval:
            return
        self._unslot(device_id)
        self._intervals[device_id] = interval
        self._slot(device_id, next_wake_time(device_id, interval, self.clock.seconds()))
        self._arm()

    def set_intervals(self, intervals: Iterable[tuple[str, float]]) -> None:
        for device_id, interval in intervals:
            self.set_interval(device_id, interval)

    def remove(self, device_id: str) -> None:
        self._unslot(device_id)
        self._intervals.pop(device_id, None)

    def start(self) -> None:
        self._running = True
        self._arm()

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    # Reading.

    def interval_of(self, device_id: str) -> float | None:
        return self._intervals.get(device_id)

    def next_wake(self, device_id: str) -> float | None:
        """When the device's next push goes out (its bucket's end), or None if it is not scheduled."""
        slot = self._slot_of.get(device_id)
        return None if slot is None else slot * self.bucket

    def devices(self) -> list[str]:
        return list(self._intervals)

    def __len__(self) -> int:
        return len(self._intervals)

    # Internals.

    def _slot(self, device_id: str, when: float, at_least: int | None = None) -> None:
        number = math.ceil(when / self.bucket)
        if at_least is not None and number < at_least:
            number = at_least  # float rounding must never put a fired device back in the bucket firing
        devices = self._slots.get(number)
        if devices is None:
            devices = self._slots[number] = set()
            heapq.heappush(self._heap, number)
        devices.add(device_id)
        self._slot_of[device_id] = number

    def _unslot(self, device_id: str) -> None:
        number = self._slot_of.pop(device_id, None)
        if number is None:
            return
        devices = self._slots[number]
        devices.discard(device_id)
        if not devices:
            del self._slots[number]  # its heap entry goes stale and is skipped when reached

    def _earliest(self) -> int | None:
        heap = self._heap
        while heap and heap[0] not in self._slots:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _arm(self) -> None:
        if not self._running:
            return
        number = self._earliest()
        if number is None:
            return
        when = number * self.bucket
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= when:
                return
            call.cancel()
        self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self.clock.seconds()
        while (number := self._earliest()) is not None and number * self.bucket <= now:
            heapq.heappop(self._heap)
            due = sorted(self._slots.pop(number))
            fired_at = number * self.bucket
            for device_id in due:
                when = next_wake_time(device_id, self._intervals[device_id], fired_at)
                self._slot(device_id, when, number + 1)
            try:
                self.wake(due)
            except Exception:  # a failed push round must not stop every later sync
                log.exception("sync wake-up of %d devices failed", len(due))
        self._arm()
