"""The gateway's HPACK codec agrees with hpack's own: any header lists, Huffman or not, indexed or not, through
table evictions and size updates, decode to the same headers; our answers decode with hpack's decoder."""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder, HPACKDecodingError
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm_wire.hpack_codec import AnswerEncoder, FastDecoder, decode_huffman

_names = st.sampled_from([b":path", b":method", b"apns-id", b"apns-topic", b"content-type", b"x-custom", b"a" * 200])
_values = st.binary(max_size=300)
_blocks = st.lists(st.lists(st.tuples(_names, _values), max_size=12), max_size=8)


@settings(max_examples=200, deadline=None)
@given(blocks=_blocks, huffman=st.booleans(), table_size=st.sampled_from([4096, 256, 0]))
def test_fast_decoder_decodes_what_hpack_encodes_exactly_as_hpack_does(blocks, huffman, table_size):
    encoder, ours, theirs = Encoder(), FastDecoder(), Decoder()
    encoder.header_table_size = table_size  # a size update at the start of the next block
    for headers in blocks:
        block = encoder.encode(headers, huffman=huffman)
        assert ours.decode(block, raw=True) == [tuple(h) for h in theirs.decode(block, raw=True)]
        assert ours.header_table_size == theirs.header_table_size


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=40))
def test_huffman_decoding_matches_hpack_even_on_garbage(data):
    from hpack.huffman_table import decode_huffman as reference

    try:
        expected = reference(data)
    except HPACKDecodingError:
        with pytest.raises(HPACKDecodingError):
            decode_huffman(data)
    else:
        assert decode_huffman(data) == expected


def test_a_truncated_block_is_a_decoding_error():
    block = Encoder().encode([(b"apns-id", b"0" * 36)], huffman=False)
    with pytest.raises(HPACKDecodingError):
        FastDecoder().decode(block[:-5], raw=True)


def test_answers_decode_with_hpacks_decoder_and_signal_a_table_size_change():
    encoder, decoder = AnswerEncoder(), Decoder()
    answers = [[(":status", "200"), ("apns-id", "2b5e7f0c-7d2a-4c55-9d2e-0f1e2d3c4b5a")],
               [(":status", "410"), ("apns-id", "x"), ("content-type", "application/json"), ("content-length", "52")]]
    for headers in answers:
        assert decoder.decode(encoder.encode(headers)) == headers
    assert not decoder.header_table.dynamic_entries  # nothing ever indexed
    encoder.header_table_size = 0
    decoder.max_allowed_table_size = 0
    assert decoder.decode(encoder.encode(answers[0])) == answers[0] and decoder.header_table_size == 0


def _provider_bytes(count: int) -> tuple[bytes, list[bytes]]:
    """What a provider sends for `count` pushes (preface and SETTINGS first), and the tokens pushed."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    tokens = [bytes([n + 1]) * 32 for n in range(count)]
    for token in tokens:
        stream = client.get_next_available_stream_id()
        client.send_headers(stream, [(":method", "POST"), (":scheme", "https"), (":authority", "localhost"),
                                     (":path", "/3/device/" + token.hex()), ("apns-push-type", "mdm")])
        client.send_data(stream, b'{"mdm":"magic"}', end_stream=True)
    return client.data_to_send(), tokens


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_requests_cut_anywhere_by_tcp_are_each_answered_once(cuts):
    from twisted.internet.task import Clock

    from apns_sim.gateway import Gateway
    from apns_sim.h2_connection import ProviderConnection
    from apns_sim.provider_api import Environment, ProviderIdentity

    topic = "com.apple.mgmt.External.test"
    data, tokens = _provider_bytes(12)
    clock = Clock()
    clock.advance(1_700_000_000)
    gateway, delivered = Gateway(clock), []
    for token in tokens[:10]:  # the last two are unknown: 400 BadDeviceToken
        gateway.register(token, topic)
        gateway.attach(token, lambda token, payload, sent_at: delivered.append(token))
    server = ProviderConnection(gateway.answer, ProviderIdentity(topic, Environment.PRODUCTION, 0, 2e10, True))
    server.initiate()
    points = sorted({0, *[c % (len(data) + 1) for c in cuts], len(data)})
    for begin, end in zip(points, points[1:], strict=False):
        server.receive(data[begin:end])
    assert server.answered == 12 and not server.closed
    assert delivered == tokens[:10] and gateway.stats.refused == {"BadDeviceToken": 2}


def test_a_request_with_an_empty_header_name_is_answered_not_crashed():
    """HPACK can carry an empty name and inbound validation is off: the connection must still answer (before,
    `name[0]` raised IndexError out of dataReceived)."""
    import h2.config
    import h2.connection
    from twisted.internet.task import Clock

    from apns_sim.gateway import Gateway
    from apns_sim.h2_connection import ProviderConnection
    from apns_sim.provider_api import Environment, ProviderIdentity

    topic = "com.apple.mgmt.External.test"
    clock = Clock()
    clock.advance(1_700_000_000)
    server = ProviderConnection(Gateway(clock).answer, ProviderIdentity(topic, Environment.PRODUCTION, 0, 2e10, True))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                                                  normalize_outbound_headers=False))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/3/device/" + b"ab" * 32),
                            (b":authority", b"api.push.apple.com"), (b"", b"empty"), (b"apns-topic", topic.encode())])
    client.send_data(1, b'{"mdm": "magic"}', end_stream=True)
    server.initiate()
    answer = server.receive(client.data_to_send())
    events = client.receive_data(answer)
    assert any(type(event).__name__ == "ResponseReceived" for event in events) and not server.closed
