"""A listening port as a Twisted service: opened by startService, closed by stopService.

Twisted's StreamServerEndpointService keeps the port behind a private attribute; the server needs the port
itself (a port 0 becomes the real one in the URLs devices are told), so this small twin exposes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure

Listen = Callable[[], "defer.Deferred[IListeningPort]"]


class PortService(Service):
    """One port; `opened()` fires with it once it listens, or fails with why it could not."""

    def __init__(self, name: str, listen: Listen, *, on_open: Callable[[IListeningPort], Any] | None = None) -> None:
        self.name = name
        self._listen, self._on_open = listen, on_open
        self.port: IListeningPort | None = None
        self.failure: Failure | None = None
        self._settled: defer.Deferred[None] = defer.Deferred()  # fires (with None) once the listen settles

    def startService(self) -> None:
        super().startService()
        attempt = defer.maybeDeferred(self._listen)
        attempt.addCallbacks(self._opened, self._failed).addCallback(self._settled.callback)

    def _opened(self, port: IListeningPort) -> None:
        self.port = port
        if self._on_open is not None:
            self._on_open(port)

    def _failed(self, failure: Failure) -> None:
        self.failure = failure

    def opened(self) -> defer.Deferred[IListeningPort]:
        waiter: defer.Deferred[IListeningPort] = defer.Deferred()

        def settled(result: None) -> None:
            if self.failure is not None:
                waiter.errback(self.failure)
            else:
                waiter.callback(self.port)

        self._settled.addCallback(settled)
        return waiter

    def stopService(self) -> defer.Deferred[None]:
        if not self.running:
            return defer.succeed(None)  # never started: there is nothing to wait for
        super().stopService()
        closed: defer.Deferred[None] = defer.Deferred()

        def close(result: None) -> None:
            port, self.port = self.port, None
            if port is None:
                closed.callback(None)
            else:
                defer.maybeDeferred(port.stopListening).chainDeferred(closed)

        self._settled.addCallback(close)
        return closed
