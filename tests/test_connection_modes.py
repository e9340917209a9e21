"""When the fleet's HTTPS opens and closes connections: one per device session (as iOS), one per request, or a
shared keep-alive pool; a session's connection is never lent to another device and ends with the session.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, ssl

from device_sim.effects import CHECKIN_TYPE, CONNECT_TYPE, SendRequest
from device_sim.https_transport import ConnectionMode, ConnectionModeError, HTTPSTransport
from device_sim.transport import Reply
from mdm_server.ca import CertificateAuthority

LAST = b"last"  # a body the test server answers with nothing: the end of the device's session


class _SessionServer(protocol.Protocol):
    """Answers each PUT with `command N` (200) or, for a body of LAST, 200 with nothing; records which
    connection carried which body and the Connection header it came with."""

    def connectionMade(self) -> None:
        self.buffer, self.number = b"", len(self.factory.connections)
        self.factory.connections.append(self)
        self.factory.open += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
            length = int(fields[b"content-length"])
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            self.factory.seen.append((self.number, body, fields.get(b"connection")))
            if body.startswith(b"status "):
                status = int(body.split()[1])
                self.transport.write(b"HTTP/1.1 %d No\r\nContent-Length: 2\r\n\r\nno" % status)
                continue
            answer = b"" if body == LAST else b"command %d" % len(self.factory.seen)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
            if body == b"answer then close":
                self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.factory.open -= 1
        if self.factory.open == 0:
            waiting, self.factory.waiting = self.factory.waiting, []
            for d in waiting:
                d.callback(None)


class _Factory(protocol.Factory):
    protocol = _SessionServer

    def __init__(self) -> None:
        self.connections: list[_SessionServer] = []
        self.seen: list[tuple[int, bytes, bytes | None]] = []
        self.open = 0
        self.waiting: list[defer.Deferred] = []

    def all_closed(self) -> defer.Deferred:
        if self.open == 0:
            return defer.succeed(None)
        self.waiting.append(defer.Deferred())
        return self.waiting[-1]


@pytest.fixture
def server():
    from twisted.internet import reactor

    ca = CertificateAuthority.create("CA", now=datetime.now(UTC))
    certificate, key = ca.issue_server_certificate(["127.0.0.1"], datetime.now(UTC))
    factory = _Factory()
    port = reactor.listenSSL(0, factory, ssl.CertificateOptions(privateKey=key, certificate=certificate),
                             interface="127.0.0.1")
    factory.url = f"https://127.0.0.1:{port.getHost().port}/mdm"
    factory.roots = (ca.certificate,)
    yield factory
    port.stopListening()


def _put(server, body: bytes, content_type: str = CONNECT_TYPE) -> SendRequest:
    return SendRequest(1, server.url, content_type, body, "sig", "Idle")


def _closed(transport: HTTPSTransport, server: _Factory) -> defer.Deferred:
    """Close what the transport keeps; fires once the server has seen every connection close (a connection
    left open by mistake fails the test by timeout)."""
    from twisted.internet import reactor

    transport.close()
    return server.all_closed().addTimeout(10, reactor)


@pytest_twisted.inlineCallbacks
def test_a_session_uses_one_connection_which_closes_when_the_server_answers_with_nothing(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor)  # per session is the default
    device = object()
    try:
        for _ in range(2):  # two sessions, each: Idle → a command, its report → a command, the last → nothing
            replies = []
            for body in (b"idle", b"report", LAST):
                replies.append((yield transport.send(_put(server, body), server.roots, session=device)))
            assert [reply.body != b"" for reply in replies] == [True, True, False]
            assert transport.parked == 0  # the session is over: nothing is kept for it
        assert [number for number, _, _ in server.seen] == [0, 0, 0, 1, 1, 1]
        # keep-alive asked for while the session may go on; the client closes after the empty answer
        assert {header for _, _, header in server.seen} == {b"keep-alive"}
    finally:
        yield _closed(transport, server)
    assert len(server.connections) == 2


@pytest_twisted.inlineCallbacks
def test_a_root_installed_mid_session_does_not_cost_the_session_its_connection(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor)
    device = object()
    more_roots = (*server.roots, CertificateAuthority.create("Mail CA", now=datetime.now(UTC)).certificate)
    try:
        yield transport.send(_put(server, b"idle"), server.roots, session=device)  # → InstallProfile with a root
        yield transport.send(_put(server, LAST), more_roots, session=device)  # its report, trusting one more root
    finally:
        yield _closed(transport, server)
    assert [number for number, _, _ in server.seen] == [0, 0]


@pytest_twisted.inlineCallbacks
def test_two_devices_in_session_at_once_never_share_a_connection(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor, connections="per-session")
    alice, bob = object(), object()
    try:
        for body in (b"idle", b"report"):  # interleaved: alice, bob, alice, bob
            for device in (alice, bob):
                yield transport.send(_put(server, body + b" " + str(id(device)).encode()), server.roots,
                                     session=device)
        assert transport.parked == 2  # each mid-session, each with its own connection
        yield transport.send(_put(server, LAST), server.roots, session=alice)
        assert transport.parked == 1
    finally:
        yield _closed(transport, server)
    by_connection: dict[int, set[bytes]] = {}
    for number, body, _ in server.seen:
        by_connection.setdefault(number, set()).add(body.split(b" ")[-1])
    assert len(server.connections) == 2
    assert sorted(len(devices) for number, devices in by_connection.items()) == [1, 2]  # alice's LAST has no id


@pytest_twisted.inlineCallbacks
def test_a_checkin_message_is_a_session_of_its_own_and_a_failed_answer_ends_the_session(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor)
    device = object()
    try:
        yield transport.send(_put(server, b"token update", CHECKIN_TYPE), server.roots, session=device)
        assert transport.parked == 0
        yield transport.send(_put(server, b"idle"), server.roots, session=device)
        reply = yield transport.send(_put(server, b"status 500"), server.roots, session=device)
        assert reply.status == 500 and transport.parked == 0
        yield transport.send(_put(server, b"idle"), server.roots, session=device)
    finally:
        yield _closed(transport, server)
    assert [(number, header) for number, _, header in server.seen] == [
        (0, b"close"), (1, b"keep-alive"), (1, b"keep-alive"), (2, b"keep-alive")]


def _checkin(server, message: str, body: bytes = LAST) -> SendRequest:
    return SendRequest(1, server.url, CHECKIN_TYPE, body, "sig", message)


@pytest_twisted.inlineCallbacks
def test_a_token_update_takes_the_connection_of_the_authenticate_answered_200_just_before_it(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor)
    device = object()
    try:
        yield transport.send(_checkin(server, "Authenticate"), server.roots, session=device)
        assert transport.parked == 1
        yield transport.send(_checkin(server, "TokenUpdate"), server.roots, session=device)
        assert transport.parked == 0  # the pair is over: the TokenUpdate's connection closes
        yield transport.send(_checkin(server, "TokenUpdate"), server.roots, session=device)  # a later one
    finally:
        yield _closed(transport, server)
    assert [(number, header) for number, _, header in server.seen] == [
        (0, b"keep-alive"), (0, b"close"), (1, b"close")]


@pytest_twisted.inlineCallbacks
def test_the_authenticate_connection_serves_only_its_own_token_update_and_only_after_a_200(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor)
    alice, bob, carol = object(), object(), object()
    try:
        reply = yield transport.send(_checkin(server, "Authenticate", b"status 401"), server.roots, session=alice)
        assert reply.status == 401 and transport.parked == 0
        yield transport.send(_checkin(server, "TokenUpdate"), server.roots, session=alice)  # 1: not reused
        yield transport.send(_checkin(server, "Authenticate"), server.roots, session=bob)  # 2
        yield transport.send(_checkin(server, "TokenUpdate"), server.roots, session=carol)  # 3: not bob's
        yield transport.send(_put(server, b"idle"), server.roots, session=bob)  # 4: not a TokenUpdate
        assert transport.parked == 1  # bob's command session; his Authenticate's connection is closed
        yield transport.send(_checkin(server, "TokenUpdate"), server.roots, session=bob)  # 5: never a session's
        assert transport.parked == 1
        yield transport.send(_put(server, LAST), server.roots, session=bob)  # the session goes on, on 4
    finally:
        yield _closed(transport, server)
    assert [number for number, _, _ in server.seen] == [0, 1, 2, 3, 4, 5, 4]
    assert [header for _, _, header in server.seen][1:4] == [b"close", b"keep-alive", b"close"]


@pytest_twisted.inlineCallbacks
def test_per_request_and_keep_alive_modes_do_not_pair_check_ins(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor, connections="per-request")
    device = object()
    try:
        yield transport.send(_checkin(server, "Authenticate"), server.roots, session=device)
        assert transport.parked == 0
        yield transport.send(_checkin(server, "TokenUpdate"), server.roots, session=device)
    finally:
        yield _closed(transport, server)
    assert [(number, header) for number, _, header in server.seen] == [(0, b"close"), (1, b"close")]


@pytest_twisted.inlineCallbacks
def test_a_parked_connection_the_server_closes_is_forgotten_and_the_session_goes_on(server, monkeypatch):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor)
    device, unparked = object(), defer.Deferred()
    forget = transport._unpark
    monkeypatch.setattr(transport, "_unpark", lambda client: (forget(client), unparked.callback(None)))
    try:
        yield transport.send(_put(server, b"answer then close"), server.roots, session=device)
        yield unparked  # the server's close reached the parked connection
        assert transport.parked == 0
        reply = yield transport.send(_put(server, b"report"), server.roots, session=device)
        assert reply.status == 200
    finally:
        yield _closed(transport, server)
    assert [number for number, _, _ in server.seen] == [0, 1]


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize(("mode", "connections"), [("per-request", [0, 1, 2]), ("keep-alive", [0, 0, 0])])
def test_per_request_and_keep_alive_ignore_sessions(server, mode, connections):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor, connections=mode)
    try:
        for body, device in ((b"idle", 1), (b"report", 1), (b"idle", 2)):  # keep-alive shares across devices
            yield transport.send(_put(server, body), server.roots, session=device)
        assert transport.parked == 0
    finally:
        yield _closed(transport, server)
    assert [number for number, _, _ in server.seen] == connections


@pytest_twisted.inlineCallbacks
def test_without_a_session_every_request_gets_its_own_connection(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor)
    try:
        replies = []
        for body in (b"idle", b"report"):
            replies.append((yield transport.send(_put(server, body), server.roots)))
    finally:
        yield _closed(transport, server)
    assert replies == [Reply(200, b"command 1"), Reply(200, b"command 2")]
    assert [(number, header) for number, _, header in server.seen] == [(0, b"close"), (1, b"close")]


def test_connection_modes_parse_and_the_keep_alive_alias():
    from twisted.internet.testing import MemoryReactorClock

    reactor = MemoryReactorClock()
    assert HTTPSTransport(reactor).connections is ConnectionMode.PER_SESSION
    assert HTTPSTransport(reactor, keep_alive=True).keep_alive
    assert HTTPSTransport(reactor, connections="per-request").connections is ConnectionMode.PER_REQUEST
    with pytest.raises(ConnectionModeError, match="per-session, keep-alive"):
        HTTPSTransport(reactor, connections="per-device")
