"""Real HTTPS from simulated devices: TLS checked against each device's own trust store, like iOS.

Glue: `connection_policy` decides which connection a request takes and whether it stays open; lean HTTP/1.1
(`mdm_wire.http1`) over `mdm_wire.tls_client`, TLS resumed through a `TLSSessionCache`.
"""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.internet import defer
from twisted.internet.error import NotConnectingError
from twisted.internet.interfaces import IResolutionReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from mdm_protocol.clocks import TCPClock
from mdm_wire.http1 import HTTPError, Response, ResponseReader, TooLarge
from mdm_wire.tls_client import (
    IOS_TLS_GROUPS,
    ClientCredential,
    LinkFactory,
    TLSLink,
    UntrustedServerError,
    check_groups,
)

from .connection_policy import (
    CLOSE,
    ConnectionMode,
    ConnectionModeError,
    ConnectionPolicy,
    Park,
    RequestKind,
    Reuse,
)
from .effects import SendRequest
from .tls_sessions import TLSSessionCache
from .transport import Reply, TransportError

# The modes moved to connection_policy; callers still import them from here with the transport.
__all__ = ["ConnectionMode", "ConnectionModeError", "HTTPSTransport", "TLSSessionCache"]

MAX_RESPONSE = 16 * 1024 * 1024  # an MDM command (a profile with certificates) is far smaller


class _Request:
    """One PUT in flight: the Deferred its sender waits on, its bytes, where it goes and its timer."""

    __slots__ = ("result", "data", "key", "roots", "timer", "client", "connector", "session", "kind", "credential")

    def __init__(self, data: bytes, key: tuple[Any, ...], roots: tuple[x509.Certificate, ...],
                 session: object | None, kind: RequestKind) -> None:
        self.result: defer.Deferred[Reply] = defer.Deferred()
        self.data, self.key, self.roots, self.session, self.kind = data, key, roots, session, kind
        self.timer: Any = None
        self.client: _HTTPClient | None = None
        self.connector: Any = None
        self.credential: ClientCredential | None = None  # the client certificate (mutual TLS)


class _HTTPClient:
    """HTTP/1.1 over one TLS link: one request at a time, the answer framed by Content-Length or chunks."""

    def __init__(self, owner: HTTPSTransport, request: _Request) -> None:
        self.owner = owner
        self.transport: TLSLink | None = None  # set by the link once TCP is up
        self.reader = ResponseReader(max_body=MAX_RESPONSE)
        self.waiting: _Request | None = request
        self.closed = False
        self.keep = False  # the server did not ask to close after this answer
        self.answered = False  # any response byte seen: a failure after it is not a TLS trust failure
        self.reused = False  # taken from the keep-alive pool or its device's session

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


