"""HTTP/1.1 framing for the device endpoints' lean path, sans IO: request heads in, response bytes out.

Only a well-formed device PUT framed by Content-Length within the body cap is served here; anything else is
`Route.WEB`, and the channel hands the connection to twisted.web, which answers it exactly as before.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from email.utils import formatdate

DEVICE_PATHS = frozenset({b"/mdm/checkin", b"/mdm/connect"})
DEVICE_METHODS = frozenset({b"PUT", b"POST"})
SINGLE = frozenset({b"content-length", b"content-type", b"mdm-signature", b"host"})  # twice: not ours to judge
MAX_HEAD = 64 * 1024  # twisted.web allows 16 KiB of headers; an RSA Mdm-Signature is ~3.5 KB of it
REASONS = {200: b"OK", 400: b"Bad Request", 500: b"Internal Server Error"}


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


def parse_head(buffer: bytes | bytearray, body_limit: int) -> RequestHead | None:
    """The request head at the start of `buffer`, or None while it is incomplete.

    Malformed heads, bodies over `body_limit`, chunked bodies, `Expect`, other paths and methods all route to
    the web: twisted.web's refusals (400, 413 while discarding the body, header limits) stay the only ones.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return TO_WEB if len(buffer) > MAX_HEAD else None
    lines = bytes(buffer[:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return TO_WEB
    method, target, version = parts
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or b" " in name or b"\t" in name:
            return TO_WEB  # not a token before the colon: includes obsolete line folding
        name, value = name.lower(), value.strip()
        if name in headers and name in SINGLE:
            return TO_WEB
        headers[name] = value
    path = target.split(b"?", 1)[0]
    length = headers.get(b"content-length", b"0")
    if (method not in DEVICE_METHODS or path not in DEVICE_PATHS or b"transfer-encoding" in headers
            or b"expect" in headers or not length.isdigit() or len(length) > 18 or int(length) > body_limit):
        return TO_WEB
    connection = headers.get(b"connection", b"").lower()
    keep_alive = b"close" not in connection if version == b"HTTP/1.1" else b"keep-alive" in connection
    return RequestHead(Route.DEVICE, method, path, headers, int(length), keep_alive, end + 4)


class DateHeader:
    """The Date header RFC 9110 asks an origin server for, formatted once a second, not once a request."""

    def __init__(self, now=time.time) -> None:
        self._now, self._second, self._line = now, -1, b""

    def line(self) -> bytes:
        second = int(self._now())
        if second != self._second:
            self._second = second
            self._line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        return self._line


def response_bytes(status: int, body: bytes, content_type: str | None, date_line: bytes, *,
                   close: bool = False) -> bytes:
    """One whole HTTP/1.1 response: status line, Date, Content-Length, optional type and close, body."""
    head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Unknown")), date_line,
            b"Content-Length: %d\r\n" % len(body)]
    if content_type:
        head.append(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n")
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body
