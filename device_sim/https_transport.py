"""Real HTTPS from simulated devices: TLS checked against each device's own trust store, like iOS.

A new TLS connection per request by default (as iOS opens one per session), keep-alive on request. A lean
HTTP/1.1 client (one PUT, a Content-Length or chunked answer) instead of twisted.web's Agent, and TLS session
resumption per server and trust store: Agent's per-request machinery cost more than the device itself.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL
from twisted.internet import defer, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from .effects import SendRequest
from .transport import Reply, TransportError

MAX_RESPONSE = 16 * 1024 * 1024  # an MDM command (a profile with certificates) is far smaller
IDLE_REUSE = 20.0  # seconds a kept-alive connection may sit idle and still be reused (twisted.web closes at 30)


@implementer(IOpenSSLClientConnectionCreator)
class _ResumingCreator:
    """Twisted's verifying client TLS options, plus the last session offered for resumption (as iOS does)."""

    def __init__(self, hostname: str, trust: Any) -> None:
        self._inner = ssl.optionsForClientTLS(hostname, trustRoot=trust)
        self.session: SSL.Session | None = None

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = self._inner.clientConnectionForTLS(tls_protocol)
        if self.session is not None:
            connection.set_session(self.session)
        return connection


class _HTTPClient(Protocol):
    """HTTP/1.1 over one connection: one request at a time, the answer framed by Content-Length or chunks."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiting: defer.Deferred[Reply] | None = None
        self.closed = False
        self.keep = False  # the server did not ask to close after this answer
        self.answered = False  # any response byte seen: a failure after it is not a TLS trust failure
        self.reused = False  # taken from the keep-alive pool
        self.idle_since = 0.0

    def connectionMade(self) -> None:
        connected = self.factory.connected
        if connected.called:  # the request timed out while connecting: nobody waits for this connection
            self.transport.abortConnection()
        else:
            connected.callback(self)

    def request(self, head: bytes, body: bytes) -> defer.Deferred[Reply]:
        self.buffer.clear()
        self.answered = False
        self.waiting = defer.Deferred(canceller=self._cancel)
        self.transport.write(head + body)
        return self.waiting

    def _cancel(self, waiting: defer.Deferred) -> None:
        # A timeout: forget the request (the Deferred fails with CancelledError) and drop the connection.
        self.waiting = None
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.answered = True
        self.buffer += data
        if len(self.buffer) > MAX_RESPONSE:
            self._fail(TransportError(f"response larger than {MAX_RESPONSE} bytes"))
            self.transport.abortConnection()
            return
        try:
            reply = self._parse()
        except (IndexError, ValueError):
            self._fail(TransportError(f"malformed HTTP response {bytes(self.buffer[:80])!r}"))
            self.transport.abortConnection()
            return
        if reply is not None and self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.callback(reply)

    def _parse(self) -> Reply | None:
        """The complete reply once it is all here; IndexError or ValueError when it is not HTTP."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        rest = self.buffer[end + 4:]
        self.keep = headers.get("connection", "").lower() != "close"
        if "content-length" in headers:
            length = int(headers["content-length"])
            return Reply(status, bytes(rest[:length])) if len(rest) >= length else None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = _dechunk(rest)
            return None if body is None else Reply(status, body)
        self.keep = False
        return Reply(status, bytes(rest)) if self.closed else None  # read until the server closes

    def connectionLost(self, reason: Failure = None) -> None:
        self.closed = True
        if self.waiting is None:
            return
        if self.buffer:
            try:
                reply = self._parse()
            except (IndexError, ValueError):
                reply = None
            if reply is not None:
                waiting, self.waiting = self.waiting, None
                waiting.callback(reply)
                return
        untrusted = not self.answered and reason is not None and reason.check(SSL.Error) is not None
        message = reason.getErrorMessage() if reason is not None else "connection lost"
        self._fail(TransportError(f"no response: {message}", untrusted=untrusted))

    def _fail(self, error: TransportError) -> None:
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.errback(Failure(error))


def _dechunk(data: bytes | bytearray) -> bytes | None:
    """The body of a complete chunked message, or None while more is to come."""
    out, position = bytearray(), 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(data[position:line_end]).split(b";")[0], 16)
        start = line_end + 2
        if size == 0:
            return bytes(out)
        if len(data) < start + size + 2:
            return None
        out += data[start:start + size]
        position = start + size + 2


class _ConnectFactory(ClientFactory):
    """One connection attempt: `connected` fires with the protocol once TCP is up (TLS follows lazily)."""

    def __init__(self) -> None:
        self.connected: defer.Deferred[_HTTPClient] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> _HTTPClient:
        client = _HTTPClient()
        client.factory = self
        return client

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.connected.called:
            self.connected.errback(reason)


