"""The fleet's HTTPS client over real TLS on loopback: a connection per request with resumed sessions, trust
and name checks as iOS makes them, timeouts on a fake clock, and HTTP framing under any split of the bytes.
"""

from __future__ import annotations

import hashlib
import socket
from datetime import UTC, datetime

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL.SSL import _lib
from twisted.internet import defer, protocol, ssl, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from device_sim import https_transport
from device_sim.effects import SendRequest
from device_sim.https_transport import HTTPSTransport
from device_sim.tls_sessions import TLSSessionCache
from device_sim.transport import Reply, TransportError
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.ca import CertificateAuthority
from mdm_wire import tls_client
from mdm_wire.http1_server import RequestReader


def _request(url: str) -> SendRequest:
    return SendRequest(1, url, "application/x-apple-aspen-mdm", b"not a plist", "not a signature", "Idle")


def _outcome(d: defer.Deferred) -> defer.Deferred:
    return d.addCallbacks(lambda reply: reply, lambda failure: failure.value)


@pytest_twisted.inlineCallbacks
def _server(tmp_path, names=("127.0.0.1",)):
    from twisted.internet import reactor

    server = MDMServer(ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1",
                                    push_link=None, server_names=names, in_memory=True), clock=reactor,
                       reactor=reactor)
    server.startService()
    yield server.listening()
    return server


@pytest_twisted.inlineCallbacks
def test_each_request_opens_a_connection_closes_it_and_resumes_the_tls_session(tmp_path, monkeypatch):
    from twisted.internet import reactor

    server = yield _server(tmp_path)
    made = []
    connection = tls_client.ClientTLS.connection
    monkeypatch.setattr(tls_client.ClientTLS, "connection", lambda self, link: made.append(
        connection(self, link)) or made[-1])
    sessions = TLSSessionCache()  # one per process, as the fleet and the load workers make it
    transport = HTTPSTransport(reactor, tls_sessions=sessions)
    url = f"https://127.0.0.1:{server.ports[0].getHost().port}/mdm/connect"
    try:
        first = yield transport.send(_request(url), (server.ca.certificate,))
        second = yield transport.send(_request(url), (server.ca.certificate,))
        assert first == second and first.status == 400 and b"Mdm-Signature" in first.body  # answered over TLS
        assert len(made) == 2 and not transport.policy.pooled()  # a new connection each time, none kept
        assert [_lib.SSL_session_reused(c._ssl) for c in made] == [0, 1]  # the second resumed the first
        assert made[0].get_group_name() == "x25519"  # what iOS 9 to 17 lead with, not the PQ hybrid
        yield HTTPSTransport(reactor, keep_alive=True, tls_sessions=sessions).send(_request(url),
                                                                                   (server.ca.certificate,))
        assert _lib.SSL_session_reused(made[2]._ssl) == 1  # a new transport resumes too, like a device would
        unresumed = HTTPSTransport(reactor, resume_sessions=False)
        for _ in range(2):
            yield unresumed.send(_request(url), (server.ca.certificate,))
        assert [_lib.SSL_session_reused(c._ssl) for c in made[3:]] == [0, 0]
        yield HTTPSTransport(reactor).send(_request(url), (server.ca.certificate,))  # its own cache: nothing shared
        assert _lib.SSL_session_reused(made[5]._ssl) == 0
        with pytest.raises(ValueError, match="never resumes"):
            HTTPSTransport(reactor, resume_sessions=False, tls_sessions=sessions)
    finally:
        yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_the_offered_key_exchange_groups_can_be_chosen(tmp_path, monkeypatch):
    from twisted.internet import reactor

    server = yield _server(tmp_path)
    made = []
    connection = tls_client.ClientTLS.connection
    monkeypatch.setattr(tls_client.ClientTLS, "connection", lambda self, link: made.append(
        connection(self, link)) or made[-1])
    try:
        url = f"https://127.0.0.1:{server.ports[0].getHost().port}/mdm/connect"
        yield HTTPSTransport(reactor, tls_groups="P-256").send(_request(url), (server.ca.certificate,))
        assert made[0].get_group_name() == "secp256r1"
    finally:
        yield server.stopService()
    with pytest.raises(ValueError, match="no-such-group"):
        HTTPSTransport(reactor, tls_groups="no-such-group")


