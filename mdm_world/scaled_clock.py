"""Real time, sped up: an IReactorTime over a real reactor where `factor` virtual seconds pass per real one.

Scenarios on real sockets use it so hours of sync intervals still take seconds, while the network is real.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from mdm_protocol.clocks import Clock


@implementer(IDelayedCall)
class ScaledDelayedCall:
    def __init__(self, clock: ScaledClock, call: Any) -> None:
        self._clock, self._call = clock, call

    def getTime(self) -> float:
        return self._clock.to_virtual(self._call.getTime())

    def cancel(self) -> None:
        self._call.cancel()

    def delay(self, secondsLater: float) -> None:
        self._call.delay(secondsLater / self._clock.factor)

    def reset(self, secondsFromNow: float) -> None:
        self._call.reset(secondsFromNow / self._clock.factor)

    def active(self) -> bool:
        return self._call.active()


@implementer(IReactorTime)
class ScaledClock:
    def __init__(self, reactor: Clock, factor: float, start: float) -> None:
        if factor <= 0:
            raise ValueError(f"time factor must be positive, not {factor}")
        self.reactor, self.factor, self.start = reactor, factor, start
        self._real_start = reactor.seconds()

    def to_virtual(self, real: float) -> float:
        return self.start + (real - self._real_start) * self.factor

    def seconds(self) -> float:
        return self.to_virtual(self.reactor.seconds())

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> ScaledDelayedCall:
        return ScaledDelayedCall(self, self.reactor.callLater(delay / self.factor, callable, *args, **kw))

    def getDelayedCalls(self) -> Sequence[Any]:
        return self.reactor.getDelayedCalls()
