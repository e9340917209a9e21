"""Limits on slow and greedy HTTP clients (slowloris): time for a request's head and body, connections per address.

The idle timeout alone is reset by every byte, so a client sending one byte every few seconds held its
connection forever; a request's head and body now each have a deadline from their first byte. Both HTTP
edges use these: the lean device channel and `GuardedChannel`, twisted.web's channel for everything else.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What a client may take; the defaults leave a real device (a whole request in one write) far inside."""

    header_timeout: float = 10.0  # from a request's first byte to the end of its head
    body_timeout: float = 30.0  # from the end of the head to the end of the body: 1 MiB at 35 KB/s
    per_client: int = 512  # open connections per client address; 0: no cap. Loopback is never capped.


class ClientConnections:
    """Open connections counted by client address, refused over the cap.

    Loopback is exempt: it is this machine's own fleet or load run (a push to 10,000 devices opens 10,000
    connections at once) or the TLS proxy in front of a `tcp:` port, whose clients are many.
    """

    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self.refused = 0
        self._open: dict[str, int] = {}

    def admit(self, addr: Any) -> str | None:
        """The address to `release` later, "" when uncounted, or None when over the cap (refuse it)."""
        host = getattr(addr, "host", None)
        if not self.per_client or not isinstance(host, str) or _loopback(host):
            return ""
        count = self._open.get(host, 0)
        if count >= self.per_client:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("refused a connection from %s: %d open (cap %d; %d refused so far)",
                            host, count, self.per_client, self.refused)
            return None
        self._open[host] = count + 1
        return host

    def release(self, host: str | None) -> None:
        if host:
            left = self._open.get(host, 1) - 1
            if left > 0:
                self._open[host] = left
            else:
                self._open.pop(host, None)

    def open(self, host: str) -> int:
        return self._open.get(host, 0)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Refused(Protocol):
    """A connection over its address's cap: dropped at once, so it holds no descriptor (no TLS handshake)."""

    def connectionMade(self) -> None:
        transport: Any = self.transport  # a TCP or TLS transport: both abort
        transport.abortConnection()


class GuardedChannel(HTTPChannel):
    """twisted.web's channel with a deadline per request head and body, on the Site's clock."""

    limits = ClientLimits()
    connections: ClientConnections | None = None
    counted: str | None = None  # the address admitted under the cap, released when the connection goes
    _deadline: IDelayedCall | None = None

    def dataReceived(self, data: bytes) -> None:
        if data and self._deadline is None and not self._handlingRequest:
            self._arm(self.limits.header_timeout, "head")  # the first byte of a request
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._disarm()
        self._arm(self.limits.body_timeout, "body")  # cancelled at once when there is none
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._disarm()  # the request is whole: the time to answer it is the server's, not the client's
        super().allContentReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self.connections is not None:
            self.connections.release(self.counted)
            self.connections = None
        super().connectionLost(reason)

    def _arm(self, seconds: float, part: str) -> None:
        call_later: Any = self.callLater  # the Site's clock (TimeoutMixin's attribute, typed without arguments)
        self._deadline = call_later(seconds, self._too_slow, part, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self, part: str, seconds: float) -> None:
        self._deadline = None
        log.info("closing a connection from %s: request %s not received within %g s",
                 _peer(self.transport), part, seconds)
        self.timeoutConnection()  # close, then abort if the peer does not read (abortTimeout)


def _peer(transport: Any) -> str:
    peer = getattr(transport, "getPeer", lambda: None)()
    return str(getattr(peer, "host", "?"))
