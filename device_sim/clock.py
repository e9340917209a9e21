"""A heap-ordered virtual clock implementing Twisted's IReactorTime, for fleets of thousands of timers.

twisted.internet.task.Clock re-sorts every pending call on each callLater; this keeps a heap instead.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer


@implementer(IDelayedCall)
class HeapDelayedCall:
    __slots__ = ("_clock", "time", "func", "args", "kwargs", "cancelled", "called", "_generation")

    def __init__(self, clock: HeapClock, time: float, func: Callable, args: tuple, kwargs: dict) -> None:
        self._clock, self.time, self.func, self.args, self.kwargs = clock, time, func, args, kwargs
        self.cancelled = self.called = False
        self._generation = 0

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        self._check_active()
        self.cancelled = True
        self._clock._live -= 1

    def reset(self, secondsFromNow: float) -> None:
        self._check_active()
        self._reschedule(self._clock.now + secondsFromNow)

    def delay(self, secondsLater: float) -> None:
        self._check_active()
        self._reschedule(self.time + secondsLater)

    def _reschedule(self, time: float) -> None:
        # The old heap entry goes stale (its generation no longer matches) and is skipped when popped.
        self._generation += 1
        self.time = time
        self._clock._push(self)

    def _check_active(self) -> None:
        if self.cancelled:
            raise AlreadyCancelled
        if self.called:
            raise AlreadyCalled


@implementer(IReactorTime)
class HeapClock:
    """Virtual time: nothing happens until `advance()` or `run_until()` moves it, in (time, order) order."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, int, HeapDelayedCall]] = []
        self._seq = itertools.count()
        self._live = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> HeapDelayedCall:
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        call = HeapDelayedCall(self, self.now + delay, callable, args, kw)
        self._live += 1
        self._push(call)
        return call

    def _push(self, call: HeapDelayedCall) -> None:
        heapq.heappush(self._heap, (call.time, next(self._seq), call._generation, call))

    def getDelayedCalls(self) -> list[HeapDelayedCall]:
        return [c for _, _, gen, c in self._heap if c.active() and gen == c._generation]

    def pending(self) -> int:
        """Number of active scheduled calls (cheap; used for progress and end-of-run checks)."""
        return self._live

    def next_time(self) -> float | None:
        self._discard_stale()
        return self._heap[0][0] if self._heap else None

    def advance(self, amount: float) -> int:
        return self.run_until(self.now + amount)

    def run_until(self, when: float) -> int:
        """Fire every call due at or before `when`, in order; returns how many fired."""
        fired = 0
        heap = self._heap
        while True:
            self._discard_stale()
            if not heap or heap[0][0] > when:
                break
            time, _, _, call = heapq.heappop(heap)
            self.now = max(self.now, time)
            call.called = True
            self._live -= 1
            call.func(*call.args, **call.kwargs)
            fired += 1
        self.now = max(self.now, when)
        return fired

    def _discard_stale(self) -> None:
        heap = self._heap
        while heap and (not heap[0][3].active() or heap[0][2] != heap[0][3]._generation):
            heapq.heappop(heap)
