"""Real HTTPS from simulated devices: TLS checked against each device's own trust store, like iOS.

A connection per session (as iOS), per request, or kept alive; lean HTTP/1.1 (`mdm_wire.http1`) over
`mdm_wire.tls_client`, TLS resumed.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from twisted.internet import defer, ssl
from twisted.internet.error import NotConnectingError
from twisted.python.failure import Failure

from mdm_protocol.clocks import TCPClock
from mdm_wire.http1 import HTTPError, Response, ResponseReader, TooLarge
from mdm_wire.tls_client import IOS_TLS_GROUPS, ClientTLS, LinkFactory, TLSLink, UntrustedServerError, check_groups

from .effects import CHECKIN_TYPE, SendRequest
from .transport import Reply, TransportError

# iOS sends TokenUpdate right after an Authenticate answered 200, and NSURLSession reuses its idle connection
# to the same server for it: that pair shares a connection; every other check-in message has its own.
AUTHENTICATE, TOKEN_UPDATE = "Authenticate", "TokenUpdate"
MAX_RESPONSE = 16 * 1024 * 1024  # an MDM command (a profile with certificates) is far smaller
MAX_CLIENT_TLS = 256  # (server, trust store, groups) whose TLS context and last session are kept
IDLE_REUSE = 20.0  # seconds a kept-alive connection may sit idle and still be reused (twisted.web closes at 30)


class ConnectionModeError(ValueError):
    """A connection mode that is not one of `ConnectionMode`'s values."""


class ConnectionMode(enum.Enum):
    """When a device's TLS connection is closed."""

    PER_REQUEST = "per-request"  # after every answer
    PER_SESSION = "per-session"  # when its session ends (NSURLSession on iOS): one handshake per session
    KEEP_ALIVE = "keep-alive"  # never on purpose: connections are pooled and shared by every device

    @classmethod
    def parse(cls, text: str | ConnectionMode) -> ConnectionMode:
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(mode.value for mode in cls)
            raise ConnectionModeError(f"unknown connection mode {text!r}: expected one of {names}") from None


class _Request:
    """One PUT in flight: the Deferred its sender waits on, its bytes, where it goes and its timer."""

    __slots__ = ("result", "data", "key", "roots", "timer", "client", "connector", "session", "authenticate")

    def __init__(self, data: bytes, key: tuple[Any, ...], roots: tuple[x509.Certificate, ...],
                 session: object | None, *, authenticate: bool = False) -> None:
        self.result: defer.Deferred[Reply] = defer.Deferred()
        self.data, self.key, self.roots, self.session = data, key, roots, session
        self.authenticate = authenticate  # a check-in Authenticate: its connection may carry the TokenUpdate
        self.timer: Any = None
        self.client: _HTTPClient | None = None
        self.connector: Any = None


