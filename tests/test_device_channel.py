"""The lean device channel (its framing: tests/test_http1.py): hand-off of everything else to twisted.web,
answers identical to the twisted.web path, pipelining, idle timeout, and no crash on a failing service."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_kit import BACKENDS, CHECKIN, CONNECT, SignedDevice, make_server
from twisted.internet.testing import StringTransport

from device_sim.memory_http import MemoryHTTP
from mdm_protocol.cms import mdm_signature
from mdm_protocol.report import CommandReport, Status, encode_report
from mdm_server.web.device_channel import DeviceChannelFactory
from mdm_wire.http1 import read_responses

LIMIT = 1024 * 1024


def head(*lines: str, request: str = "PUT /mdm/connect HTTP/1.1") -> bytes:
    return ("\r\n".join([request, *lines]) + "\r\n\r\n").encode("latin-1")


# The channel, in memory with the real server -----------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param)


@pytest.fixture
def device(server):
    device = SignedDevice(server, "channel-device-0001")
    device.enroll()
    return device


def signed_idle(device: SignedDevice, *, close: bool = False) -> bytes:
    body = encode_report(CommandReport(Status.IDLE, udid=device.udid))
    lines = [f"Content-Type: {CONNECT}", f"Mdm-Signature: {mdm_signature(body, device.certificate, device.key)}",
             f"Content-Length: {len(body)}"] + (["Connection: close"] if close else [])
    return head("Host: localhost", *lines) + body


def connect(factory):
    transport = StringTransport()
    channel = factory.buildProtocol(None)
    channel.makeConnection(transport)
    return channel, transport


def responses(raw: bytes) -> list:
    return read_responses(raw)


def test_the_listening_factory_is_the_lean_channel_unless_turned_off(server, tmp_path):
    assert isinstance(server.http, DeviceChannelFactory)
    plain = make_server(tmp_path / "web", lean_device_http=False)
    assert plain.http is plain.site


def test_answers_match_the_twisted_web_path(server, device):
    lean, web = MemoryHTTP(server.http), MemoryHTTP(server.site)
    body = encode_report(CommandReport(Status.IDLE, udid=device.udid))
    good = {"Content-Type": CONNECT, "Mdm-Signature": mdm_signature(body, device.certificate, device.key)}
    cases = [
        (body, good),
        (body, {**good, "Content-Type": "text/plain"}),
        (body, {"Content-Type": CONNECT}),
        (b"<not a plist", {**good, "Mdm-Signature": mdm_signature(b"<not a plist", device.certificate, device.key)}),
        (body + b" ", good),
    ]
    for payload, headers in cases:
        ours, theirs = (http.request("PUT", "/mdm/connect", payload, headers) for http in (lean, web))
        assert (ours.status, ours.body, ours.headers.get("content-type")) == (
            theirs.status, theirs.body, theirs.headers.get("content-type"))
    assert [case.status for case in (lean.request("PUT", "/mdm/connect", *c) for c in cases)] == [
        200, 400, 400, 400, 400]


def test_a_response_carries_date_and_length_and_keeps_the_connection(server, device):
    channel, transport = connect(server.http)
    channel.dataReceived(signed_idle(device))
    raw = transport.value()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nDate: " in raw and b"Content-Length: 0\r\n" in raw
    assert not transport.disconnecting


def test_connection_close_is_honoured(server, device):
    channel, transport = connect(server.http)
    channel.dataReceived(signed_idle(device, close=True))
    assert b"Connection: close\r\n" in transport.value() and transport.disconnecting


def test_pipelined_requests_are_answered_in_order(server, device):
    channel, transport = connect(server.http)
    before = server.service.metrics.latency["connect"].count if "connect" in server.service.metrics.latency else 0
    channel.dataReceived(signed_idle(device) + signed_idle(device) + signed_idle(device))
    assert [r.status for r in responses(transport.value())] == [200, 200, 200]
    assert server.service.metrics.latency["connect"].count == before + 3


def test_any_split_of_the_byte_stream_gives_the_same_answers(server, device):
    # @given inside the test: pytest-twisted re-wraps a parametrized @given test once per parameter.
    @settings(max_examples=25, deadline=None)
    @given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
    def check(cuts):
        stream = signed_idle(device) + signed_idle(device)
        channel, transport = connect(server.http)
        points = sorted({cut % (len(stream) + 1) for cut in cuts})
        for start, end in zip([0, *points], [*points, len(stream)], strict=True):
            channel.dataReceived(stream[start:end])
        assert [r.status for r in responses(transport.value())] == [200, 200]

    check()


def test_a_later_non_device_request_hands_the_connection_to_twisted_web(server, device):
    channel, transport = connect(server.http)
    channel.dataReceived(signed_idle(device))
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
    first, second = responses(transport.value())
    assert first.status == 200 and first.body == b""
    assert second.status == 200 and b"mdmsim_" in second.body
    channel.dataReceived(signed_idle(device))  # twisted.web serves the rest of this connection's requests
    assert [r.status for r in responses(transport.value())] == [200, 200, 200]


def test_an_oversized_body_is_refused_by_twisted_web_and_changes_nothing(server, device):
    before = server.storage.get_device(device.udid)
    channel, transport = connect(server.http)
    channel.dataReceived(head(f"Content-Type: {CHECKIN}", f"Content-Length: {LIMIT + 1}", "Mdm-Signature: x"))
    channel.dataReceived(b"\0" * (LIMIT + 1))
    assert read_responses(transport.value())[0].status == 413
    assert server.storage.get_device(device.udid) == before


def test_a_silent_connection_times_out_but_a_reading_one_does_not(server, device):
    channel, transport = connect(server.http)
    server.clock.advance(25)
    channel.dataReceived(signed_idle(device)[:50])  # a client still sending (its head has 10 s: slow_clients)
    server.clock.advance(9)
    assert not transport.disconnecting  # 34 s after connecting: the idle timeout counts from the last read
    channel.dataReceived(signed_idle(device)[50:])
    assert responses(transport.value())[0].status == 200
    server.clock.advance(29)
    assert not transport.disconnecting
    server.clock.advance(1)
    assert transport.disconnecting


def test_a_failing_service_is_a_500_and_the_server_carries_on(server, device, monkeypatch):
    def broken(identity, body):
        raise RuntimeError("storage exploded")

    monkeypatch.setattr(server.service, "handle_command_report", broken)
    channel, transport = connect(server.http)
    channel.dataReceived(signed_idle(device))
    assert read_responses(transport.value())[0].status == 500 and transport.disconnecting
    monkeypatch.undo()
    channel, transport = connect(server.http)
    channel.dataReceived(signed_idle(device))
    assert read_responses(transport.value())[0].status == 200


def test_the_device_metrics_count_lean_requests(server, device):
    before = server.service.metrics.latency["connect"].count if "connect" in server.service.metrics.latency else 0
    channel, _ = connect(server.http)
    channel.dataReceived(signed_idle(device))
    assert server.service.metrics.latency["connect"].count == before + 1


def test_a_closing_connection_whose_peer_stops_reading_is_aborted(server, device):
    channel, transport = connect(server.http)
    aborted = []
    transport.abortConnection = lambda: aborted.append(server.clock.seconds())
    channel.dataReceived(signed_idle(device, close=True))
    answered = transport.value()
    channel.dataReceived(signed_idle(device))  # after Connection: close nothing more is read or answered
    assert transport.value() == answered and transport.disconnecting and not aborted
    server.clock.advance(15)
    assert aborted == [server.clock.seconds()]


def test_an_idle_timeout_also_ends_in_an_abort_if_the_close_never_completes(server):
    channel, transport = connect(server.http)
    aborted = []
    transport.abortConnection = lambda: aborted.append(True)
    server.clock.advance(30)
    assert transport.disconnecting and not aborted
    server.clock.advance(15)
    assert aborted == [True]


def test_a_lost_connection_leaves_no_timer_behind(server, device):
    pending = server.clock.pending()
    channel, transport = connect(server.http)
    channel.dataReceived(signed_idle(device, close=True))
    channel.connectionLost(None)
    assert server.clock.pending() == pending
