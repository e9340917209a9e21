"""The server's side of the one HTTP/1.1 codec, sans IO: request heads and bodies for the lean device channel,
which routes anything it cannot serve exactly to twisted.web, and the whole responses it writes.

Only a well-formed device PUT framed by Content-Length within the body cap is served there; anything else is
`Route.WEB`, and the channel hands the connection, with every byte read so far, to twisted.web.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import NamedTuple

from .http1 import MAX_HEAD, header_fields, keeps_alive

REASONS = {200: b"OK", 400: b"Bad Request", 500: b"Internal Server Error", 503: b"Service Unavailable"}
DEVICE_PATHS = frozenset({b"/mdm/checkin", b"/mdm/connect"})
DEVICE_METHODS = frozenset({b"PUT", b"POST"})
SINGLE = frozenset({b"content-length", b"content-type", b"mdm-signature", b"host"})  # twice: not ours to judge


class Route(enum.Enum):
    DEVICE = "device"  # served by the lean path
    WEB = "web"  # handed to twisted.web, with every byte read so far


@dataclass(frozen=True, slots=True)
class RequestHead:
    route: Route
    method: bytes
    path: bytes
    headers: dict[bytes, bytes]  # lower-cased names; a repeated header keeps its last value
    length: int  # the body's Content-Length (0 without one)
    keep_alive: bool
    size: int  # bytes of the head, blank line included

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


TO_WEB = RequestHead(Route.WEB, b"", b"", {}, 0, False, 0)


def parse_request_head(buffer: bytes | bytearray, body_limit: int) -> RequestHead | None:
    """The request head at the start of `buffer`, or None while it is incomplete.

    Malformed heads, bodies over `body_limit`, chunked bodies, `Expect`, other paths and methods all route to
    the web: twisted.web's refusals (400, 413 while discarding the body, header limits) stay the only ones.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return TO_WEB if len(buffer) > MAX_HEAD else None
    fields = header_fields(bytes(buffer[:end]), SINGLE)
    if fields is None:
        return TO_WEB
    start_line, headers = fields
    parts = start_line.split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return TO_WEB
    method, target, version = parts
    path = target.split(b"?", 1)[0]
    length = headers.get(b"content-length", b"0")
    if (method not in DEVICE_METHODS or path not in DEVICE_PATHS or b"transfer-encoding" in headers
            or b"expect" in headers or not length.isdigit() or len(length) > 18 or int(length) > body_limit):
        return TO_WEB
    keep_alive = keeps_alive(version, headers.get(b"connection", b""))
    return RequestHead(Route.DEVICE, method, path, headers, int(length), keep_alive, end + 4)


class Waiting(enum.Enum):
    """What a reader holds between requests: the deadline a server puts on a slow client depends on it."""

    NOTHING = "nothing"  # between requests
    HEAD = "head"  # part of a request head
    BODY = "body"  # a whole head, part of its body


class Request(NamedTuple):  # a tuple, not a frozen dataclass: built once per request on the hot path
    head: RequestHead  # Route.WEB: the reader's unread bytes belong to twisted.web from here on
    body: bytes


class RequestReader:
    """Requests off one connection's bytes, in order (pipelined ones too): `feed` returns the next whole one."""

    def __init__(self, body_limit: int) -> None:
        self.body_limit = body_limit
        self._buffer = bytearray()
        self._head: RequestHead | None = None

    def feed(self, data: bytes) -> Request | None:
        """Add bytes; the next complete request, or None. Call with b"" for the next of several pipelined."""
        if self._buffer:
            self._buffer += data
            buffer: bytes | bytearray = self._buffer
        else:
            buffer = data  # the usual case, a whole request in one read: parsed where it lies, no copy first
        head = self._head
        if head is None:
            head = parse_request_head(buffer, self.body_limit)
            if head is None or head.route is Route.WEB:
                self._keep(buffer)
                return None if head is None else Request(head, b"")
            self._head = head
        end = head.size + head.length
        if len(buffer) < end:
            self._keep(buffer)
            return None
        body = bytes(buffer[head.size:end])
        self._head = None
        if buffer is self._buffer:
            del buffer[:end]
        elif len(buffer) > end:
            self._buffer += buffer[end:]
        return Request(head, body)

    def waiting(self) -> Waiting:
        if self._head is not None:
            return Waiting.BODY
        return Waiting.HEAD if self._buffer else Waiting.NOTHING

    def _keep(self, buffer: bytes | bytearray) -> None:
        if buffer is not self._buffer:
            self._buffer += buffer

    def unread(self) -> bytes:
        """Every byte fed and not returned as a request (for the hand-off to twisted.web); the reader empties."""
        pending, self._buffer, self._head = bytes(self._buffer), bytearray(), None
        return pending


class DateHeader:
    """The Date header RFC 9110 asks an origin server for, formatted once a second, not once a request."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now, self._second, self._line = now, -1, b""

    def line(self) -> bytes:
        second = int(self._now())
        if second != self._second:
            self._second = second
            self._line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        return self._line


def encode_response(status: int, body: bytes, content_type: str | None, date_line: bytes, *,
                    close: bool = False, retry_after: int | None = None) -> bytes:
    """One whole HTTP/1.1 response: status line, Date, Content-Length, optional type, Retry-After and close, body."""
    head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown")), date_line,
            b"Content-Length: %d\r\n" % len(body)]
    if content_type:
        head.append(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n")
    if retry_after is not None:
        head.append(b"Retry-After: %d\r\n" % retry_after)
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body
