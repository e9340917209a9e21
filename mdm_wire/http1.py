"""The project's one HTTP/1.1 codec, sans IO: its shared rules (numbers, fields, keep-alive), responses read for
the fleet's clients, requests encoded. `http1_server` holds the server's side. RFC 9112; h11 is the test oracle.

Framing (RFC 9112 §6.3): a response with Transfer-Encoding: chunked is read by its chunks even when it also has a
Content-Length (the RFC's "Transfer-Encoding overrides", as h11 does), and its connection is not reused (the RFC
calls such a message a possible smuggling attempt). Content-Length is ASCII digits only; without either framing a
response ends when the connection closes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

MAX_HEAD = 64 * 1024  # twisted.web allows 16 KiB of headers; an RSA Mdm-Signature is ~3.5 KB of it
MAX_BODY = 16 * 1024 * 1024  # an MDM command (a profile with certificates) is far smaller
MAX_CHUNK_LINE = 1024  # a chunk-size line with its extensions
HEX_DIGITS = b"0123456789abcdefABCDEF"
# RFC 9110 §5.6.2 tchar: what a header name may be made of; `bytes.translate` deletes them in C.
TOKEN = bytes(sorted(set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")))
# What field values and the start line may hold (RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB), and CR LF, which
# the check counts: one translate call deletes them all.
FIELD_TEXT = bytes(range(0x20, 0x7f)) + bytes(range(0x80, 0x100)) + b"\t"


class HTTPError(ValueError):
    """Bytes that are not HTTP/1.1 as this codec accepts it; `reason` says what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLarge(HTTPError):
    """A head or body over the reader's limit."""


class Truncated(HTTPError):
    """The connection closed inside a message; `in_body`: after its head."""

    def __init__(self, reason: str, *, in_body: bool) -> None:
        super().__init__(reason)
        self.in_body = in_body


def decimal(text: str | bytes, most: int) -> int:
    """A status code, Content-Length or similar: ASCII digits only, at most `most` of them.

    int() also takes "-3", "+5", " 5", "5_0" and Unicode digits such as "²": a Content-Length of -3 once
    truncated a body silently.
    """
    if not (0 < len(text) <= most and text.isascii() and text.isdigit()):
        raise HTTPError(f"not a decimal number: {text[:20]!r}")
    return int(text)


def header_fields(block: bytes, single: frozenset[bytes]) -> tuple[bytes, dict[bytes, bytes]] | None:
    """The start line of a head (blank line excluded) and its fields: lower-cased names, stripped values, a
    repeated field keeping its last value. None when a line is not `token: value` (obsolete folding included), a
    name in `single` repeats, or a control byte (a lone CR or LF too) appears: where parsers could disagree (a lone
    LF starts a new field for twisted.web), this one does not guess."""
    if block.translate(None, FIELD_TEXT).replace(b"\r\n", b""):
        return None
    lines = block.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, TOKEN):
            return None
        name = name.lower()
        if name in single and name in headers:
            return None
        headers[name] = value.strip()
    return lines[0], headers


def _has_token(value: bytes, token: bytes) -> bool:
    return token in value.lower() and token in (part.strip() for part in value.lower().split(b","))


def keeps_alive(version: bytes, connection: bytes) -> bool:
    """Whether a message of this HTTP version and Connection header leaves its connection open (RFC 9112 §9.3)."""
    if not connection:
        return version == b"HTTP/1.1"
    if version == b"HTTP/1.1":
        return not _has_token(connection, b"close")
    return _has_token(connection, b"keep-alive")


# Responses: the fleet's HTTPS client, the enrollment download, the in-memory transport ------------------------

RESPONSE_SINGLE = frozenset({b"content-length", b"transfer-encoding"})


class _Framing(enum.Enum):
    LENGTH = "length"  # Content-Length bytes (0 for 204 and 304)
    CHUNKED = "chunked"
    CLOSE = "close"  # whatever arrives until the server closes


_LENGTH, _CHUNKED, _CLOSE = _Framing.LENGTH, _Framing.CHUNKED, _Framing.CLOSE  # one lookup less per response
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