class HTTPSTransport:
    """Real HTTPS for a fleet's devices: performs the decisions of a `ConnectionPolicy` (see there for when a
    connection is reused, kept or closed) over `mdm_wire.tls_client` links, one TLS client context per distinct
    trust store and server from a `TLSSessionCache`. The sender names the session's owner (`session`, e.g. its
    runner); without one every request gets its own connection.

    `reactor` provides TCP, time and (for servers named by a host name) `nameResolver`: a name is resolved once
    per transport by the reactor's resolver (a thread, never the reactor's), and every request to that server
    waits for that one resolution.
    """

    def __init__(self, reactor: TCPClock, *, connections: ConnectionMode | str = ConnectionMode.PER_SESSION,
                 keep_alive: bool = False, timeout: float = 30.0, resume_sessions: bool = True,
                 tls_groups: str | None = IOS_TLS_GROUPS, tls_sessions: TLSSessionCache | None = None) -> None:
        """`keep_alive=True` is `connections="keep-alive"`. `tls_groups`: the key exchange groups offered
        (OpenSSL names, colon-separated); None leaves OpenSSL's defaults, which lead with the post-quantum
        hybrid only iOS 26 and later offer. `tls_sessions`: the process's cache, shared by its transports so
        that each resumes the sessions of the others; by default this transport's own."""
        self.connections = ConnectionMode.KEEP_ALIVE if keep_alive else ConnectionMode.parse(connections)
        self.reactor, self.timeout = reactor, timeout
        self.resume_sessions, self.tls_groups = resume_sessions, tls_groups
        if tls_groups is not None:
            check_groups(tls_groups)
        if tls_sessions is not None and not resume_sessions:
            raise ValueError("a transport that never resumes TLS sessions takes no session cache")
        self.tls_sessions = TLSSessionCache() if tls_sessions is None else tls_sessions
        self.policy: ConnectionPolicy[_HTTPClient] = ConnectionPolicy(self.connections)
        self._addresses: dict[tuple[str, int], tuple[str, int]] = {}
        self._resolving: dict[tuple[str, int], list[_Request]] = {}  # (host, port) → requests awaiting its address
        self._trust_keys: dict[tuple[x509.Certificate, ...], tuple[bytes, ...]] = {}
        self._targets: dict[tuple[str, str, str], tuple[str, int, bytes]] = {}  # (url, type, method) → host, port, head

    @property
    def keep_alive(self) -> bool:
        return self.connections is ConnectionMode.KEEP_ALIVE

    def send(self, request: SendRequest, roots: tuple[x509.Certificate, ...],
             session: object | None = None) -> defer.Deferred[Reply]:
        try:
            host, port, head = self._target(request.url, request.content_type, request.method)
        except TransportError as exc:
            return defer.fail(exc)
        if not roots:
            return defer.fail(TransportError("the device trusts no root certificate", untrusted=True))
        identity = request.client_identity
        usable = identity is not None and identity.private_key is not None
        # A connection carries its client certificate: only requests with the same identity may share it.
        key = (host, port, self._trust_key(roots), identity.certificate if usable else None)
        kind = RequestKind.of(request.content_type, request.message)
        decision = self.policy.on_send(session, kind, key, self.reactor.seconds())
        signature = b"" if request.signature is None else b"Mdm-Signature: %s\r\n" % request.signature.encode(
            "latin-1")
        data = b"%s%sContent-Length: %d\r\n%s%s" % (
            head, signature, len(request.body),
            b"Connection: keep-alive\r\n\r\n" if decision.keep else b"Connection: close\r\n\r\n", request.body)
        exchange = _Request(data, key, roots, session, kind)
        if usable:
            exchange.credential = self.tls_sessions.credential(identity.certificate, identity.private_key)
        exchange.timer = self.reactor.callLater(self.timeout, self._timed_out, exchange)
        for unusable in decision.close:
            unusable.transport.loseConnection()
        if type(decision) is Reuse:
            client = decision.conn
            client.reused = True
            client.send(exchange)
        else:
            self._connect(exchange)
        return exchange.result

    def _target(self, url: str, content_type: str, method: str = "PUT") -> tuple[str, int, bytes]:
        # Every device of a fleet sends to the same few URLs: split each once.
        target = self._targets.get((url, content_type, method))
        if target is None:
            parts = urlsplit(url)
            if parts.scheme != "https":
                raise TransportError(f"iOS only talks to MDM over https, not {url}")
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            typed = f"Content-Type: {content_type}\r\n" if content_type else ""  # a GET has no body to type
            head = f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{typed}"
            target = (parts.hostname or "", parts.port or 443, head.encode("latin-1"))
            self._targets[(url, content_type, method)] = target
        return target

    def _trust_key(self, roots: tuple[x509.Certificate, ...]) -> tuple[bytes, ...]:
        # Certificates hash by their DER, so equal trust stores share an entry: no SHA-256 per request.
        key = self._trust_keys.get(roots)
        if key is None:
            key = self._trust_keys[roots] = tuple(sorted(r.fingerprint(hashes.SHA256()) for r in roots))
        return key

    def close(self) -> None:
        """Close the connections kept alive or parked between a session's requests (tests, shutdowns)."""
        for client in self.policy.drain():
            client.transport.loseConnection()

    @property
    def parked(self) -> int:
        """Device sessions holding a connection between two of their requests."""
        return self.policy.parked

    def _unpark(self, client: _HTTPClient) -> None:
        # A connection closed with no request on it (the server's idle timeout): forget it now, not at the next
        # request.
        self.policy.on_closed(client)

    def _connect(self, exchange: _Request) -> None:
        server = (exchange.key[0], exchange.key[1])
        address = self._addresses.get(server)
        if address is not None:
            self._open(exchange, address)
            return
        try:
            ipaddress.ip_address(server[0])
        except ValueError:
            self._resolve(server, exchange)
            return
        self._addresses[server] = server
        self._open(exchange, server)

    def _open(self, exchange: _Request, address: tuple[str, int]) -> None:
        tls = self.tls_sessions.client_tls((*exchange.key[:3], self.tls_groups), exchange.roots, self.tls_groups)
        client = exchange.client = _HTTPClient(self, exchange)
        factory = LinkFactory(tls, client, lambda reason: self._not_connected(exchange, reason), exchange.credential)
        # The request's own timer bounds the connection attempt: no second timer per connection.
        exchange.connector = self.reactor.connectTCP(address[0], address[1], factory, timeout=None)

    def _resolve(self, server: tuple[str, int], exchange: _Request) -> None:
        # Once per server, by the reactor's resolver (getaddrinfo in a thread): never blocking the reactor.
        waiting = self._resolving.get(server)
        if waiting is not None:
            waiting.append(exchange)
            return
        resolver = getattr(self.reactor, "nameResolver", None)
        if resolver is None:
            self._finish(exchange, Failure(TransportError(f"DNS: cannot resolve {server[0]}: no resolver")))
            return
        self._resolving[server] = [exchange]
        resolver.resolveHostName(_Resolution(self, server), server[0], server[1])

    def _resolved(self, server: tuple[str, int], address: tuple[str, int] | None) -> None:
        if address is not None:
            self._addresses[server] = address
        for exchange in self._resolving.pop(server, ()):
            if exchange.result.called:
                continue  # timed out while the name was being resolved
            if address is None:  # not kept: the next request asks again
                self._finish(exchange, Failure(TransportError(f"DNS: cannot resolve {server[0]}: no address")))
            else:
                self._open(exchange, address)

    # How an exchange ends: answered, lost, never connected, or timed out --------------------------------

    def _answered(self, client: _HTTPClient, exchange: _Request, reply: Reply) -> None:
        link = client.transport
        if self.resume_sessions and not client.reused:  # a kept-alive connection's ticket was taken already
            session = link.getHandle().get_session()
            if session is not None:
                link.tls.keep_session(link.credential, session)
        decision = self.policy.on_answer(client, exchange.session, exchange.kind, exchange.key,
                                         status=reply.status, body_empty=not reply.body,
                                         keep=client.keep and not client.closed, now=self.reactor.seconds())
        if decision is CLOSE:
            link.loseConnection()
        elif type(decision) is Park:
            for previous in decision.close:
                previous.transport.loseConnection()
        self._finish(exchange, reply)

    def _lost(self, client: _HTTPClient, exchange: _Request, error: TransportError) -> None:
        self.policy.on_closed(client)  # a kept connection that failed while reused: the policy holds it still
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


@implementer(IResolutionReceiver)
class _Resolution:
    """Collects the first address the reactor's resolver finds for one server, then hands it to the transport."""

    def __init__(self, transport: HTTPSTransport, server: tuple[str, int]) -> None:
        self.transport, self.server = transport, server
        self.address: tuple[str, int] | None = None

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        if self.address is None:
            self.address = (address.host, address.port)

    def resolutionComplete(self) -> None:
        self.transport._resolved(self.server, self.address)
