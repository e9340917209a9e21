"""The listening HTTP protocol: device check-ins on a lean path, every other request through twisted.web.

A device PUT to /mdm/checkin or /mdm/connect is framed by `mdm_wire.http1_server` and answered by the same
`DeviceEndpoint.serve` the resource tree uses, with one write per response. The first request that is not such
a PUT (enrollment, admin API, metrics, a chunked or oversized body, a malformed head) hands the connection,
with every byte read so far, to a twisted.web channel for the rest of its life. twisted.web's request objects,
header tables and resource traversal cost about 160 µs a request, a third of a signed check-in's server time.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from mdm_protocol.clocks import Clock, DelayedCall
from mdm_wire.http1_server import DateHeader, RequestHead, RequestReader, Route, Waiting, encode_response

from ..client_cert import Peer
from .client_limits import Refused
from .device import DeviceEndpoint, peer_certificate
from .site import MDMSite

log = logging.getLogger(__name__)
ABORT_AFTER = 15.0  # twisted.web's abortTimeout: a closing connection whose peer stops reading is then aborted


class DeviceChannel(Protocol):
    """One connection: device requests served in order (pipelined ones too) until it closes or goes to the web."""

    def __init__(self, factory: DeviceChannelFactory, addr: Any) -> None:
        self.factory, self.addr = factory, addr
        self._reader = RequestReader(factory.body_limit)
        self._web: Any = None
        self._closing = False
        self._last_read = 0.0
        self._waiting = Waiting.NOTHING  # part of a request read: its head or body has a deadline
        self._since = 0.0  # when that head or body began
        self._idle_call: DelayedCall | None = None
        self._abort_call: DelayedCall | None = None
        self.counted: str | None = None  # the address admitted under the connection cap
        self._peer: Peer | None = None  # the TLS client certificate is the connection's: read once

    def connectionMade(self) -> None:
        clock = self.factory.clock
        self._last_read = clock.seconds()
        self._idle_call = clock.callLater(self.factory.timeout, self._idle_check)

    def dataReceived(self, data: bytes) -> None:
        if self._web is not None:
            self._web.dataReceived(data)
            return
        if self._closing:
            return  # answered with Connection: close, or timed out: nothing more is read
        # Read time only: the idle timer checks it when it fires instead of being reset on every read.
        self._last_read = now = self.factory.clock.seconds()
        request = self._reader.feed(data)
        served = False
        while request is not None and not self._closing:
            if request.head.route is Route.WEB:
                self._hand_to_web()
                return
            self._serve(request.head, request.body)
            served = True
            request = self._reader.feed(b"")  # the next of several pipelined
        waiting = self._reader.waiting()
        if waiting is not self._waiting or (served and waiting is not Waiting.NOTHING):
            self._started(waiting, now)  # rare: a request split across reads

    def _serve(self, head: RequestHead, body: bytes) -> None:
        factory = self.factory
        close = not head.keep_alive
        try:
            response = factory.endpoint.serve(head.method, head.path, head.header(b"content-type"),
                                              head.header(b"mdm-signature"), body, self._peer_of(head))
            data = encode_response(response.status, response.body, response.content_type, factory.date.line(),
                                  close=close, retry_after=response.retry_after)
        except Exception:
            # Never a crash, never a half-written answer: a 500, as twisted.web gives, and a fresh connection.
            log.exception("%s %s failed", head.method.decode("latin-1"), head.path.decode("latin-1"))
            close = True
            data = encode_response(500, b"internal error\n", "text/plain; charset=utf-8", factory.date.line(),
                                  close=True)
        self.transport.write(data)
        if close:
            self._close()

    def _peer_of(self, head: RequestHead) -> Peer:
        peer = self._peer
        if peer is None:
            host = getattr(self.addr, "host", None)
            peer = self._peer = Peer(host, peer_certificate(self.transport))
        key = self.factory.endpoint.client_certs.header_key
        if key is not None:
            header = head.headers.get(key)
            if header is not None:
                return Peer(peer.host, peer.certificate, header)
        return peer

    def _close(self) -> None:
        # loseConnection waits for the answer to drain; a peer that never reads would keep the descriptor.
        self._closing = True
        self._cancel_idle()
        self.transport.loseConnection()
        self._abort_call = self.factory.clock.callLater(ABORT_AFTER, self.transport.abortConnection)

    def _hand_to_web(self) -> None:
        self._cancel_idle()
        self._web = self.factory.site.build_channel(self.addr)  # counted under the cap already
        self._web.makeConnection(self.transport)
        pending = self._reader.unread()
        if pending:
            self._web.dataReceived(pending)

    def _started(self, waiting: Waiting, now: float) -> None:
        """A head or body began (or the reader emptied): its deadline may come before the idle timer's."""
        self._waiting, self._since = waiting, now
        if self._closing or waiting is Waiting.NOTHING:
            return
        deadline = self._deadline()
        if self._idle_call is None or self._idle_call.getTime() > deadline:
            self._cancel_idle()
            self._idle_call = self.factory.clock.callLater(max(0.0, deadline - now), self._idle_check)

    def _deadline(self) -> float:
        idle = self._last_read + self.factory.timeout
        if self._waiting is Waiting.HEAD:
            return min(idle, self._since + self.factory.limits.header_timeout)
        if self._waiting is Waiting.BODY:
            return min(idle, self._since + self.factory.limits.body_timeout)
        return idle

    def _idle_check(self) -> None:
        self._idle_call = None
        if self._closing or self._web is not None:
            return
        now, deadline = self.factory.clock.seconds(), self._deadline()
        if now >= deadline:
            if self._waiting is not Waiting.NOTHING and deadline < self._last_read + self.factory.timeout:
                log.info("closing a connection from %s: request %s not received in time",
                         getattr(self.addr, "host", "?"), self._waiting.value)
            self._close()  # a slow or silent client, as twisted.web's timeout does
        else:
            self._idle_call = self.factory.clock.callLater(deadline - now, self._idle_check)

    def _cancel_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._cancel_idle()
        self.factory.site.connections.release(self.counted)
        self.counted = None
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self._web is not None:
            self._web.connectionLost(reason)


class DeviceChannelFactory(Factory):
    """Builds `DeviceChannel`s for a port; `site` serves whatever is not a device check-in."""

    noisy = False  # no "Starting factory" log lines per port

    def __init__(self, site: MDMSite, endpoint: DeviceEndpoint, *, clock: Clock, body_limit: int) -> None:
        self.site, self.endpoint, self.clock, self.body_limit = site, endpoint, clock, body_limit
        self.timeout = site.timeOut or 30.0
        self.limits = site.limits  # the same deadlines and cap as the twisted.web channel
        self.date = DateHeader(clock.seconds)

    def buildProtocol(self, addr: Any) -> Protocol:
        counted = self.site.connections.admit(addr)
        if counted is None:
            return Refused()
        channel = DeviceChannel(self, addr)
        channel.counted = counted
        return channel