class HTTPSTransport:
    """One TLS client context per distinct trust store and server; a fleet trusting one CA shares it."""

    def __init__(self, reactor: Any, *, keep_alive: bool = False, timeout: float = 30.0,
                 resume_sessions: bool = True) -> None:
        self.reactor, self.keep_alive, self.timeout = reactor, keep_alive, timeout
        self.resume_sessions = resume_sessions
        self._creators: dict[tuple[Any, ...], _ResumingCreator] = {}
        self._idle: dict[tuple[Any, ...], list[_HTTPClient]] = {}
        self._addresses: dict[tuple[str, int], tuple[str, int]] = {}
        self._trust_keys: dict[tuple[x509.Certificate, ...], tuple[bytes, ...]] = {}

    def send(self, request: SendRequest, roots: tuple[x509.Certificate, ...]) -> defer.Deferred[Reply]:
        parts = urlsplit(request.url)
        if parts.scheme != "https":
            return defer.fail(TransportError(f"iOS only talks to MDM over https, not {request.url}"))
        if not roots:
            return defer.fail(TransportError("the device trusts no root certificate", untrusted=True))
        host, port = parts.hostname or "", parts.port or 443
        key = (host, port, self._trust_key(roots))
        head = _request_head(request, parts, keep_alive=self.keep_alive)
        pooled = self._pooled(key)
        d = defer.succeed(pooled) if pooled is not None else self._connect(key, roots)
        d.addCallback(self._exchange, key, roots, head, request.body)
        return d.addTimeout(self.timeout, self.reactor).addErrback(self._failed)

    def _trust_key(self, roots: tuple[x509.Certificate, ...]) -> tuple[bytes, ...]:
        # Certificates hash by their DER, so equal trust stores share an entry: no SHA-256 per request.
        key = self._trust_keys.get(roots)
        if key is None:
            key = self._trust_keys[roots] = tuple(sorted(r.fingerprint(hashes.SHA256()) for r in roots))
        return key

    def close(self) -> None:
        """Close the connections kept alive (tests and clean shutdowns)."""
        for clients in self._idle.values():
            for client in clients:
                client.transport.loseConnection()
        self._idle.clear()

    def _pooled(self, key: tuple[Any, ...]) -> _HTTPClient | None:
        """A kept-alive connection idle for less than IDLE_REUSE (servers close theirs after ~30 s)."""
        idle, now = self._idle.get(key), self.reactor.seconds()
        while idle:
            client = idle.pop()
            if not client.closed and now - client.idle_since < IDLE_REUSE:
                client.reused = True
                return client
            client.transport.loseConnection()
        return None

    def _connect(self, key: tuple[Any, ...], roots: tuple[x509.Certificate, ...]) -> defer.Deferred:
        host, port = key[0], key[1]
        creator = self._creators.get(key)
        if creator is None:
            pem = [ssl.Certificate.loadPEM(r.public_bytes(serialization.Encoding.PEM)) for r in roots]
            creator = self._creators[key] = _ResumingCreator(host, ssl.trustRootFromCertificates(pem))
        address, address_port = self._resolve(host, port)
        factory = _ConnectFactory()
        # connectTCP with a TLS wrapper, not endpoints: connectProtocol builds a factory class per call.
        self.reactor.connectTCP(address, address_port, TLSMemoryBIOFactory(creator, True, factory),
                                timeout=self.timeout)
        return factory.connected

    def _resolve(self, host: str, port: int) -> tuple[str, int]:
        # Resolved once per server (blocking, but once): Twisted's resolver would use a thread per connection.
        if (host, port) not in self._addresses:
            try:
                ipaddress.ip_address(host)
                self._addresses[(host, port)] = (host, port)
            except ValueError:
                try:
                    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    raise TransportError(f"DNS: cannot resolve {host}: {exc}") from None
                self._addresses[(host, port)] = info[0][4][:2]
        return self._addresses[(host, port)]

    def _exchange(self, client: _HTTPClient, key: tuple[Any, ...], roots: tuple[x509.Certificate, ...],
                  head: bytes, body: bytes) -> defer.Deferred[Reply]:
        def done(reply: Reply) -> Reply:
            if self.resume_sessions:
                session = client.transport.getHandle().get_session()
                if session is not None:
                    self._creators[key].session = session
            if self.keep_alive and client.keep and not client.closed:
                client.idle_since = self.reactor.seconds()
                self._idle.setdefault(key, []).append(client)
            else:
                client.transport.loseConnection()
            return reply

        def failed(failure: Failure) -> Any:
            client.transport.abortConnection()
            if client.reused and not client.answered and failure.check(TransportError):
                # The server closed a kept-alive connection as we reused it: once more on a new one (PUT is
                # idempotent; HTTP clients do the same).
                return self._connect(key, roots).addCallback(self._exchange, key, roots, head, body)
            return failure

        return client.request(head, body).addCallbacks(done, failed)

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(TransportError):
            return failure
        if failure.check(defer.TimeoutError, defer.CancelledError):
            raise TransportError(f"timed out after {self.timeout:g}s")
        error = failure.value
        untrusted = isinstance(error, SSL.Error)
        raise TransportError(f"{type(error).__name__}: {error}", untrusted=untrusted)


def _request_head(request: SendRequest, parts: Any, *, keep_alive: bool) -> bytes:
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return (f"PUT {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {request.content_type}\r\n"
            f"Mdm-Signature: {request.signature}\r\nContent-Length: {len(request.body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode("latin-1")
