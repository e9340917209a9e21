"""The enrollment download: one GET, the answer framed by Content-Length, chunks or the close, typed failures;
over real TLS from a server whose CA the downloader does not trust (the user taps through the warning).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web import resource, server

from device_sim.enroll_fetch import EnrollmentFetchError, fetch_enrollment, with_user
from mdm_server.pki import server_tls_files
from mdm_server.web.tls import server_options

PROFILE = b"<?xml version='1.0'?><plist>" + bytes(range(256)) * 12 + b"</plist>"


def started(url: str = "http://mdm.example.com:8080/mdm/enroll?token=t", **options):
    """A download on a memory reactor, its connection made to a string transport (which `abortConnection`
    marks `disconnected`, and `loseConnection` only `disconnecting`)."""
    reactor = MemoryReactorClock()
    d = fetch_enrollment(reactor, url, **options)
    host, port, factory, timeout, _ = reactor.tcpClients[-1]
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return reactor, d, protocol, transport, (host, port, timeout)


def outcome(d: defer.Deferred):
    results: list = []
    d.addBoth(results.append)
    assert results, "the download has not finished"
    return results[0]


def content_length(body: bytes, status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")


def test_sends_one_get_with_host_path_query_and_close():
    _, _, _, transport, (host, port, _) = started("http://mdm.example.com:8080/mdm/enroll?token=t&user=a%20b")
    assert (host, port) == ("mdm.example.com", 8080)
    head = transport.value().decode()
    assert head.startswith("GET /mdm/enroll?token=t&user=a%20b HTTP/1.1\r\nHost: mdm.example.com:8080\r\n")
    assert "Connection: close\r\n" in head and head.endswith("\r\n\r\n")


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 400), max_size=12), framing=st.sampled_from(["length", "chunked"]),
       chunk=st.integers(1, 5000))
def test_the_profile_arrives_whole_however_the_answer_is_split(cuts, framing, chunk):
    _, d, protocol, transport, _ = started()
    answer = content_length(PROFILE) if framing == "length" else chunked(PROFILE, chunk)
    position = 0
    for cut in cuts:
        protocol.dataReceived(answer[position:position + cut])
        position += cut
        if position >= len(answer):
            break
    assert not d.called or position >= len(answer)
    protocol.dataReceived(answer[position:])
    assert outcome(d) == PROFILE
    assert transport.disconnecting and not transport.disconnected  # closed, not aborted: no wait for the server


def test_a_body_without_length_ends_at_the_close():
    _, d, protocol, _, _ = started()
    protocol.dataReceived(b"HTTP/1.0 200 OK\r\nContent-Type: application/x-apple-aspen-config\r\n\r\n" + PROFILE)
    assert not d.called
    protocol.connectionLost(Failure(ConnectionError("closed")))
    assert outcome(d) == PROFILE


def test_non_200_fails_with_status_and_the_servers_reason():
    _, d, protocol, transport, _ = started()
    protocol.dataReceived(content_length(b"enrollment needs admin credentials or ?token=<enroll token>\n",
                                         "401 Unauthorized"))
    failure = outcome(d)
    assert failure.check(EnrollmentFetchError)
    assert failure.value.reason == ("enrollment download answered HTTP 401: enrollment needs admin credentials "
                                    "or ?token=<enroll token>")
    assert transport.disconnected


@pytest.mark.parametrize("answer, reason", [
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", "Content-Length 'lots' is not a number"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "is not a number"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabcdef", "is not a number"),
    (b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n", "not an HTTP answer"),
])
def test_what_is_not_http_fails_clearly(answer, reason):
    _, d, protocol, transport, _ = started()
    protocol.dataReceived(answer)
    failure = outcome(d)
    assert failure.check(EnrollmentFetchError) and reason in failure.value.reason
    assert transport.disconnected


def test_a_connection_closed_early_fails():
    _, d, protocol, _, _ = started()
    protocol.dataReceived(content_length(PROFILE)[:300])
    protocol.connectionLost(Failure(ConnectionError("reset")))
    failure = outcome(d)
    assert failure.check(EnrollmentFetchError) and "before the whole profile" in failure.value.reason


def test_an_endless_answer_is_cut_off(monkeypatch):
    monkeypatch.setattr("device_sim.enroll_fetch.MAX_PROFILE", 1000)
    _, d, protocol, transport, _ = started()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1200)
    assert "larger than 1000 bytes" in outcome(d).value.reason and transport.disconnected


def test_no_answer_in_time_fails_and_drops_the_connection():
    reactor, d, _, transport, (_, _, connect_timeout) = started(timeout=5.0)
    assert connect_timeout == 5.0
    reactor.advance(4.9)
    assert not d.called
    reactor.advance(0.2)
    failure = outcome(d)
    assert failure.check(EnrollmentFetchError) and failure.value.reason == "no answer within 5 s"
    assert transport.disconnected


def test_a_timeout_while_connecting_stops_the_attempt():
    reactor = MemoryReactorClock()
    d = fetch_enrollment(reactor, "https://127.0.0.1:1/mdm/enroll", timeout=2.0)
    reactor.advance(2.0)
    assert outcome(d).check(EnrollmentFetchError)
    assert reactor.connectors[-1].stoppedConnecting


def test_a_callers_own_cancel_stays_a_cancel():
    _, d, _, transport, _ = started()
    d.cancel()
    assert outcome(d).check(defer.CancelledError) and transport.disconnected


def test_a_refused_connection_fails_with_the_reason():
    reactor = MemoryReactorClock()
    d = fetch_enrollment(reactor, "http://127.0.0.1:9/")
    factory = reactor.tcpClients[-1][2]
    factory.clientConnectionFailed(reactor.connectors[-1], Failure(ConnectionRefusedError("refused")))
    failure = outcome(d)
    assert failure.check(EnrollmentFetchError) and failure.value.reason.startswith("cannot connect: ")


@pytest.mark.parametrize("url", ["ftp://host/x", "/mdm/enroll", "https:///x", "https://host:99999/x"])
def test_urls_that_cannot_be_downloaded_are_refused_up_front(url):
    failure = outcome(fetch_enrollment(MemoryReactorClock(), url))
    assert failure.check(EnrollmentFetchError) and url in failure.value.reason


def test_the_answer_waits_for_the_whole_head():
    # Was parse_response(closed=False/True); the framing itself is tests/test_http1.py's.
    _, d, protocol, _, _ = started()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Len")
    assert not d.called
    protocol.connectionLost(Failure(ConnectionError("closed")))
    failure = outcome(d)
    assert failure.check(EnrollmentFetchError) and "before a whole HTTP head" in failure.value.reason


def test_with_user_adds_the_user_to_either_kind_of_url():
    assert with_user("https://h/mdm/enroll?token=t", "a b") == "https://h/mdm/enroll?token=t&user=a+b"
    assert with_user("https://h/mdm/enroll", "u@x") == "https://h/mdm/enroll?user=u%40x"


# --- over real TLS --------------------------------------------------------------------------------------------


class Profiles(resource.Resource):
    """/length answers with Content-Length, /chunked with chunks (twisted.web's framing when it has no length)."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/x-apple-aspen-config")
        if request.path == b"/chunked":
            for start in range(0, len(PROFILE), 700):
                request.write(PROFILE[start:start + 700])
            request.finish()
            return server.NOT_DONE_YET
        handle = request.channel.transport.getHandle()
        self.sni, self.group = handle.get_servername(), handle.get_group_name()
        return PROFILE


@pytest_twisted.inlineCallbacks
def test_downloads_over_tls_from_a_server_it_does_not_trust(tmp_path):
    from datetime import UTC, datetime

    from twisted.internet import reactor  # pytest-twisted's reactor: real sockets on loopback

    tls = server_tls_files(tmp_path, ("localhost", "127.0.0.1"), now=datetime.now(UTC))
    options = server_options(tls.certificate_pem, tls.private_key_pem, tls.ca_certificate_pem)
    profiles = Profiles()
    port = reactor.listenSSL(0, server.Site(profiles), options, interface="127.0.0.1")
    number = port.getHost().port
    try:
        assert (yield fetch_enrollment(reactor, f"https://127.0.0.1:{number}/length")) == PROFILE
        assert profiles.sni is None  # no SNI for an IP address (RFC 6066)
        # Safari on iOS 9-17 offers X25519 first, not OpenSSL 4's X25519MLKEM768 (dearer on both sides)
        assert profiles.group == "x25519"
        assert (yield fetch_enrollment(reactor, f"https://localhost:{number}/chunked")) == PROFILE
        assert (yield fetch_enrollment(reactor, f"https://localhost:{number}/length")) == PROFILE
        assert profiles.sni == b"localhost"
    finally:
        yield port.stopListening()