class Response(NamedTuple):  # a tuple, not a frozen dataclass: built once per answer on the fleet's hot path
    status: int
    fields: dict[bytes, bytes]  # lower-case names; last value wins
    body: bytes
    keep_alive: bool = True  # the server leaves the connection open for another request

    @property
    def headers(self) -> dict[str, str]:
        """The fields as text (latin-1), for callers that read them; the fleet's client never does."""
        return {name.decode("latin-1"): value.decode("latin-1") for name, value in self.fields.items()}


class ResponseReader:
    """Responses off one connection's bytes, in order: `feed` returns each once it is whole, `connection_closed`
    the one the close ends. 1xx interim answers are skipped, as RFC 9110 §15.2 asks of clients."""

    __slots__ = ("max_body", "max_head", "_buffer", "_searched", "_head", "_framing", "_length", "_body",
                 "_trailers")

    def __init__(self, *, max_body: int = MAX_BODY, max_head: int = MAX_HEAD) -> None:
        self.max_body, self.max_head = max_body, max_head
        # The bytes not read yet: a read's own bytes while they are all there is (the usual answer arrives in
        # one read and is parsed where it lies), a bytearray once reads must be joined.
        self._buffer: bytes | bytearray = b""
        self._searched = 0  # where to go on searching for the end of the head
        self._head: tuple[int, dict[bytes, bytes], bool] | None = None  # status, fields, keep-alive
        self._framing = _CLOSE
        self._length = 0  # LENGTH: the body's size
        self._body: bytearray | None = None  # CHUNKED: the chunks so far
        self._trailers = False  # CHUNKED: the last chunk is read, its trailer section is not

    def feed(self, data: bytes) -> Response | None:
        """Add bytes; the next complete response, or None. Call with b"" for a second one already buffered."""
        buffer = self._buffer
        if not buffer:
            self._buffer = data
        elif type(buffer) is bytes:
            self._buffer = bytearray(buffer) + data
        else:
            buffer += data
        while self._head is None:
            if not self._read_head():
                return None
        framing = self._framing
        if framing is _LENGTH:
            buffer, length = self._buffer, self._length
            if len(buffer) < length:
                return None
            self._buffer = buffer[length:]
            return self._done(bytes(buffer[:length]))
        if framing is _CHUNKED:
            return self._read_chunks()
        if len(self._buffer) > self.max_body:
            raise TooLarge(f"body larger than {self.max_body} bytes")
        return None

    def connection_closed(self) -> Response | None:
        """The response the close completes (one framed by it), None if the close fell between responses."""
        if self._head is None:
            if not self._buffer:
                return None
            raise Truncated(f"the connection closed before a whole HTTP head: {bytes(self._buffer[:60])!r}",
                            in_body=False)
        if self._framing is not _CLOSE:
            raise Truncated("the connection closed before the whole body arrived", in_body=True)
        body, self._buffer = bytes(self._buffer), b""
        return self._done(body)

    def _read_head(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", self._searched)
        if end < 0:
            self._searched = max(0, len(buffer) - 3)
            if len(buffer) > self.max_head:
                raise TooLarge(f"response head larger than {self.max_head} bytes")
            return False
        block = bytes(buffer[:end])
        self._buffer, self._searched = buffer[end + 4:], 0
        fields = header_fields(block, RESPONSE_SINGLE)
        line = fields[0] if fields is not None else block.partition(b"\r\n")[0]
        status = _status(line)
        if fields is None:
            raise HTTPError(f"malformed HTTP head: {block[:80].decode('latin-1')!r}")
        if status < 200:
            return True  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        headers = fields[1]
        keep = keeps_alive(line[:8], headers.get(b"connection", b""))
        encoding, length = headers.get(b"transfer-encoding"), headers.get(b"content-length")
        if status in (204, 304):
            self._framing, self._length = _LENGTH, 0
        elif encoding is not None:
            if encoding.lower() != b"chunked":
                raise HTTPError(f"Transfer-Encoding {encoding[:40].decode('latin-1')!r} is not chunked")
            self._framing, self._body, self._trailers = _CHUNKED, bytearray(), False
            keep = keep and length is None  # with a Content-Length too: read by its chunks, then close
        elif length is not None:
            if not (0 < len(length) <= 18 and length.isdigit()):  # bytes.isdigit: ASCII digits only
                raise HTTPError(f"Content-Length {length[:40].decode('latin-1')!r} is not a number")
            self._framing, self._length = _LENGTH, int(length)
            if self._length > self.max_body:
                raise TooLarge(f"body larger than {self.max_body} bytes")
        else:
            self._framing, keep = _CLOSE, False
        self._head = (status, headers, keep)
        return True

    def _read_chunks(self) -> Response | None:
        buffer, body, position = self._buffer, self._body, 0
        assert body is not None  # set when the head said chunked
        try:
            while True:
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    if len(buffer) - position > MAX_CHUNK_LINE:
                        raise HTTPError("a chunk line without its end")
                    return None
                if self._trailers:  # after the last chunk: trailer fields, read past, then a blank line
                    done, position = line_end == position, line_end + 2
                    if done:
                        return self._done(bytes(body))
                    continue
                size = _chunk_size(bytes(buffer[position:line_end]))
                start = line_end + 2
                if size == 0:
                    position, self._trailers = start, True
                    continue
                if len(body) + size > self.max_body:
                    raise TooLarge(f"body larger than {self.max_body} bytes")
                if len(buffer) < start + size + 2:
                    return None
                if buffer[start + size:start + size + 2] != b"\r\n":
                    raise HTTPError("a chunk is longer than its size says")
                body += buffer[start:start + size]
                position = start + size + 2
        finally:
            if position:
                self._buffer = buffer[position:]

    def _done(self, body: bytes) -> Response:
        assert self._head is not None  # only a read head has a body to finish
        status, fields, keep = self._head
        self._head, self._body, self._trailers = None, None, False
        return Response(status, fields, body, keep)


def _status(line: bytes) -> int:
    """The status code of `HTTP/1.x NNN[ reason]`: three ASCII digits, never 101 (no upgrades here)."""
    code = line[9:12]
    if line[:8] not in _VERSIONS or line[8:9] != b" " or not code.isdigit() or line[12:13] not in (b"", b" "):
        raise HTTPError(f"not an HTTP answer: {line[:60].decode('latin-1')!r}")
    status = int(code)
    if status < 100 or status == 101:
        raise HTTPError(f"status {status}: not an answer this client can read")
    return status


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip(b" \t")
    if not 0 < len(text) <= 15 or text.strip(HEX_DIGITS):
        raise HTTPError(f"bad chunk size {text[:20]!r}")
    return int(text, 16)


def read_responses(raw: bytes, *, max_body: int = MAX_BODY) -> list[Response]:
    """Every response in the bytes a server wrote on a connection that then closed (or ended at a boundary)."""
    reader, out = ResponseReader(max_body=max_body), []
    response = reader.feed(raw)
    while response is not None:
        out.append(response)
        response = reader.feed(b"")
    last = reader.connection_closed()
    return out if last is None else [*out, last]


# Encoders ----------------------------------------------------------------------------------------------------


def encode_request(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes = b"", *,
                   chunked: bool = False) -> bytes:
    """One whole HTTP/1.1 request: `headers` in their order, then the framing: chunked if asked, else a
    Content-Length, left out for a bodiless GET or HEAD as browsers do."""
    lines = [b"%s %s HTTP/1.1\r\n" % (method, target)]
    lines += [b"%s: %s\r\n" % field for field in headers]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n\r\n")
        return b"".join(lines) + encode_chunks(body)
    if body or method not in (b"GET", b"HEAD"):
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines) + body


def encode_chunks(body: bytes, size: int = 64 * 1024) -> bytes:
    """`body` as chunks of `size` bytes and the last, empty one."""
    pieces = (body[i:i + size] for i in range(0, len(body), size))
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