@pytest_twisted.inlineCallbacks
def test_a_server_certificate_for_another_name_is_untrusted(tmp_path):
    from twisted.internet import reactor

    server = yield _server(tmp_path, names=("mdm.example.test",))  # the certificate does not name 127.0.0.1
    transport = HTTPSTransport(reactor)
    try:
        url = f"https://127.0.0.1:{server.ports[0].getHost().port}/mdm/connect"
        refused = yield _outcome(transport.send(_request(url), (server.ca.certificate,)))
        assert isinstance(refused, TransportError) and refused.untrusted
        assert "127.0.0.1" in refused.reason
        stranger = CertificateAuthority.create("another CA", now=server.now()).certificate
        refused = yield _outcome(transport.send(_request(url), (stranger,)))
        assert isinstance(refused, TransportError) and refused.untrusted
    finally:
        yield server.stopService()


@pytest_twisted.inlineCallbacks
def test_a_refused_connection_is_a_transport_error_not_a_trust_failure():
    from twisted.internet import reactor

    port = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
    number = port.getHost().port
    yield port.stopListening()  # nothing listens there now
    ca = CertificateAuthority.create("CA", now=datetime.now(UTC))
    failed = yield _outcome(HTTPSTransport(reactor).send(_request(f"https://127.0.0.1:{number}/"),
                                                         (ca.certificate,)))
    assert isinstance(failed, TransportError) and not failed.untrusted
    assert failed.reason.startswith("ConnectionRefusedError")


