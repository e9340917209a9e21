"""The one HTTP/1.1 codec against h11, the field's sans-IO reference, on the same bytes: every message under every
split, generated heads, bodies and chunk layouts, and the odd cases (CL with TE, bad numbers, overruns, limits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm_wire.http1 import (
    MAX_HEAD,
    HTTPError,
    Response,
    ResponseReader,
    TooLarge,
    Truncated,
    decimal,
    encode_chunks,
    encode_request,
    read_responses,
)
from mdm_wire.http1_server import RequestReader, Route, encode_response, parse_request_head

LIMIT = 1024 * 1024


# Oracles: what h11 makes of the same bytes -------------------------------------------------------------------


def h11_responses(pieces: list[bytes], *, close: bool, count: int = 1) -> list[Response] | str:
    """The responses h11 reads for `count` GETs sent on one connection, or its error's text."""
    connection = h11.Connection(h11.CLIENT)
    out: list[Response] = []
    try:
        connection.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        connection.send(h11.EndOfMessage())
        for piece in pieces:
            connection.receive_data(piece)
        if close:
            connection.receive_data(b"")
        head, body = None, b""
        while len(out) < count:
            event = connection.next_event()
            if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
                break
            if isinstance(event, h11.Response):
                head, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                keep = connection.their_state not in (h11.MUST_CLOSE, h11.CLOSED)
                out.append(Response(head.status_code, dict(head.headers), body, keep))
                if len(out) < count:
                    connection.start_next_cycle()
                    connection.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
                    connection.send(h11.EndOfMessage())
    except h11.ProtocolError as exc:
        return f"h11: {exc}"
    return out


def ours(pieces: list[bytes], *, close: bool) -> list[Response] | str:
    reader, out = ResponseReader(), []
    try:
        for piece in pieces:
            response = reader.feed(piece)
            while response is not None:
                out.append(response)
                response = reader.feed(b"")
        if close:
            last = reader.connection_closed()
            if last is not None:
                out.append(last)
    except HTTPError as exc:
        return f"ours: {exc.reason}"
    return out


def view(responses: list[Response] | str) -> list[tuple[int, dict[str, str], bytes]] | str:
    """What both readers must agree on (h11 lower-cases a Transfer-Encoding value; keep-alive is compared apart)."""
    if isinstance(responses, str):
        return responses
    return [(r.status, {k: v.lower() if k == b"transfer-encoding" else v for k, v in r.fields.items()}, r.body)
            for r in responses]


def splits(raw: bytes) -> list[list[bytes]]:
    """The message whole, byte by byte, and cut in two at every point."""
    return [[raw], [raw[i:i + 1] for i in range(len(raw))], *([raw[:i], raw[i:]] for i in range(1, len(raw)))]


def same_as_h11(raw: bytes, *, close: bool = False, count: int = 1) -> list[Response]:
    """Ours and h11's reading agree under every split; the responses (h11 ignores HTTP/1.0 keep-alive)."""
    expected = h11_responses([raw], close=close, count=count)
    assert not isinstance(expected, str), expected
    for pieces in splits(raw):
        got = ours(pieces, close=close)
        assert view(got) == view(expected)
    return got


# Responses ----------------------------------------------------------------------------------------------------


CASES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nServer: x\r\n\r\nno\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2;ext=1\r\nhe\r\n3\r\nllo\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
]


@pytest.mark.parametrize("raw", CASES)
def test_every_split_of_a_framed_response_reads_as_h11_reads_it(raw):
    (response,) = same_as_h11(raw)
    assert response.keep_alive


def test_a_body_framed_by_the_close_ends_with_it():
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    assert ours([raw], close=False) == []
    (response,) = same_as_h11(raw, close=True)
    assert response.body == b"until the end" and not response.keep_alive


