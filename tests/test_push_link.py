"""The push link: wire format round trips, and the server end wiring tokens to the APNs simulation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from apns_sim.device_link import PushLinkFactory
from mdm_protocol.errors import MessageError
from mdm_protocol.push_link import Attach, Delivery, Detach, decode_link, encode_link
from mdm_server.push import APNsSimulation, PushRequest

TOPIC = "com.apple.mgmt.External.5e6c0c3e-2f07-4d8e-9b5a-0c1b2d3e4f50"
tokens = st.lists(st.binary(min_size=32, max_size=32), max_size=5).map(tuple)


@given(tokens)
def test_attach_and_detach_round_trip(toks):
    for message in (Attach(TOPIC, toks), Detach(toks)):
        assert decode_link(encode_link(message).rstrip(b"\n")) == message


@given(st.binary(min_size=32, max_size=32), st.none() | st.floats(0, 4e9, allow_nan=False))
def test_delivery_round_trips_with_or_without_its_send_time(token, sent_at):
    message = Delivery(token, {"mdm": "m"}, sent_at)
    assert decode_link(encode_link(message).rstrip(b"\n")) == message


def test_a_delivery_from_a_server_that_sends_no_time_has_none():
    assert decode_link(b'{"op":"push","token":"0a","payload":{"mdm":"m"}}').sent_at is None


BAD_LINES = [b"", b"{", b'{"op":"attach"}', b'{"op":"fly"}', b'{"op":"detach","tokens":["zz"]}',
             *(b'{"op":"push","token":"0a","payload":{},"sent_at":%s}' % bad
               for bad in (b'"noon"', b"true", b"NaN", b"Infinity", b"[1]"))]


@pytest.mark.parametrize("line", BAD_LINES)
def test_malformed_lines_are_message_errors(line):
    with pytest.raises(MessageError):
        decode_link(line)


def test_server_end_delivers_pushes_with_their_send_time_and_holds_them_after_disconnect():
    clock = Clock()
    apns = APNsSimulation(clock=clock, delay=2.0)
    protocol = PushLinkFactory(apns).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    token = b"\x07" * 32
    protocol.dataReceived(encode_link(Attach(TOPIC, (token,))))
    clock.advance(12.5)
    assert apns.push(PushRequest(token, "magic", TOPIC)).accepted
    clock.advance(2)
    # Delivered after APNs' 2 s, stamped with the time the server pushed (what the fleet measures from).
    assert decode_link(transport.value().rstrip(b"\n")) == Delivery(token, {"mdm": "magic"}, 12.5)

    protocol.connectionLost(None)
    transport.clear()
    apns.push(PushRequest(token, "later", TOPIC))
    clock.advance(5)
    assert transport.value() == b""
    assert apns.stats.held_for_offline == 1
