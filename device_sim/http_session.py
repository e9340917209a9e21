"""An HTTP session that keeps its connection between requests: one SCEP transaction (GetCACert, GetCACaps,
PKIOperation) over one TLS connection, as a URL session reuses its connection, https unverified.

One request at a time; a connection the server closed is reopened for the next request (and for a request
that found a kept connection closed under it before any answer byte, once).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from mdm_protocol.clocks import TCPClock
from mdm_wire.http1 import HTTPError, Response, ResponseReader, TooLarge, encode_request
from mdm_wire.tls_client import LinkFactory

from .enroll_fetch import EnrollmentFetchError, UnverifiedTLS


class _Kept(Protocol):
    """One connection of a session: writes each request, reads its answer, stays open while the server lets it."""

    transport: Any  # the TLSLink (or TCP transport) once connected

    def __init__(self, session: HttpSession, first: _Exchange, max_body: int) -> None:
        self.session, self.max_body = session, max_body
        self.waiting: _Exchange | None = first
        self.reader = ResponseReader(max_body=max_body)
        self.open = True  # until lost or the server said close
        self.answered = False  # an answer byte arrived for the request now waiting

    def connectionMade(self) -> None:
        if self.waiting is None:  # timed out while connecting
            self.transport.abortConnection()
        else:
            self.transport.write(self.waiting.data)

    def send(self, exchange: _Exchange) -> None:
        self.waiting, self.answered = exchange, False
        self.transport.write(exchange.data)

    def dataReceived(self, data: bytes) -> None:
        if self.waiting is None:
            return
        self.answered = True
        try:
            response = self.reader.feed(data)
        except (TooLarge, HTTPError) as exc:
            self._fail(EnrollmentFetchError(f"unreadable answer: {exc.reason}"))
            self.transport.abortConnection()
            return
        if response is not None:
            self._answer(response)

    def _answer(self, response: Response) -> None:
        exchange, self.waiting = self.waiting, None
        if not response.keep_alive:
            self.open = False
            self.transport.loseConnection()
        if exchange is not None and not exchange.done.called:
            exchange.done.callback(response)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.open = False
        if self.waiting is None:
            return
        try:
            response = self.reader.connection_closed()
        except HTTPError:
            response = None
        if response is not None:
            self._answer(response)
            return
        exchange, self.waiting = self.waiting, None
        if exchange is None:
            return
        if exchange.reused and not self.answered and not exchange.done.called:
            self.session._reconnect(exchange)  # the server closed the idle connection as we wrote: once more
            return
        message = reason.getErrorMessage() if reason is not None else "connection lost"
        self._fail(EnrollmentFetchError(f"no answer: {message}"), exchange)

    def _fail(self, error: Exception, exchange: _Exchange | None = None) -> None:
        exchange = exchange or self.waiting
        self.waiting = None
        if exchange is not None and not exchange.done.called:
            exchange.done.errback(error)


class _Exchange:
    __slots__ = ("data", "host", "port", "https", "done", "reused")

    def __init__(self, data: bytes, host: str, port: int, https: bool) -> None:
        self.data, self.host, self.port, self.https = data, host, port, https
        self.done: defer.Deferred[Response] = defer.Deferred()
        self.reused = False


class _PlainFactory(ClientFactory):
    noisy = False

    def __init__(self, app: _Kept, failed: Any) -> None:
        self.app, self.failed = app, failed

    def buildProtocol(self, addr: Any) -> _Kept:
        return self.app

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.failed(reason)


class HttpSession:
    """Requests on one kept connection per (scheme, host, port); `close` ends it."""

    def __init__(self, reactor: TCPClock, *, user_agent: str, timeout: float, max_body: int) -> None:
        self.reactor, self.user_agent, self.timeout, self.max_body = reactor, user_agent, timeout, max_body
        self._connection: _Kept | None = None
        self._target: tuple[str, int, bool] | None = None
        self.connections = 0  # opened so far (tests: one per transaction)

    def request(self, url: str, *, method: str = "GET", body: bytes = b"",
                content_type: str | None = None) -> defer.Deferred[Response]:
        """Fires with the Response whatever its status; fails with EnrollmentFetchError when none came."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            return defer.fail(EnrollmentFetchError(f"a SCEP URL must be http(s)://host/..., not {url!r}"))
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return defer.fail(EnrollmentFetchError(f"the port in {url!r} is not a number from 0 to 65535"))
        fields = [("Host", parts.netloc.rpartition("@")[2]), ("User-Agent", self.user_agent), ("Accept", "*/*"),
                  ("Connection", "keep-alive")]
        if content_type is not None:
            fields.append(("Content-Type", content_type))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        data = encode_request(method.encode("ascii"), target.encode("latin-1"),
                              [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields], body)
        exchange = _Exchange(data, parts.hostname, port, parts.scheme == "https")
        connection = self._connection
        if connection is not None and connection.open and self._target == (exchange.host, port, exchange.https):
            exchange.reused = True
            connection.send(exchange)
        else:
            self._open(exchange)
        clock: Any = self.reactor
        return exchange.done.addTimeout(self.timeout, clock).addErrback(self._timed_out)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.open:
            connection.open = False
            if connection.transport is not None:
                connection.transport.loseConnection()

    def _open(self, exchange: _Exchange) -> None:
        self.close()
        connection = self._connection = _Kept(self, exchange, self.max_body)
        self._target = (exchange.host, exchange.port, exchange.https)
        self.connections += 1

        def failed(reason: Failure) -> None:
            connection.open = False
            if not exchange.done.called:
                exchange.done.errback(EnrollmentFetchError(f"cannot connect: {reason.getErrorMessage()}"))

        if exchange.https:
            tls: Any = UnverifiedTLS(exchange.host)  # the ClientTLS side that verifies nothing (enroll_fetch)
            factory: ClientFactory = LinkFactory(tls, connection, failed)
        else:
            factory = _PlainFactory(connection, failed)
        self.reactor.connectTCP(exchange.host, exchange.port, factory, timeout=self.timeout)

    def _reconnect(self, exchange: _Exchange) -> None:
        exchange.reused = False
        self._open(exchange)

    def _timed_out(self, failure: Failure) -> Failure:
        if failure.check(defer.TimeoutError):
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.open, connection.waiting = False, None
                if connection.transport is not None:
                    connection.transport.abortConnection()
            raise EnrollmentFetchError(f"no answer within {self.timeout:g} s")
        return failure
