"""When the fleet's HTTPS opens and closes connections: one per device session (as iOS), one per request, or a
shared keep-alive pool; a session's connection is never lent to another device and ends with the session.

The policy's exact decisions for sequences of sends and answers first, then a few runs over real TLS on loopback.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, protocol, ssl

from device_sim.connection_policy import (
    CLOSE,
    CONNECT_CLOSE,
    CONNECT_KEEP,
    IDLE_REUSE,
    POOL,
    Connect,
    ConnectionPolicy,
    Park,
    RequestKind,
    Reuse,
)
from device_sim.effects import CHECKIN_TYPE, CONNECT_TYPE, SendRequest
from device_sim.https_transport import ConnectionMode, ConnectionModeError, HTTPSTransport
from device_sim.transport import Reply
from mdm_server.ca import CertificateAuthority
from mdm_wire.http1_server import RequestReader, Route

LAST = b"last"  # a body the test server answers with nothing: the end of the device's session
COMMAND, AUTHENTICATE, TOKEN_UPDATE, CHECKIN = (RequestKind.COMMAND, RequestKind.AUTHENTICATE,
                                                RequestKind.TOKEN_UPDATE, RequestKind.CHECKIN)
KEY = ("mdm.example.test", 443, (b"root",))
PER_REQUEST, PER_SESSION, KEEP_ALIVE = ConnectionMode.PER_REQUEST, ConnectionMode.PER_SESSION, ConnectionMode.KEEP_ALIVE
ALICE, BOB, CAROL = "alice", "bob", "carol"


# The policy's decisions -------------------------------------------------------------------------------------


class _Transport:
    """Performs a policy's decisions as `HTTPSTransport` does: connections are numbered as they open, and one
    the policy has it close, or that the server closes, is reported closed to it. Each step is one second."""

    def __init__(self, mode: ConnectionMode) -> None:
        self.policy: ConnectionPolicy[int] = ConnectionPolicy(mode)
        self.opened, self.now = 0, 0.0
        self.in_flight: dict[int, tuple] = {}

    def send(self, session, kind=COMMAND, *, key=KEY, wait: float = 1.0):
        """(decision, the connection it took)."""
        self.now += wait
        decision = self.policy.on_send(session, kind, key, self.now)
        self._close(decision.close)
        if isinstance(decision, Reuse):
            conn = decision.conn
        else:
            conn, self.opened = self.opened, self.opened + 1
        self.in_flight[conn] = (session, kind, key)
        return decision, conn

    def answer(self, conn: int, *, status: int = 200, body: bytes = b"command", keep: bool = True):
        session, kind, key = self.in_flight.pop(conn)
        decision = self.policy.on_answer(conn, session, kind, key, status=status, body_empty=not body, keep=keep,
                                         now=self.now)
        if decision is CLOSE:
            self._close((conn,))
        elif isinstance(decision, Park):
            self._close(decision.close)
        return decision

    def exchange(self, session, kind=COMMAND, *, key=KEY, wait: float = 1.0, **answer):
        """One request answered: (send decision, connection, answer decision)."""
        decision, conn = self.send(session, kind, key=key, wait=wait)
        return decision, conn, self.answer(conn, **answer)

    def _close(self, conns) -> None:
        for conn in conns:
            self.policy.on_closed(conn)  # what the connection's connectionLost tells the transport


def test_a_session_uses_one_connection_which_closes_when_the_server_answers_with_nothing():
    fleet = _Transport(PER_SESSION)  # per session is the default
    for first in (0, 1):  # two sessions, each: Idle → a command, its report → a command, the last → nothing
        steps = [fleet.exchange(ALICE), fleet.exchange(ALICE), fleet.exchange(ALICE, body=b"")]
        # keep-alive asked for while the session may go on; the client closes after the empty answer
        assert steps == [(CONNECT_KEEP, first, Park(ALICE)), (Reuse(first, keep=True), first, Park(ALICE)),
                         (Reuse(first, keep=True), first, CLOSE)]
        assert fleet.policy.parked == 0  # the session is over: nothing is kept for it
    assert fleet.opened == 2


def test_a_root_installed_mid_session_does_not_cost_the_session_its_connection():
    fleet = _Transport(PER_SESSION)
    more_roots = (*KEY[:2], (b"root", b"mail root"))
    assert fleet.exchange(ALICE) == (CONNECT_KEEP, 0, Park(ALICE))  # → InstallProfile with a root
    assert fleet.exchange(ALICE, key=more_roots) == (Reuse(0, keep=True), 0, Park(ALICE))  # trusting one more
    # Another server is another connection, and the one kept for this session closes.
    assert fleet.send(ALICE, key=("other.example.test", 443, KEY[2])) == (Connect(True, close=(0,)), 1)


def test_two_devices_in_session_at_once_never_share_a_connection():
    fleet = _Transport(PER_SESSION)
    steps = [fleet.exchange(device) for _ in range(2) for device in (ALICE, BOB)]  # alice, bob, alice, bob
    assert steps == [(CONNECT_KEEP, 0, Park(ALICE)), (CONNECT_KEEP, 1, Park(BOB)),
                     (Reuse(0, keep=True), 0, Park(ALICE)), (Reuse(1, keep=True), 1, Park(BOB))]
    assert fleet.policy.parked == 2  # each mid-session, each with its own connection
    assert fleet.exchange(ALICE, body=b"") == (Reuse(0, keep=True), 0, CLOSE)
    assert fleet.policy.parked == 1
    assert fleet.exchange(BOB) == (Reuse(1, keep=True), 1, Park(BOB))


def test_a_checkin_message_is_a_session_of_its_own_and_a_failed_answer_ends_the_session():
    fleet = _Transport(PER_SESSION)
    assert fleet.exchange(ALICE, CHECKIN) == (CONNECT_CLOSE, 0, CLOSE)
    assert fleet.policy.parked == 0
    assert fleet.exchange(ALICE) == (CONNECT_KEEP, 1, Park(ALICE))
    assert fleet.exchange(ALICE, status=500) == (Reuse(1, keep=True), 1, CLOSE)
    assert fleet.policy.parked == 0
    assert fleet.exchange(ALICE) == (CONNECT_KEEP, 2, Park(ALICE))
    assert fleet.exchange(ALICE, CHECKIN) == (CONNECT_CLOSE, 3, CLOSE)  # the command session goes on, on 2
    assert fleet.exchange(ALICE, keep=False) == (Reuse(2, keep=True), 2, CLOSE)  # the server would not keep it


def test_a_token_update_takes_the_connection_of_the_authenticate_answered_200_just_before_it():
    fleet = _Transport(PER_SESSION)
    assert fleet.exchange(ALICE, AUTHENTICATE, body=b"") == (CONNECT_KEEP, 0, Park(ALICE, token_update=True))
    assert fleet.policy.parked == 1
    # the pair is over: the TokenUpdate asks to close, and its connection closes
    assert fleet.exchange(ALICE, TOKEN_UPDATE, body=b"") == (Reuse(0, keep=False), 0, CLOSE)
    assert fleet.policy.parked == 0
    assert fleet.exchange(ALICE, TOKEN_UPDATE, body=b"") == (CONNECT_CLOSE, 1, CLOSE)  # a later one


def test_the_authenticate_connection_serves_only_its_own_token_update_and_only_after_a_200():
    fleet = _Transport(PER_SESSION)
    assert [fleet.exchange(ALICE, AUTHENTICATE, status=401), fleet.exchange(ALICE, TOKEN_UPDATE)] == [
        (CONNECT_KEEP, 0, CLOSE), (CONNECT_CLOSE, 1, CLOSE)]  # a refused Authenticate parks nothing
    assert fleet.exchange(BOB, AUTHENTICATE) == (CONNECT_KEEP, 2, Park(BOB, token_update=True))
    assert fleet.exchange(CAROL, TOKEN_UPDATE) == (CONNECT_CLOSE, 3, CLOSE)  # not bob's
    # Not a TokenUpdate: bob's Authenticate's connection closes, his command session has its own.
    assert fleet.exchange(BOB) == (Connect(True, close=(2,)), 4, Park(BOB))
    assert fleet.policy.parked == 1
    assert fleet.exchange(BOB, TOKEN_UPDATE) == (CONNECT_CLOSE, 5, CLOSE)  # never a command session's
    assert fleet.policy.parked == 1
    assert fleet.exchange(BOB, body=b"") == (Reuse(4, keep=True), 4, CLOSE)  # the session goes on, on 4


@pytest.mark.parametrize(("mode", "expected"), [
    (PER_REQUEST, [(CONNECT_CLOSE, 0, CLOSE), (CONNECT_CLOSE, 1, CLOSE)]),
    (KEEP_ALIVE, [(CONNECT_KEEP, 0, POOL), (Reuse(0, keep=True), 0, POOL)]),  # the pool's, not a pair's
])
def test_per_request_and_keep_alive_modes_do_not_pair_check_ins(mode, expected):
    fleet = _Transport(mode)
    first = fleet.exchange(ALICE, AUTHENTICATE, body=b"")
    assert fleet.policy.parked == 0
    assert [first, fleet.exchange(ALICE, TOKEN_UPDATE, body=b"")] == expected


def test_a_parked_connection_the_server_closes_is_forgotten_and_the_session_goes_on():
    fleet = _Transport(PER_SESSION)
    assert fleet.exchange(ALICE) == (CONNECT_KEEP, 0, Park(ALICE))  # answered, then the server closes
    fleet.policy.on_closed(0)
    assert fleet.policy.parked == 0
    assert fleet.exchange(ALICE) == (CONNECT_KEEP, 1, Park(ALICE))


@pytest.mark.parametrize(("mode", "expected"), [
    (PER_REQUEST, [(CONNECT_CLOSE, 0, CLOSE), (CONNECT_CLOSE, 1, CLOSE), (CONNECT_CLOSE, 2, CLOSE)]),
    (KEEP_ALIVE, [(CONNECT_KEEP, 0, POOL), (Reuse(0, keep=True), 0, POOL), (Reuse(0, keep=True), 0, POOL)]),
])
def test_per_request_and_keep_alive_ignore_sessions(mode, expected):
    fleet = _Transport(mode)
    steps = [fleet.exchange(device) for device in (ALICE, ALICE, BOB)]  # keep-alive shares across devices
    assert steps == expected
    assert fleet.policy.parked == 0


def test_without_a_session_every_request_gets_its_own_connection():
    fleet = _Transport(PER_SESSION)
    assert [fleet.exchange(None), fleet.exchange(None)] == [(CONNECT_CLOSE, 0, CLOSE), (CONNECT_CLOSE, 1, CLOSE)]


def test_a_connection_idle_too_long_is_closed_not_reused():
    fleet = _Transport(PER_SESSION)
    assert fleet.exchange(ALICE) == (CONNECT_KEEP, 0, Park(ALICE))
    assert fleet.exchange(ALICE, wait=IDLE_REUSE - 0.5) == (Reuse(0, keep=True), 0, Park(ALICE))
    assert fleet.send(ALICE, wait=IDLE_REUSE) == (Connect(True, close=(0,)), 1)
    pool = _Transport(KEEP_ALIVE)
    assert [pool.send(ALICE, wait=0), pool.send(BOB, wait=0)] == [(CONNECT_KEEP, 0), (CONNECT_KEEP, 1)]
    assert [pool.answer(0), pool.answer(1)] == [POOL, POOL]
    assert pool.send(ALICE, wait=IDLE_REUSE) == (Connect(True, close=(1, 0)), 2)  # the most recent first


def test_a_pooled_connection_that_closed_is_skipped():
    pool = _Transport(KEEP_ALIVE)
    assert [pool.send(device) for device in (ALICE, BOB, CAROL)] == [
        (CONNECT_KEEP, 0), (CONNECT_KEEP, 1), (CONNECT_KEEP, 2)]  # three at once
    assert [pool.answer(conn) for conn in (0, 1, 2)] == [POOL, POOL, POOL]
    pool.policy.on_closed(1)  # the server's idle timeout, noticed before the next request
    assert pool.policy.pooled() == [0, 2]
    assert [pool.send(ALICE), pool.send(BOB), pool.send(CAROL)] == [
        (Reuse(2, keep=True), 2), (Reuse(0, keep=True), 0), (CONNECT_KEEP, 3)]
    assert pool.answer(3, keep=False) == CLOSE and pool.policy.pooled() == []  # the server closes it


def test_two_requests_of_one_device_at_once_keep_one_connection():
    fleet = _Transport(PER_SESSION)
    assert [fleet.send(ALICE), fleet.send(ALICE)] == [(CONNECT_KEEP, 0), (CONNECT_KEEP, 1)]
    assert [fleet.answer(0), fleet.answer(1)] == [Park(ALICE), Park(ALICE, close=(0,))]
    assert fleet.policy.parked == 1 and fleet.send(ALICE) == (Reuse(1, keep=True), 1)


@pytest.mark.parametrize("mode", [PER_SESSION, KEEP_ALIVE])
def test_reusing_and_keeping_a_connection_again_makes_no_new_decision(mode):
    # The fleet's hot path: after a connection's first reuse, its decisions are the ones made before.
    fleet = _Transport(mode)
    steps = [fleet.exchange(ALICE) for _ in range(4)]
    assert steps[2][0] is steps[1][0] is steps[3][0] and steps[2][2] is steps[1][2] is steps[3][2]


def test_drain_hands_back_every_open_connection_kept_and_forgets_them():
    fleet = _Transport(PER_SESSION)
    fleet.exchange(ALICE)
    fleet.exchange(BOB, AUTHENTICATE)
    assert sorted(fleet.policy.drain()) == [0, 1] and fleet.policy.parked == 0
    assert fleet.send(ALICE) == (CONNECT_KEEP, 2)
    pool = _Transport(KEEP_ALIVE)
    for conn in (pool.send(ALICE)[1], pool.send(BOB)[1]):
        pool.answer(conn)
    pool.policy.on_closed(0)
    assert pool.policy.drain() == [1] and pool.policy.pooled() == []


# Weighted towards what makes a connection reusable (200, kept, soon), so that reuse is tried often.
_OPERATIONS = st.lists(st.tuples(
    st.sampled_from(["send", "send", "answer", "answer", "server closes", "lost"]),
    st.sampled_from([ALICE, ALICE, BOB, None]),
    st.sampled_from(list(RequestKind)), st.sampled_from([200, 200, 200, 401]), st.booleans(),
    st.sampled_from([True, True, True, False]), st.sampled_from([0.5, 0.5, 5.0, IDLE_REUSE + 1])),
    min_size=10, max_size=80)


@settings(max_examples=300, deadline=None)
@given(operations=_OPERATIONS)
def test_a_connection_carries_one_request_at_a_time_and_only_its_own_sessions(operations):
    for mode in ConnectionMode:
        _check_invariants(mode, operations)


def _check_invariants(mode: ConnectionMode, operations: list[tuple]) -> None:
    policy: ConnectionPolicy[int] = ConnectionPolicy(mode)
    in_flight: dict[int, tuple] = {}  # connection → (session, kind) of its request
    idle: dict[int, tuple] = {}  # open connection the policy holds → (session, kind) of its last answer
    opened, now = 0, 0.0

    def closed(conns) -> None:
        for conn in conns:
            assert conn in idle  # the policy only closes what it holds
            del idle[conn]
            policy.on_closed(conn)

    for operation, session, kind, status, body, keep, wait in operations:
        now += wait
        if operation == "send":
            decision = policy.on_send(session, kind, KEY, now)
            closed(decision.close)
            if isinstance(decision, Reuse):
                conn = decision.conn
                assert conn in idle and conn not in in_flight and mode is not PER_REQUEST
                if mode is PER_SESSION:  # its own session's, and the Authenticate's for its TokenUpdate only
                    assert idle[conn] == (session, AUTHENTICATE if kind is TOKEN_UPDATE else COMMAND)
                del idle[conn]
            else:
                conn, opened = opened, opened + 1
            in_flight[conn] = (session, kind)
        elif operation == "answer" and in_flight:
            conn = next(iter(in_flight))
            sent_by, sent_kind = in_flight.pop(conn)
            answer = policy.on_answer(conn, sent_by, sent_kind, KEY, status=status, body_empty=not body, keep=keep,
                                      now=now)
            if isinstance(answer, Park):
                assert mode is PER_SESSION and answer.session == sent_by is not None and keep and status == 200
                closed(answer.close)
                idle[conn] = (sent_by, AUTHENTICATE if answer.token_update else COMMAND)
            elif answer == POOL:
                assert mode is KEEP_ALIVE and keep
                idle[conn] = (None, None)
            else:
                assert answer == CLOSE
        elif operation == "server closes" and idle:
            closed([sorted(idle)[status % len(idle)]])
        elif operation == "lost" and in_flight:  # failed before its answer: the transport tells the policy
            policy.on_closed(next(iter(in_flight)))
            del in_flight[next(iter(in_flight))]
        # What the policy remembers is only ever open connections: nothing leaks over a long run.
        assert set(policy._held) <= set(idle) | set(in_flight)
    assert policy.parked == (len(idle) if mode is PER_SESSION else 0)
    assert sorted(policy.drain()) == sorted(idle)  # exactly the open connections waiting for a request


def test_the_kind_of_a_request_comes_from_its_content_type_and_message():
    assert [RequestKind.of(CHECKIN_TYPE, name) for name in ("Authenticate", "TokenUpdate", "CheckOut")] == [
        AUTHENTICATE, TOKEN_UPDATE, CHECKIN]
    assert RequestKind.of(CONNECT_TYPE, "Authenticate") is COMMAND  # a status, whatever its name


def test_connection_modes_parse_and_the_keep_alive_alias():
    from twisted.internet.testing import MemoryReactorClock

    reactor = MemoryReactorClock()
    assert HTTPSTransport(reactor).connections is ConnectionMode.PER_SESSION
    assert HTTPSTransport(reactor, keep_alive=True).keep_alive
    assert HTTPSTransport(reactor, keep_alive=True).policy.mode is KEEP_ALIVE
    assert HTTPSTransport(reactor, connections="per-request").connections is ConnectionMode.PER_REQUEST
    with pytest.raises(ConnectionModeError, match="per-session, keep-alive"):
        HTTPSTransport(reactor, connections="per-device")


# Over real TLS on loopback ----------------------------------------------------------------------------------


class _SessionServer(protocol.Protocol):
    """Answers each PUT with `command N` (200) or, for a body of LAST, 200 with nothing; records which
    connection carried which body and the Connection header it came with."""

    def connectionMade(self) -> None:
        self.reader, self.number = RequestReader(body_limit=1 << 20), len(self.factory.connections)
        self.factory.connections.append(self)
        self.factory.open += 1

    def dataReceived(self, data: bytes) -> None:
        request = self.reader.feed(data)  # the project's one HTTP/1.1 codec reads the requests here too
        while request is not None:
            assert request.head.route is Route.DEVICE, "the transport sent a request the device path refuses"
            body = request.body
            self.factory.seen.append((self.number, body, request.head.headers.get(b"connection")))
            if body.startswith(b"status "):
                status = int(body.split()[1])
                self.transport.write(b"HTTP/1.1 %d No\r\nContent-Length: 2\r\n\r\nno" % status)
            else:
                answer = b"" if body == LAST else b"command %d" % len(self.factory.seen)
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                if body == b"answer then close":
                    self.transport.loseConnection()
            request = self.reader.feed(b"")

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
    factory.url = f"https://127.0.0.1:{port.getHost().port}/mdm/connect"
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
def test_over_tls_a_session_uses_one_connection_which_closes_when_the_server_answers_with_nothing(server):
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
        assert replies == [Reply(200, b"command 4"), Reply(200, b"command 5"), Reply(200, b"")]
        assert [number for number, _, _ in server.seen] == [0, 0, 0, 1, 1, 1]
        # keep-alive asked for while the session may go on; the client closes after the empty answer
        assert {header for _, _, header in server.seen} == {b"keep-alive"}
        yield transport.send(_put(server, b"no session"), server.roots)
        assert server.seen[-1] == (2, b"no session", b"close")  # without a session: its own, closed
    finally:
        yield _closed(transport, server)
    assert len(server.connections) == 3


def _checkin(server, message: str, body: bytes = LAST) -> SendRequest:
    return SendRequest(1, server.url, CHECKIN_TYPE, body, "sig", message)


@pytest_twisted.inlineCallbacks
def test_over_tls_a_token_update_takes_the_connection_of_the_authenticate_answered_200_just_before_it(server):
    from twisted.internet import reactor

    transport = HTTPSTransport(reactor)
    device = object()
    try:
        yield transport.send(_checkin(server, "Authenticate"), server.roots, session=device)
        assert transport.parked == 1
        yield transport.send(_checkin(server, "TokenUpdate"), server.roots, session=device)
        assert transport.parked == 0  # the pair is over: the TokenUpdate's connection closes
        yield transport.send(_checkin(server, "TokenUpdate"), server.roots, session=device)  # a later one
        yield transport.send(_put(server, b"idle"), server.roots, session=device)
        assert transport.parked == 1
        yield transport.send(_put(server, b"token update", CHECKIN_TYPE), server.roots, session=device)
        reply = yield transport.send(_put(server, b"status 500"), server.roots, session=device)
        assert reply.status == 500 and transport.parked == 0  # a failed answer ends the session
    finally:
        yield _closed(transport, server)
    assert [(number, header) for number, _, header in server.seen] == [
        (0, b"keep-alive"), (0, b"close"), (1, b"close"), (2, b"keep-alive"), (3, b"close"), (2, b"keep-alive")]


@pytest_twisted.inlineCallbacks
def test_over_tls_a_parked_connection_the_server_closes_is_forgotten_and_the_session_goes_on(server, monkeypatch):
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
