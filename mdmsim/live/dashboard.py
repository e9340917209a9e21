"""The live load dashboard: a page, our chart script, and server-sent events from the run's own status.

The publisher reads the latest status twice a second at most, whatever the number of open pages, and writes
one event to every stream: the run itself never waits for the dashboard.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import NOT_DONE_YET, Request

from mdm_protocol.clocks import Clock

from .feed import DashboardFeed, Status, server_sent_event
from .web import LivePages, SecretRoot, listen, new_token, render, secure

PUBLISH_EVERY = 0.5  # seconds: an update reaches the page within this (plus the network), reads stay ≤ 2/s
CLOSE_TIMEOUT = 2.0  # seconds the last event may take to leave before the dashboard stops anyway


class Publisher:
    """Every PUBLISH_EVERY seconds on `clock`: one read of the status, one event to every open stream."""

    def __init__(self, clock: Clock, read: Callable[[], Status | None], feed: DashboardFeed, *,
                 every: float = PUBLISH_EVERY) -> None:
        self.clock, self.read, self.feed, self.every = clock, read, feed, every
        self.streams: set[Request] = set()
        self.last: bytes | None = None  # the latest event, for a page that opens between two
        self.finished = False
        self._loop = task.LoopingCall(self.publish)
        # Twisted names its zope interface; our Clock protocol is the structural view of the same object.
        self._loop.clock = cast(IReactorTime, clock)

    def start(self) -> None:
        self._loop.start(self.every, now=True)

    def open(self, request: Request) -> int:
        """An EventSource connects: headers now, the latest event at once, then every publication."""
        secure(request, b"text/event-stream; charset=utf-8")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(b"retry: 1000\n\n")
        if self.last is not None:
            request.write(self.last)
        if self.finished:
            request.finish()
            return NOT_DONE_YET
        self.streams.add(request)
        request.notifyFinish().addBoth(lambda _: self.streams.discard(request))
        return NOT_DONE_YET

    def publish(self, finished: str | None = None) -> None:
        status = self.read()
        if status is None:  # the run has not started yet
            return
        self.last = server_sent_event(self.feed.event(status, self.clock.seconds(), finished=finished))
        for request in list(self.streams):
            request.write(self.last)

    def finish(self, note: str) -> defer.Deferred[None]:
        """The run ended: a last event saying so (pages stop reconnecting), then every stream closes. Fires
        once the connections have sent it all (a reactor stopped at once would drop the last event)."""
        if self.finished:
            return defer.succeed(None)
        if self._loop.running:
            self._loop.stop()
        self.publish(finished=note)
        self.finished = True
        transports: list[Any] = [getattr(getattr(request, "channel", None), "transport", None)
                                 for request in self.streams]
        transports = [transport for transport in transports if transport is not None]
        for request in list(self.streams):
            request.finish()
        self.streams.clear()
        for transport in transports:
            transport.loseConnection()  # after what is buffered has been written
        return self._closed(transports, self.clock.seconds() + CLOSE_TIMEOUT)

    def _closed(self, transports: list[Any], deadline: float) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()

        def check() -> None:
            if not any(getattr(t, "connected", False) for t in transports) or self.clock.seconds() >= deadline:
                done.callback(None)
            else:
                self.clock.callLater(0.05, check)

        check()
        return done


def dashboard_pages(title: str, publisher: Publisher) -> LivePages:
    pages = LivePages(title, new_token())
    pages.route(b"GET", r"/", lambda request: render(request, "dashboard.html", title=title, base=pages.base))
    pages.route(b"GET", r"/events", lambda request: cast(bytes, publisher.open(request)))
    return pages


class LatestStatus:
    """The newest status, handed from the run's thread to the reactor's: a reference swap, no lock needed."""

    def __init__(self) -> None:
        self.value: Status | None = None

    def __call__(self, status: Status) -> None:
        self.value = status


def serve_dashboard(reactor: Any, title: str, read: Callable[[], Status | None], port: int = 0
                    ) -> tuple[Publisher, str]:
    """Start publishing and listening (127.0.0.1 only) on `reactor`; the publisher and the page's URL."""
    publisher = Publisher(reactor, read, DashboardFeed(title))
    _, url = listen(reactor, SecretRoot(dashboard_pages(title, publisher)), port)
    publisher.start()
    return publisher, url


class ThreadedDashboard:
    """For a run that blocks its own thread (`mdmsim load`): the reactor runs the dashboard in another thread."""

    def __init__(self, reactor: Any, title: str, port: int = 0) -> None:
        self.reactor, self.latest = reactor, LatestStatus()
        self.publisher, self.url = serve_dashboard(reactor, title, lambda: self.latest.value, port)
        self._thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                        name="dashboard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, note: str) -> None:
        """The last event (`note`: how the run ended), the streams closed, the reactor stopped and joined."""
        if not self._thread.is_alive():
            return
        self.reactor.callFromThread(lambda: self.publisher.finish(note).addBoth(lambda _: self.reactor.stop()))
        self._thread.join(timeout=10)