class _HTTPClient:
    """HTTP/1.1 over one TLS link: one request at a time, the answer framed by Content-Length or chunks."""

    def __init__(self, owner: HTTPSTransport, request: _Request) -> None:
        self.owner = owner
        self.key: tuple[Any, ...] = ()  # (host, port, trust store) it was opened for: set by the transport
        self.transport: TLSLink | None = None  # set by the link once TCP is up
        self.reader = ResponseReader(max_body=MAX_RESPONSE)
        self.waiting: _Request | None = request
        self.closed = False
        self.keep = False  # the server did not ask to close after this answer
        self.answered = False  # any response byte seen: a failure after it is not a TLS trust failure
        self.reused = False  # taken from the keep-alive pool or its device's session
        self.idle_since = 0.0
        self.session: object | None = None  # the device session this connection is parked for
        self.for_token_update = False  # parked after an Authenticate: only its TokenUpdate may take it

    def connectionMade(self) -> None:
        if self.waiting is None:  # the request timed out while connecting: nobody waits for this connection
            self.transport.abortConnection()
        else:
            self.transport.write(self.waiting.data)  # leaves with the TLS client's Finished

    def send(self, request: _Request) -> None:
        self.reader = ResponseReader(max_body=MAX_RESPONSE)  # what the last answer left unread is dropped
        self.answered = False
        self.waiting, request.client = request, self
        self.transport.write(request.data)

    def dataReceived(self, data: bytes) -> None:
        self.answered = True
        try:
            response = self.reader.feed(data)
        except TooLarge as exc:
            self._fail(TransportError(f"response larger than {MAX_RESPONSE} bytes ({exc.reason})"))
            self.transport.abortConnection()
            return
        except HTTPError as exc:
            self._fail(TransportError(f"malformed HTTP response: {exc.reason}"))
            self.transport.abortConnection()
            return
        if response is not None and self.waiting is not None:
            self._reply(response)

    def _reply(self, response: Response) -> None:
        self.keep = response.keep_alive
        request, self.waiting = self.waiting, None
        self.owner._answered(self, request, Reply(response.status, response.body))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        if self.waiting is None:
            self.owner._unpark(self)
            return
        try:
            response = self.reader.connection_closed()  # a body framed by the close
        except HTTPError:
            response = None
        if response is not None:
            self._reply(response)
            return
        untrusted = not self.answered and reason is not None and reason.check(UntrustedServerError) is not None
        message = reason.getErrorMessage() if reason is not None else "connection lost"
        self._fail(TransportError(f"no response: {message}", untrusted=untrusted))

    def _fail(self, error: TransportError) -> None:
        if self.waiting is not None:
            request, self.waiting = self.waiting, None
            self.owner._lost(self, request, error)


_SHARED_TLS: dict[tuple[Any, ...], ClientTLS] = {}