class _PlainHTTP(protocol.Protocol):
    """Answers the ClientHello with plain HTTP: a TLS failure that says nothing about trust."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        self.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_a_tls_failure_that_is_not_about_the_certificate_is_not_a_trust_failure():
    from twisted.internet import reactor

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(_PlainHTTP), interface="127.0.0.1")
    try:
        ca = CertificateAuthority.create("CA", now=datetime.now(UTC))
        url = f"https://127.0.0.1:{port.getHost().port}/mdm/connect"
        failed = yield _outcome(HTTPSTransport(reactor).send(_request(url), (ca.certificate,)))
        assert isinstance(failed, TransportError) and not failed.untrusted
    finally:
        yield port.stopListening()


class _Silent(protocol.Protocol):
    """Accepts TCP and says nothing: the TLS handshake never completes."""

    def connectionMade(self) -> None:
        self.factory.made.callback(self)

    def connectionLost(self, reason=None) -> None:
        self.factory.lost.callback(None)


class _RealSocketsFakeTime:
    """Sockets from the real reactor, time from a Clock the test advances."""

    def __init__(self, real, clock: task.Clock) -> None:
        self.connectTCP, self.callLater, self.seconds = real.connectTCP, clock.callLater, clock.seconds


@pytest_twisted.inlineCallbacks
def test_a_silent_server_times_out_on_the_clock_and_the_connection_is_dropped():
    from twisted.internet import reactor

    factory = protocol.Factory.forProtocol(_Silent)
    factory.made, factory.lost = defer.Deferred(), defer.Deferred()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    clock = task.Clock()
    ca = CertificateAuthority.create("CA", now=datetime.now(UTC))
    transport = HTTPSTransport(_RealSocketsFakeTime(reactor, clock), timeout=12)
    try:
        result = _outcome(transport.send(_request(f"https://127.0.0.1:{port.getHost().port}/"),
                                         (ca.certificate,)))
        yield factory.made
        clock.advance(11.9)
        assert not result.called
        clock.advance(0.2)
        failed = yield result
        assert isinstance(failed, TransportError) and failed.reason == "timed out after 12s"
        yield factory.lost  # the client dropped the connection
        assert not clock.getDelayedCalls()
    finally:
        yield port.stopListening()


def test_a_connection_attempt_is_abandoned_when_the_request_times_out():
    reactor = MemoryReactorClock()
    ca = CertificateAuthority.create("CA", now=datetime.now(UTC))
    result = _outcome(HTTPSTransport(reactor, timeout=5).send(_request("https://127.0.0.1:8443/"),
                                                              (ca.certificate,)))
    (attempt,) = reactor.tcpClients
    assert attempt[:2] == ("127.0.0.1", 8443) and attempt[3] is None  # the request's timer is the only one
    reactor.advance(5)
    assert isinstance(result.result, TransportError) and result.result.reason == "timed out after 5s"
    assert reactor.connectors[0].stoppedConnecting


# Names: resolved by the reactor's resolver, never by a blocking call on the reactor's thread -----------------


@implementer(IHostnameResolver)
class _HeldResolver:
    """Answers only when the test completes a resolution, as a resolver thread answers some time later."""

    def __init__(self) -> None:
        self.asked: list[tuple[object, str, int]] = []

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
        self.asked.append((receiver, hostName, portNumber))
        receiver.resolutionBegan(None)


def _held(timeout: float = 30.0) -> tuple[HTTPSTransport, MemoryReactorClock, _HeldResolver]:
    reactor, resolver = MemoryReactorClock(), _HeldResolver()
    reactor.installNameResolver(resolver)
    return HTTPSTransport(reactor, timeout=timeout), reactor, resolver


def test_a_host_name_is_resolved_once_and_every_request_waiting_for_it_then_connects():
    transport, reactor, resolver = _held()
    roots = (CertificateAuthority.create("CA", now=datetime.now(UTC)).certificate,)
    url = "https://mdm.example.test:8443/mdm/connect"
    waiting = [transport.send(_request(url), roots) for _ in range(2)]
    assert [asked[1:] for asked in resolver.asked] == [("mdm.example.test", 8443)]
    assert not reactor.tcpClients and not any(d.called for d in waiting)  # nothing blocked, nothing connects yet
    receiver = resolver.asked[0][0]
    receiver.addressResolved(IPv4Address("TCP", "192.0.2.7", 8443))
    receiver.addressResolved(IPv4Address("TCP", "192.0.2.8", 8443))
    receiver.resolutionComplete()
    transport.send(_request(url), roots)  # a later request takes the address kept
    assert [client[:2] for client in reactor.tcpClients] == [("192.0.2.7", 8443)] * 3
    assert len(resolver.asked) == 1


def test_a_name_that_does_not_resolve_fails_its_requests_and_is_asked_again_next_time():
    transport, reactor, resolver = _held()
    roots = (CertificateAuthority.create("CA", now=datetime.now(UTC)).certificate,)
    failed = _outcome(transport.send(_request("https://nowhere.test/mdm"), roots))
    resolver.asked[0][0].resolutionComplete()  # no address
    assert isinstance(failed.result, TransportError) and not failed.result.untrusted
    assert failed.result.reason == "DNS: cannot resolve nowhere.test: no address"
    transport.send(_request("https://nowhere.test/mdm"), roots)
    assert len(resolver.asked) == 2 and not reactor.tcpClients


def test_a_request_that_times_out_while_its_server_name_resolves_never_connects():
    transport, reactor, resolver = _held(timeout=5)
    roots = (CertificateAuthority.create("CA", now=datetime.now(UTC)).certificate,)
    result = _outcome(transport.send(_request("https://slow.example.test/mdm"), roots))
    reactor.advance(5)
    assert result.result.reason == "timed out after 5s"
    receiver = resolver.asked[0][0]
    receiver.addressResolved(IPv4Address("TCP", "192.0.2.9", 443))
    receiver.resolutionComplete()
    assert not reactor.tcpClients


@pytest_twisted.inlineCallbacks
def test_a_server_named_by_a_host_name_is_reached_through_the_reactors_resolver(tmp_path):
    from twisted.internet import reactor

    if socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    server = yield _server(tmp_path, names=("localhost",))
    try:
        url = f"https://localhost:{server.ports[0].getHost().port}/mdm/connect"
        reply = yield HTTPSTransport(reactor).send(_request(url), (server.ca.certificate,))
        assert reply.status == 400 and b"Mdm-Signature" in reply.body  # resolved in a thread, then over TLS
    finally:
        yield server.stopService()


@pytest.mark.parametrize("url", ["http://127.0.0.1/mdm", "ftp://x/"])
def test_only_https_is_spoken(url):
    failed = _outcome(HTTPSTransport(MemoryReactorClock()).send(_request(url), ("a root",)))
    assert isinstance(failed.result, TransportError) and "https" in failed.result.reason


# HTTP framing ----------------------------------------------------------------------------------------------


class _Owner:
    def __init__(self) -> None:
        self.replies: list[Reply] = []

    def _answered(self, client, request, reply: Reply) -> None:
        self.replies.append(reply)

    def _lost(self, client, request, error) -> None:
        raise AssertionError(error.reason)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, position = b"", 0
    for size in sizes:
        piece, position = body[position:position + size], position + size
        if piece:
            out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
    if position < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - position, body[position:])
    return out + b"0\r\n\r\n"


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=400), chunked=st.booleans(), sizes=st.lists(st.integers(1, 64), max_size=8),
       cuts=st.lists(st.integers(0, 600), max_size=6))
def test_a_reply_is_the_same_however_its_bytes_are_split(body, chunked, sizes, cuts):
    if chunked:
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(body, sizes)
    else:
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nServer: x\r\n\r\n%s" % (len(body), body)
    owner = _Owner()
    client = https_transport._HTTPClient(owner, object())
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(raw)], strict=True):
        client.dataReceived(raw[start:end])
    assert owner.replies == [Reply(200, body)]


class _FailingOwner(_Owner):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def _lost(self, client, request, error) -> None:
        self.errors.append(error.reason)


class _Aborts:
    def abortConnection(self) -> None:
        self.aborted = True


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\nContent-Length: +6\r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\nContent-Length: 6_0\r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nabcdef",
    b"HTTP/1.1 -20 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
], ids=["negative", "plus", "underscore", "superscript", "status", "negative-chunk", "chunk-overrun"])
def test_a_malformed_length_is_an_error_not_a_truncated_reply(head):
    owner = _FailingOwner()
    client = https_transport._HTTPClient(owner, object())
    client.transport = _Aborts()
    client.dataReceived(head)
    assert owner.replies == [] and owner.errors and "malformed HTTP response" in owner.errors[0]


# Large bodies over a plain TLS server -----------------------------------------------------------------------


class _Digesting(protocol.Protocol):
    """Answers each PUT with the SHA-256 of its body (HTTP/1.1, Content-Length framing, keep-alive)."""

    def connectionMade(self) -> None:
        self.reader = RequestReader(body_limit=16 * 1024 * 1024)

    def dataReceived(self, data: bytes) -> None:
        request = self.reader.feed(data)
        while request is not None:
            digest = hashlib.sha256(request.body).hexdigest().encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(digest), digest))
            request = self.reader.feed(b"")


@pytest_twisted.inlineCallbacks
def test_a_body_larger_than_the_socket_takes_at_once_arrives_whole_and_in_order(monkeypatch):
    from twisted.internet import reactor

    ca = CertificateAuthority.create("CA", now=datetime.now(UTC))
    certificate, key = ca.issue_server_certificate(["127.0.0.1"], datetime.now(UTC))
    options = ssl.CertificateOptions(privateKey=key, certificate=certificate)
    port = reactor.listenSSL(0, protocol.Factory.forProtocol(_Digesting), options, interface="127.0.0.1")
    links = []
    connection = tls_client.ClientTLS.connection
    monkeypatch.setattr(tls_client.ClientTLS, "connection", lambda self, link: links.append(link) or connection(
        self, link))
    transport = HTTPSTransport(reactor, keep_alive=True)
    url = f"https://127.0.0.1:{port.getHost().port}/mdm/connect"
    try:
        for body in (bytes(range(256)) * (48 * 1024), b"small after large"):  # 12 MB, then a few bytes
            request = SendRequest(1, url, "application/x-apple-aspen-mdm", body, "sig", "Idle")
            reply = yield transport.send(request, (ca.certificate,))
            assert reply == Reply(200, hashlib.sha256(body).hexdigest().encode())
        (link,) = links  # both on one kept-alive connection...
        assert not link.direct  # ...where the socket took part of 12 MB and Twisted queued the rest
    finally:
        transport.close()
        yield port.stopListening()
