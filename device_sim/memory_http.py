"""HTTP/1.1 to a twisted.web Site in the same process, with no sockets: bytes in, parsed response out.

Scenarios and tests drive the real resource tree (request parsing, body caps, routing) through this.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.testing import StringTransport
from twisted.web.server import Site


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    headers: dict[str, str]  # lower-case names; last value wins
    body: bytes


class MemoryHTTP:
    """Sends each request on a fresh channel (like iOS's new connection per session), or with `keep_alive`
    on one persistent channel (a third cheaper: virtual-time fleets), and parses the answer."""

    def __init__(self, site: Site, host: str = "localhost", *, keep_alive: bool = False) -> None:
        self.site = site
        self.host = host
        self.keep_alive = keep_alive
        self._channel: tuple[object, StringTransport] | None = None

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, *,
        chunked: bool = False,
    ) -> HTTPResponse:
        """One request; `chunked` sends the body with Transfer-Encoding: chunked and no Content-Length."""
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", framing]
        if not self.keep_alive:
            lines.append("Connection: close")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return self.send(head + (_chunk(body) if chunked else body))

    def send(self, raw: bytes) -> HTTPResponse:
        """Feed raw request bytes to a channel and parse what the Site wrote back."""
        if self.keep_alive:
            return self._send_persistent(raw)
        transport = StringTransport()
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        channel.connectionLost(None)
        return parse_response(transport.value())

    def _send_persistent(self, raw: bytes) -> HTTPResponse:
        if self._channel is None or self._channel[1].disconnecting:  # first use, or the idle timeout closed it
            transport = StringTransport()
            channel = self.site.buildProtocol(None)
            channel.makeConnection(transport)
            self._channel = (channel, transport)
        channel, transport = self._channel
        channel.dataReceived(raw)
        written = transport.value()
        transport.clear()
        return parse_response(written)


def _chunk(body: bytes, size: int = 64 * 1024) -> bytes:
    pieces = (body[i : i + size] for i in range(0, len(body), size))
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def parse_response(raw: bytes) -> HTTPResponse:
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    body = rest[: int(length)] if length is not None else _dechunk(rest)
    return HTTPResponse(int(status_line.split(" ", 2)[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out, position = bytearray(), 0
    while True:
        line_end = data.index(b"\r\n", position)
        size = int(data[position:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        start = line_end + 2
        out += data[start : start + size]
        position = start + size + 2
