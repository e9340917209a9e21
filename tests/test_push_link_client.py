"""The fleet end of the push link: lines split anywhere still deliver each push once, to the right device;
malformed lines are skipped, an oversized one closes the link."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from device_sim.push_link_client import PushLinkClient
from mdm_protocol.push_link import MAX_LINE, Attach, Delivery, decode_link, encode_link

TOPIC = "com.apple.mgmt.External.test"


def _connected(tokens: list[bytes]) -> tuple[PushLinkClient, object, StringTransport, list]:
    client, got = PushLinkClient(), []
    for token in tokens:
        client.register(token, TOPIC, lambda t, payload: got.append((t, payload)))
    link = client.buildProtocol(None)
    transport = StringTransport()
    link.makeConnection(transport)
    return client, link, transport, got


def test_connecting_attaches_every_registered_device():
    tokens = [bytes([n]) * 32 for n in range(3)]
    _, _, transport, _ = _connected(tokens)
    (line,) = transport.value().splitlines()
    assert decode_link(line) == Attach(TOPIC, tuple(tokens))


@settings(max_examples=150, deadline=None)
@given(pushes=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 99)), max_size=30),
       cuts=st.lists(st.integers(0, 4000), max_size=10), junk=st.booleans())
def test_pushes_split_anywhere_arrive_once_each_in_order(pushes, cuts, junk):
    tokens = [bytes([n]) * 32 for n in range(5)]
    client, link, transport, got = _connected(tokens)
    stream = b"".join(encode_link(Delivery(tokens[device], {"mdm": f"m{n}"})) for device, n in pushes)
    if junk:
        stream = b"not json\n" + stream + b"{\"op\":\"dance\"}\n"
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(stream)], strict=True):
        link.dataReceived(stream[start:end])
    assert got == [(tokens[device], {"mdm": f"m{n}"}) for device, n in pushes]
    assert client.delivered == len(pushes) and not transport.disconnecting


def test_an_oversized_line_closes_the_link_and_pushes_before_it_still_arrive():
    token = b"\x07" * 32
    _, link, transport, got = _connected([token])
    link.dataReceived(encode_link(Delivery(token, {"mdm": "x"})) + b"x" * (MAX_LINE + 1))
    assert got == [(token, {"mdm": "x"})] and transport.disconnecting
    link.dataReceived(b"\n" + encode_link(Delivery(token, {"mdm": "after"})))  # the link is closing
    assert got == [(token, {"mdm": "x"})]


def test_a_push_for_an_unknown_token_is_dropped():
    client, link, _, got = _connected([b"\x01" * 32])
    link.dataReceived(encode_link(Delivery(b"\x02" * 32, {"mdm": "x"})))
    assert got == [] and client.delivered == 0


def test_the_servers_send_time_reaches_the_device_only_when_the_link_carries_it():
    client, got = PushLinkClient(), []
    client.register(b"\x01" * 32, TOPIC, lambda token, payload, sent_at=None: got.append(sent_at))
    link = client.buildProtocol(None)
    link.makeConnection(StringTransport())
    link.dataReceived(encode_link(Delivery(b"\x01" * 32, {"mdm": "x"}, 1764190000.25)))
    link.dataReceived(encode_link(Delivery(b"\x01" * 32, {"mdm": "x"})))  # an older server: no time
    assert got == [1764190000.25, None]