def test_http_1_0_and_connection_close_do_not_keep_the_connection():
    for raw, keep in [(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
                      (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", False),
                      (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
                      (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True)]:
        (response,) = same_as_h11(raw)
        assert response.keep_alive is keep, raw


def test_pipelined_responses_come_out_one_at_a_time_in_order():
    raw = CASES[0] + CASES[3] + CASES[2]
    got = same_as_h11(raw, count=3)
    assert [r.status for r in got] == [200, 200, 404] and [r.body for r in got] == [b"hello", b"hello", b"no\n"]


def test_transfer_encoding_beats_content_length_and_the_connection_is_not_reused():
    # The review's probe: three disagreeing parsers gave b'5\r\n' or b'hello'. RFC 9112 §6.3: TE overrides CL.
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    (response,) = same_as_h11(raw)
    assert response.body == b"hello" and not response.keep_alive


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\nContent-Length: +6\r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\nContent-Length: 6_0\r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nabcdef",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 -20 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n: empty name\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\nContent-Length: 0\r\n\r\n",  # a lone LF: some parsers split a line there
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
], ids=["negative", "plus", "underscore", "superscript", "empty", "19-digits", "two-lengths", "status-negative",
        "status-4-digits", "status-superscript", "http2", "not-http", "negative-chunk", "chunk-overrun",
        "chunk-garbage", "chunk-0x", "gzip", "gzip-chunked", "space-in-name", "no-colon", "empty-name", "lone-lf",
        "lone-cr", "nul", "upgrade"])
def test_what_is_not_http_is_an_error_never_a_truncated_body(raw):
    for pieces in splits(raw):
        got = ours(pieces, close=True)
        assert isinstance(got, str) and got.startswith("ours: "), (pieces, got)


def test_h11_refuses_what_ours_refuses_but_obsolete_line_folding():
    # The refusals above are h11's too, except obs-fold, which h11 still unfolds and a client may refuse.
    folded = b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"
    assert isinstance(ours([folded], close=True), str) and not isinstance(h11_responses([folded], close=True), str)
    for raw in [b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabcdef",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n"]:
        assert isinstance(h11_responses([raw], close=True), str)


def test_messages_name_what_was_wrong():
    def reason(raw: bytes) -> str:
        with pytest.raises(HTTPError) as caught:
            ResponseReader().feed(raw)
        return caught.value.reason

    assert reason(b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n") == "Content-Length 'lots' is not a number"
    assert reason(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").startswith("not an HTTP answer")
    assert reason(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").startswith("bad chunk size")
    assert reason(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n") == (
        "a chunk is longer than its size says")


def test_a_close_inside_a_message_is_truncated_and_says_where():
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Len") is None
    with pytest.raises(Truncated, match="before a whole HTTP head") as caught:
        reader.connection_closed()
    assert not caught.value.in_body
    for raw in [b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"]:
        reader = ResponseReader()
        assert reader.feed(raw) is None
        with pytest.raises(Truncated, match="before the whole body") as caught:
            reader.connection_closed()
        assert caught.value.in_body
    assert ResponseReader().connection_closed() is None  # a close between responses is no error


def test_limits_on_the_head_and_the_body():
    with pytest.raises(TooLarge):
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD)
    with pytest.raises(TooLarge):  # refused from its Content-Length, before any of it arrives
        ResponseReader(max_body=10).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(TooLarge):  # a chunk over the limit, refused from its size line
        ResponseReader(max_body=10).feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n")
    reader = ResponseReader(max_body=10)
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n")
    with pytest.raises(TooLarge):
        reader.feed(b"5\r\n")
    with pytest.raises(TooLarge):
        ResponseReader(max_body=10).feed(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11)
    with pytest.raises(HTTPError):
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000)
    assert ResponseReader(max_body=10).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + b"x" * 10)


def test_read_responses_takes_everything_a_closed_connection_wrote():
    raw = CASES[0] + b"HTTP/1.1 500 Internal Server Error\r\n\r\nboom"
    assert [(r.status, r.body) for r in read_responses(raw)] == [(200, b"hello"), (500, b"boom")]


# Generated responses ------------------------------------------------------------------------------------------

TOKEN_TEXT = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
FRAMING = {"content-length", "transfer-encoding", "connection"}
names = st.text(TOKEN_TEXT, min_size=1, max_size=12).filter(lambda name: name.lower() not in FRAMING)
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20).map(lambda v: v.strip())
fields = st.lists(st.tuples(names, values), max_size=5)


def _chunks(body: bytes, sizes: list[int], extension: bool) -> bytes:
    out, position = b"", 0
    for size in sizes:
        piece, position = body[position:position + size], position + size
        if piece:
            out += b"%x%s\r\n%s\r\n" % (len(piece), b";a=b" if extension else b"", piece)
    if position < len(body):
        out += b"%X\r\n%s\r\n" % (len(body) - position, body[position:])
    return out + b"0\r\n\r\n"


@st.composite
def responses(draw) -> tuple[bytes, bool]:
    status = draw(st.sampled_from([200, 201, 400, 401, 404, 500, 503]))
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    head = [f"HTTP/1.1 {status} {draw(st.sampled_from(['OK', 'Whatever', '']))}".rstrip()]
    head += [f"{name}: {value}" for name, value in draw(fields)]
    if draw(st.booleans()):
        head.append(f"Connection: {draw(st.sampled_from(['close', 'keep-alive', 'Keep-Alive, x']))}")
    if framing == "length":
        head.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        payload = _chunks(body, draw(st.lists(st.integers(1, 40), max_size=6)), draw(st.booleans()))
    else:
        payload = body
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload, framing == "close"


@settings(max_examples=200, deadline=None)
@given(message=responses(), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_generated_responses_read_as_h11_reads_them_under_any_split(message, cuts):
    raw, close = message
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    pieces = [raw[start:end] for start, end in zip([0, *points], [*points, len(raw)], strict=True)]
    got, expected = ours(pieces, close=close), h11_responses([raw], close=close)
    assert view(got) == view(expected)
    if not close:  # h11 leaves a close-delimited response's keep-alive to the close itself
        assert [r.keep_alive for r in got] == [r.keep_alive for r in expected]


@settings(max_examples=100, deadline=None)
@given(message=responses())
def test_generated_responses_survive_every_two_way_split(message):
    raw, close = message
    expected = h11_responses([raw], close=close)
    assert all(view(ours(pieces, close=close)) == view(expected) for pieces in splits(raw)[:2] + splits(raw)[2::7])


@settings(max_examples=200, deadline=None)
@given(message=responses(), position=st.integers(0, 500), byte=st.integers(0, 255))
def test_a_corrupted_response_is_refused_whenever_h11_refuses_it(message, position, byte):
    raw, close = message
    position %= len(raw)
    corrupt = raw[:position] + bytes([byte]) + raw[position + 1:]
    expected, got = h11_responses([corrupt], close=close), ours([corrupt], close=close)
    if isinstance(got, list) and got:  # what we accept, h11 reads the same (ours may refuse more: obs-fold, 1xx)
        assert view(got) == view(expected)


# Requests: the lean device channel's head parser and reader ----------------------------------------------------


def head(*lines: str, request: str = "PUT /mdm/connect HTTP/1.1") -> bytes:
    return ("\r\n".join([request, *lines]) + "\r\n\r\n").encode("latin-1")


def h11_request(raw: bytes) -> tuple[bytes, bytes, dict[bytes, bytes], bytes, bool] | str:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    body, request = b"", None
    try:
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                keep = connection.their_state not in (h11.MUST_CLOSE, h11.CLOSED)
                return (request.method, request.target, dict(request.headers), body, keep)
            else:
                return "incomplete"
    except h11.ProtocolError as exc:
        return f"h11: {exc}"


def read_request(pieces: list[bytes]):
    reader = RequestReader(LIMIT)
    for piece in pieces:
        request = reader.feed(piece)
        if request is not None:
            return request
    return None


@st.composite
def device_requests(draw) -> bytes:
    body = draw(st.binary(max_size=120))
    target = draw(st.sampled_from(["/mdm/connect", "/mdm/checkin", "/mdm/checkin?x=1"]))
    lines = [f"{draw(st.sampled_from(['PUT', 'POST']))} {target} HTTP/1.1", "Host: localhost"]
    lines += [f"{name}: {value}" for name, value in draw(fields)
              if name.lower() not in ("host", "content-type", "mdm-signature", "expect")]
    lines += ["Content-Type: application/x-apple-aspen-mdm", f"Content-Length: {len(body)}"]
    if draw(st.booleans()):
        lines.append(f"Connection: {draw(st.sampled_from(['close', 'keep-alive']))}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@settings(max_examples=150, deadline=None)
@given(raw=device_requests(), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_a_device_request_reads_as_h11_reads_it_under_any_split(raw, cuts):
    method, target, headers, body, keep = h11_request(raw)
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    request = read_request([raw[start:end] for start, end in zip([0, *points], [*points, len(raw)], strict=True)])
    assert request.head.route is Route.DEVICE
    assert (request.head.method, request.head.path, request.head.headers, request.body, request.head.keep_alive) == (
        method, target.split(b"?")[0], headers, body, keep)


def test_every_split_of_a_device_request_gives_the_request():
    raw = encode_request(b"PUT", b"/mdm/connect", [(b"Host", b"x"), (b"Mdm-Signature", b"abc")], b"<plist/>")
    for pieces in splits(raw):
        request = read_request(pieces)
        assert (request.head.route, request.body, request.head.header(b"mdm-signature")) == (
            Route.DEVICE, b"<plist/>", "abc")
    assert h11_request(raw)[3] == b"<plist/>"


@settings(max_examples=200, deadline=None)
@given(raw=device_requests(), position=st.integers(0, 500), byte=st.sampled_from(b" \t\r\n:@\x7f-0aZ"))
def test_a_corrupted_request_goes_to_the_web_whenever_h11_refuses_it(raw, position, byte):
    end = raw.index(b"\r\n\r\n") + 4
    position %= end
    corrupt = raw[:position] + bytes([byte]) + raw[position + 1:]
    expected, request = h11_request(corrupt), read_request([corrupt])
    # h11 also refuses an HTTP/1.1 request without Host; the lean path, like twisted.web, does not judge Host.
    if isinstance(expected, str) and expected.startswith("h11") and "Host" not in expected:
        assert request is None or request.head.route is Route.WEB
    elif request is not None and request.head.route is Route.DEVICE and not isinstance(expected, str):
        assert (request.head.method, request.head.headers, request.body) == (expected[0], expected[2], expected[3])


def test_pipelined_requests_come_out_in_order_and_a_web_one_leaves_its_bytes():
    one = encode_request(b"PUT", b"/mdm/connect", [(b"Host", b"x")], b"1")
    two = encode_request(b"PUT", b"/mdm/checkin", [(b"Host", b"x")], b"22")
    web = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    reader = RequestReader(LIMIT)
    first = reader.feed(one + two + web + one)
    assert (first.head.path, first.body) == (b"/mdm/connect", b"1")
    assert reader.feed(b"").body == b"22"
    assert reader.feed(b"").head.route is Route.WEB
    assert reader.unread() == web + one and reader.unread() == b""


def test_a_request_split_inside_its_body_keeps_the_first_bytes():
    raw = encode_request(b"PUT", b"/mdm/connect", [(b"Host", b"x")], b"0123456789")
    reader = RequestReader(LIMIT)
    assert reader.feed(raw[:-4]) is None
    assert reader.feed(raw[-4:] + raw[:5]).body == b"0123456789"
    assert reader.feed(raw[5:]).body == b"0123456789"


# The lean path's routing (moved from tests/test_device_channel.py with their assertions)


def test_a_device_put_is_framed_by_its_content_length():
    raw = head("Host: x", "Content-Type: application/x-apple-aspen-mdm", "Mdm-Signature: abc", "Content-Length: 12")
    parsed = parse_request_head(raw + b"x" * 12, LIMIT)
    assert parsed.route is Route.DEVICE
    assert (parsed.method, parsed.path, parsed.length, parsed.size) == (b"PUT", b"/mdm/connect", 12, len(raw))
    assert parsed.header(b"mdm-signature") == "abc" and parsed.keep_alive


def test_every_prefix_of_a_head_is_incomplete():
    raw = head("Host: x", "Content-Length: 3")
    assert all(parse_request_head(raw[:cut], LIMIT) is None for cut in range(len(raw)))
    assert parse_request_head(raw, LIMIT) is not None


@pytest.mark.parametrize(("lines", "request_line", "keep_alive"), [
    ((), "PUT /mdm/checkin HTTP/1.1", True),
    (("Connection: close",), "PUT /mdm/checkin HTTP/1.1", False),
    ((), "PUT /mdm/checkin HTTP/1.0", False),
    (("Connection: Keep-Alive",), "POST /mdm/checkin?x=1 HTTP/1.0", True),
])
def test_keep_alive_follows_the_http_version_and_connection_header(lines, request_line, keep_alive):
    parsed = parse_request_head(head(*lines, request=request_line), LIMIT)
    assert parsed.route is Route.DEVICE and parsed.keep_alive is keep_alive and parsed.length == 0


@pytest.mark.parametrize("raw", [
    head(request="GET /mdm/enroll HTTP/1.1"),
    head(request="PUT /api/v1/commands HTTP/1.1"),
    head(request="DELETE /mdm/connect HTTP/1.1"),
    head("Transfer-Encoding: chunked"),
    head("Expect: 100-continue", "Content-Length: 5"),
    head(f"Content-Length: {LIMIT + 1}"),
    head("Content-Length: -1"),
    head("Content-Length: 5", "Content-Length: 6"),
    head("Content-Type: a", " folded"),
    head("Bad Header: x"),
    head("no colon"),
    head(request="PUT /mdm/connect HTTP/2.0"),
    head(request="PUT  /mdm/connect HTTP/1.1"),
    b"\x16\x03\x01" * (MAX_HEAD // 3 + 1),  # TLS bytes on a plain port: no blank line, ever
], ids=["other-path", "admin-put", "method", "chunked", "expect", "over-cap", "negative-length", "two-lengths",
        "obs-fold", "space-in-name", "no-colon", "http2", "double-space", "no-end"])
def test_what_the_lean_path_does_not_own_goes_to_the_web(raw):
    assert parse_request_head(raw, LIMIT).route is Route.WEB


def test_a_content_length_too_long_to_be_a_number_goes_to_the_web():
    assert parse_request_head(head("Content-Length: " + "9" * 5000), LIMIT).route is Route.WEB


def test_the_head_parser_decides_device_or_web():
    assert parse_request_head(head("Host: x", "Content-Length: 3"), LIMIT).route is Route.DEVICE
    assert parse_request_head(head("Host@: x"), LIMIT).route is Route.WEB  # not a token: twisted.web judges it
    assert parse_request_head(b"\x16\x03\x01" * (MAX_HEAD // 3 + 1), LIMIT).route is Route.WEB


# Numbers and encoders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["-3", "+5", " 5", "5 ", "5_0", "²", "", "1234"])
def test_decimal_takes_ascii_digits_only(text):
    with pytest.raises(HTTPError):
        decimal(text, 3)
    assert decimal("042", 3) == 42 and decimal(b"7", 1) == 7


def test_encoded_requests_and_responses_read_back_through_h11():
    raw = encode_request(b"PUT", b"/mdm/connect", [(b"Host", b"x"), (b"Content-Type", b"a/b")], b"body")
    assert h11_request(raw) == (b"PUT", b"/mdm/connect", {b"host": b"x", b"content-type": b"a/b",
                                                         b"content-length": b"4"}, b"body", True)
    chunked = encode_request(b"POST", b"/x", [(b"Host", b"x")], b"a" * 70_000, chunked=True)
    assert h11_request(chunked)[3] == b"a" * 70_000
    assert b"Content-Length" not in encode_request(b"GET", b"/", [(b"Host", b"x")])
    response = encode_response(200, b"hi", "text/plain", b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n", close=True)
    (expected,) = h11_responses([response], close=False)
    assert ResponseReader().feed(response) == expected == Response(200, {
        b"date": b"Thu, 01 Jan 1970 00:00:00 GMT", b"content-length": b"2", b"content-type": b"text/plain",
        b"connection": b"close"}, b"hi", False)
    assert expected.headers["content-type"] == "text/plain"
    assert encode_chunks(b"abc", 2) == b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"


# Purity -------------------------------------------------------------------------------------------------------

PROBE = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
ours = ("mdm_protocol", "mdm_server", "device_sim", "mdmsim", "mdm_world", "scenarios")
print(json.dumps(dict(
    twisted=sorted(k for k in sys.modules if k.split(".")[0] in ("twisted", "OpenSSL")),
    ours=sorted(k for k in sys.modules if k.split(".")[0] in ours))))
"""


def imported_by(*modules: str) -> dict:
    # A fresh interpreter, so modules other tests imported cannot hide a leak.
    result = subprocess.run([sys.executable, "-c", PROBE.format(modules=modules)], capture_output=True, text=True,
                            timeout=120, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_codec_is_pure_and_mdm_wire_imports_nothing_of_ours():
    assert imported_by("mdm_wire.http1", "mdm_wire.http1_server") == {"twisted": [], "ours": []}
    edges = imported_by("mdm_wire.http1", "mdm_wire.http1_server", "mdm_wire.tls_client", "mdm_wire.tls_server")
    assert edges["ours"] == [] and "twisted.internet" in edges["twisted"]  # the probe sees what is imported