class HTTPSTransport:
    """One TLS client context per distinct trust store and server; a fleet trusting one CA shares it.

    Per session (the default), a device's connection carries the requests of its session and closes when the
    server answers the command channel with nothing (the session is over) or anything but 200; a check-in
    message is a session of its own, except that a TokenUpdate takes the connection of the Authenticate
    answered 200 just before it (as NSURLSession does). The sender names the session's owner (`session`, e.g.
    its runner); without one every request gets its own connection.
    """

    def __init__(self, reactor: TCPClock, *, connections: ConnectionMode | str = ConnectionMode.PER_SESSION,
                 keep_alive: bool = False, timeout: float = 30.0, resume_sessions: bool = True,
                 tls_groups: str | None = IOS_TLS_GROUPS) -> None:
        """`keep_alive=True` is `connections="keep-alive"`. `tls_groups`: the key exchange groups offered
        (OpenSSL names, colon-separated); None leaves OpenSSL's defaults, which lead with the post-quantum
        hybrid only iOS 26 and later offer."""
        self.connections = ConnectionMode.KEEP_ALIVE if keep_alive else ConnectionMode.parse(connections)
        self.reactor, self.timeout = reactor, timeout
        self.resume_sessions, self.tls_groups = resume_sessions, tls_groups
        if tls_groups is not None:
            check_groups(tls_groups)
        # Sessions outlive a transport, as a device's TLS session cache outlives one connection pool: a new
        # transport for the same server resumes instead of opening with a full handshake per device.
        self._tls: dict[tuple[Any, ...], ClientTLS] = _SHARED_TLS if resume_sessions else {}
        self._idle: dict[tuple[Any, ...], list[_HTTPClient]] = {}
        self._parked: dict[object, _HTTPClient] = {}  # device session → its connection between requests
        self._addresses: dict[tuple[str, int], tuple[str, int]] = {}
        self._trust_keys: dict[tuple[x509.Certificate, ...], tuple[bytes, ...]] = {}
        self._targets: dict[tuple[str, str], tuple[str, int, bytes]] = {}  # (url, type) → host, port, head start

    @property
    def keep_alive(self) -> bool:
        return self.connections is ConnectionMode.KEEP_ALIVE

    def send(self, request: SendRequest, roots: tuple[x509.Certificate, ...],
             session: object | None = None) -> defer.Deferred[Reply]:
        try:
            host, port, head = self._target(request.url, request.content_type)
        except TransportError as exc:
            return defer.fail(exc)
        if not roots:
            return defer.fail(TransportError("the device trusts no root certificate", untrusted=True))
        key = (host, port, self._trust_key(roots))
        checkin = request.content_type == CHECKIN_TYPE
        if self.connections is not ConnectionMode.PER_SESSION:
            session = None  # per request, or kept alive for everyone
        owner = session  # whose parked connection this request may take
        if checkin:
            # A one-message check-in session, but for the Authenticate → TokenUpdate pair.
            owner = session if request.message == TOKEN_UPDATE else None
            session = session if request.message == AUTHENTICATE else None
        keep = self.keep_alive or session is not None
        data = b"%sMdm-Signature: %s\r\nContent-Length: %d\r\n%s%s" % (
            head, request.signature.encode("latin-1"), len(request.body),
            b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n", request.body)
        exchange = _Request(data, key, roots, session, authenticate=checkin and session is not None)
        exchange.timer = self.reactor.callLater(self.timeout, self._timed_out, exchange)
        if self.keep_alive:
            reusable = self._pooled(key)
        else:
            reusable = self._resumed(owner, key, token_update=checkin and owner is not None)
        if reusable is not None:
            reusable.send(exchange)
        else:
            self._connect(exchange)
        return exchange.result

    def _target(self, url: str, content_type: str) -> tuple[str, int, bytes]:
        # Every device of a fleet sends to the same few URLs: split each once.
        target = self._targets.get((url, content_type))
        if target is None:
            parts = urlsplit(url)
            if parts.scheme != "https":
                raise TransportError(f"iOS only talks to MDM over https, not {url}")
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = f"PUT {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
            target = (parts.hostname or "", parts.port or 443, head.encode("latin-1"))
            self._targets[(url, content_type)] = target
        return target

    def _trust_key(self, roots: tuple[x509.Certificate, ...]) -> tuple[bytes, ...]:
        # Certificates hash by their DER, so equal trust stores share an entry: no SHA-256 per request.
        key = self._trust_keys.get(roots)
        if key is None:
            key = self._trust_keys[roots] = tuple(sorted(r.fingerprint(hashes.SHA256()) for r in roots))
        return key

    def close(self) -> None:
        """Close the connections kept alive or parked between a session's requests (tests, shutdowns)."""
        parked, self._parked = list(self._parked.values()), {}
        for client in [*parked, *(client for clients in self._idle.values() for client in clients)]:
            client.transport.loseConnection()
        self._idle.clear()

    @property
    def parked(self) -> int:
        """Device sessions holding a connection between two of their requests."""
        return len(self._parked)

    def _resumed(self, session: object | None, key: tuple[Any, ...], *, token_update: bool = False
                 ) -> _HTTPClient | None:
        """The connection this device session left open after its last answer, if it is still usable: a
        command session's for its next request, an Authenticate's for the TokenUpdate only."""
        client = self._parked.get(session) if session is not None else None
        if client is None or (token_update and not client.for_token_update):
            return None  # a check-in never takes a command session's connection: that session goes on
        del self._parked[session]
        client.session = None
        if client.for_token_update != token_update:  # the Authenticate's connection was for its TokenUpdate
            client.for_token_update = False
            client.transport.loseConnection()
            return None
        client.for_token_update = False
        # Same server, whatever the device trusts now: a profile installed mid-session may add roots, but this
        # connection's server was verified when it opened (iOS keeps the session's connection too).
        if not client.closed and client.key[:2] == key[:2] and self.reactor.seconds() - client.idle_since < IDLE_REUSE:
            client.reused = True
            return client
        client.transport.loseConnection()
        return None

    def _unpark(self, client: _HTTPClient) -> None:
        # The server closed a parked connection (its idle timeout): forget it now, not at the next session.
        if client.session is not None and self._parked.get(client.session) is client:
            del self._parked[client.session]
        client.session = None

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

    def _connect(self, exchange: _Request) -> None:
        host, port = exchange.key[0], exchange.key[1]
        tls = self._client_tls(exchange)
        try:
            address, address_port = self._resolve(host, port)
        except TransportError as exc:
            self._finish(exchange, Failure(exc))
            return
        client = exchange.client = _HTTPClient(self, exchange)
        client.key = exchange.key
        factory = LinkFactory(tls, client, lambda reason: self._not_connected(exchange, reason))
        # The request's own timer bounds the connection attempt: no second timer per connection.
        exchange.connector = self.reactor.connectTCP(address, address_port, factory, timeout=None)

    def _client_tls(self, exchange: _Request) -> ClientTLS:
        key = (*exchange.key, self.tls_groups)
        tls = self._tls.get(key)
        if tls is None:
            pem = [ssl.Certificate.loadPEM(r.public_bytes(serialization.Encoding.PEM)) for r in exchange.roots]
            if len(self._tls) >= MAX_CLIENT_TLS:
                self._tls.clear()
            tls = self._tls[key] = ClientTLS(exchange.key[0], ssl.trustRootFromCertificates(pem),
                                             groups=self.tls_groups)
        return tls

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

    # How an exchange ends: answered, lost, never connected, or timed out --------------------------------

    def _answered(self, client: _HTTPClient, exchange: _Request, reply: Reply) -> None:
        link = client.transport
        if self.resume_sessions and not client.reused:  # a kept-alive connection's ticket was taken already
            session = link.getHandle().get_session()
            if session is not None:
                link.tls.session = session
        usable = client.keep and not client.closed
        if self.keep_alive and usable:
            client.idle_since = self.reactor.seconds()
            self._idle.setdefault(exchange.key, []).append(client)
        elif exchange.session is not None and usable and reply.status == 200 and (
                reply.body or exchange.authenticate):
            # A command to answer, or a TokenUpdate to send: its device's next request takes this connection.
            client.idle_since, client.session = self.reactor.seconds(), exchange.session
            client.for_token_update = exchange.authenticate
            previous = self._parked.pop(exchange.session, None)
            if previous is not None:  # two requests of one device at once (never in a session): keep one
                previous.session = None
                previous.transport.loseConnection()
            self._parked[exchange.session] = client
        else:
            link.loseConnection()
        self._finish(exchange, reply)

    def _lost(self, client: _HTTPClient, exchange: _Request, error: TransportError) -> None:
        if client.transport is not None:
            client.transport.abortConnection()
        if client.reused and not client.answered and exchange.timer is not None:
            # The server closed a kept-alive connection as we reused it: once more on a new one (PUT is
            # idempotent; HTTP clients do the same).
            self._connect(exchange)
            return
        self._finish(exchange, Failure(error))

    def _not_connected(self, exchange: _Request, reason: Failure) -> None:
        error = reason.value
        untrusted = isinstance(error, UntrustedServerError)
        self._finish(exchange, Failure(TransportError(f"{type(error).__name__}: {error}", untrusted=untrusted)))

    def _timed_out(self, exchange: _Request) -> None:
        exchange.timer = None
        client, connector = exchange.client, exchange.connector
        self._finish(exchange, Failure(TransportError(f"timed out after {self.timeout:g}s")))
        if client is not None:
            client.waiting = None
            if client.transport is not None:
                client.transport.abortConnection()
            elif connector is not None:  # TCP is not up yet: give up the attempt
                with contextlib.suppress(NotConnectingError):
                    connector.stopConnecting()

    def _finish(self, exchange: _Request, outcome: Reply | Failure) -> None:
        if exchange.result.called:
            return  # already timed out
        if exchange.timer is not None:
            exchange.timer.cancel()
            exchange.timer = None
        exchange.client = exchange.connector = None
        if isinstance(outcome, Failure):
            exchange.result.errback(outcome)
        else:
            exchange.result.callback(outcome)
