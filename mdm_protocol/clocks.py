"""Typing protocols for time and the reactor, so the pure layers can name what they use without Twisted.

Structural (typing.Protocol): Twisted's reactor, `task.Clock`, device_sim's `HeapClock` and the scaled clock fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol


class DelayedCall(Protocol):
    """What `callLater` hands back (Twisted's IDelayedCall, as far as our callers use it)."""

    def cancel(self) -> None: ...

    def active(self) -> bool: ...

    def getTime(self) -> float: ...


class Clock(Protocol):
    """Time passed in (Twisted's IReactorTime, structurally): read it, schedule on it."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], /, *args: Any, **kw: Any) -> DelayedCall: ...

    def getDelayedCalls(self) -> Sequence[DelayedCall]: ...


class TCPClock(Clock, Protocol):
    """A clock that also opens TCP connections (IReactorTCP.connectTCP): the client edges' reactor."""

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30.0,
                   bindAddress: tuple[str, int] | None = None) -> Any: ...


class Reactor(TCPClock, Protocol):
    """The running reactor as a process's edge drives it (IReactorCore): start, stop, hook into shutdown."""

    @property
    def running(self) -> bool: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...

    def callWhenRunning(self, callable: Callable[..., Any], /, *args: Any, **kw: Any) -> Any: ...

    def addSystemEventTrigger(self, phase: str, eventType: str, callable: Callable[..., Any], /, *args: Any,
                              **kw: Any) -> Any: ...
