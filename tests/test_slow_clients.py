"""Slowloris on a fake clock: a request's head and body have deadlines on both HTTP edges (the lean device
channel and twisted.web's), so one byte every 5 s no longer holds a connection; a client address over its
connection cap is dropped at once. Clients sending whole requests are never affected.
"""

from __future__ import annotations

import pytest
from server_kit import CONNECT, SignedDevice, make_server
from test_device_channel import head, responses, signed_idle
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mdm_server.web.client_limits import ClientLimits, Refused
from mdm_server.web.device_channel import DeviceChannel

REMOTE = IPv4Address("TCP", "203.0.113.7", 50000)


@pytest.fixture(params=["lean", "twisted-web"])
def server(tmp_path, request):
    limits = ClientLimits(per_client=3)
    return make_server(tmp_path, lean_device_http=request.param == "lean", client_limits=limits)


@pytest.fixture
def device(server):
    device = SignedDevice(server, "slow-client-device-01")
    device.enroll()
    return device


class Peer:
    """One connection to the server's listening factory, in memory."""

    def __init__(self, server, addr=REMOTE) -> None:
        self.server, self.transport = server, StringTransport()
        self.aborted: list[float] = []
        self.transport.abortConnection = lambda: self.aborted.append(server.clock.seconds())
        self.channel = server.http.buildProtocol(addr)
        self.channel.makeConnection(self.transport)

    def drip(self, data: bytes, every: float) -> float:
        """Send `data` one byte at a time, `every` seconds apart, until the server closes; the time it took."""
        start = self.server.clock.seconds()
        for byte in data:
            if self.transport.disconnecting:
                break
            self.channel.dataReceived(bytes([byte]))
            self.server.clock.advance(every)
        return self.server.clock.seconds() - start

    def lost(self) -> None:
        self.channel.connectionLost(None)


def test_one_byte_every_5_s_of_a_head_is_closed_at_the_header_deadline(server, device):
    peer = Peer(server)
    took = peer.drip(signed_idle(device), every=5.0)
    assert peer.transport.disconnecting and took == 10.0  # two bytes, then the 10 s head deadline
    assert peer.transport.value() == b"" and not peer.aborted
    server.clock.advance(15)
    assert peer.aborted  # a peer that never reads our close is aborted (its descriptor freed)


def test_a_slow_head_for_the_admin_api_is_closed_too(server):
    peer = Peer(server)
    took = peer.drip(b"GET /api/v1/devices HTTP/1.1\r\nHost: localhost\r\n" + b"X-Pad: y\r\n" * 10, every=3.0)
    assert peer.transport.disconnecting and took == 12.0  # closed at 10 s, seen after the fourth byte's wait


def test_one_byte_every_5_s_of_a_device_body_is_closed_at_the_body_deadline(server, device):
    peer = Peer(server)
    peer.channel.dataReceived(head("Host: localhost", f"Content-Type: {CONNECT}", "Content-Length: 1000"))
    took = peer.drip(b"x" * 1000, every=5.0)
    assert peer.transport.disconnecting and took == 30.0
    assert b"200" not in peer.transport.value()


def test_a_slow_admin_body_is_closed_at_the_body_deadline(server):
    peer = Peer(server)
    peer.channel.dataReceived(head("Host: localhost", "Content-Type: application/json", "Content-Length: 500",
                                   request="POST /api/v1/commands HTTP/1.1"))
    took = peer.drip(b"{" * 500, every=5.0)
    assert peer.transport.disconnecting and 30.0 <= took <= 35.0


def test_whole_requests_every_5_s_keep_one_connection_open_for_minutes(server, device):
    peer = Peer(server)
    for _ in range(36):  # three minutes
        peer.channel.dataReceived(signed_idle(device))
        server.clock.advance(5)
    assert not peer.transport.disconnecting
    assert [r.status for r in responses(peer.transport.value())] == [200] * 36


def test_a_request_split_over_reads_in_time_is_answered(server, device):
    peer = Peer(server)
    request = signed_idle(device)
    for part in (request[:30], request[30:200], request[200:]):
        peer.channel.dataReceived(part)
        server.clock.advance(3)  # 9 s for the whole request: inside both deadlines
    assert [r.status for r in responses(peer.transport.value())] == [200]
    peer.drip(signed_idle(device)[:2], every=4.0)  # the next request's head gets its own 10 s
    assert not peer.transport.disconnecting
    server.clock.advance(2)
    assert peer.transport.disconnecting


def test_a_client_address_over_its_connection_cap_is_dropped_at_once(server, device):
    peers = [Peer(server) for _ in range(3)]
    assert all(not p.transport.disconnecting for p in peers)
    over = server.http.buildProtocol(REMOTE)
    assert isinstance(over, Refused)
    transport = StringTransport()
    over.makeConnection(transport)
    assert transport.disconnecting  # aborted: no TLS handshake, no descriptor kept
    other = Peer(server, IPv4Address("TCP", "198.51.100.9", 40000))  # another address has its own cap
    loopback = [Peer(server, IPv4Address("TCP", "127.0.0.1", 1000 + n)) for n in range(5)]  # never capped
    assert not any(p.transport.disconnecting for p in [other, *loopback])
    peers[0].lost()
    again = Peer(server)
    again.channel.dataReceived(signed_idle(device, close=True))
    assert responses(again.transport.value())[0].status == 200
    assert server.site.connections.open(REMOTE.host) == 3


def test_a_hand_off_to_twisted_web_is_counted_once(server):
    if not server.config.lean_device_http:
        pytest.skip("only the lean channel hands connections to twisted.web")
    peer = Peer(server)
    assert isinstance(peer.channel, DeviceChannel)
    peer.channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert b"200 OK" in peer.transport.value()
    assert server.site.connections.open(REMOTE.host) == 1
    peer.lost()
    assert server.site.connections.open(REMOTE.host) == 0
