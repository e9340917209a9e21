"""HTTP/1.1 to a twisted.web Site in the same process, with no sockets: bytes in, parsed response out.

Scenarios and tests drive the real resource tree (request parsing, body caps, routing) through this.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from mdm_wire.http1 import Response, encode_request, read_responses

HTTPResponse = Response  # status, headers (lower-case names; last value wins), body, keep_alive


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
        fields = [(b"Host", self.host.encode("latin-1"))]
        if not self.keep_alive:
            fields.append((b"Connection", b"close"))
        fields += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
        return self.send(encode_request(method.encode("latin-1"), path.encode("latin-1"), fields, body,
                                        chunked=chunked))

    def send(self, raw: bytes) -> HTTPResponse:
        """Feed raw request bytes to a channel and parse what the Site wrote back."""
        if self.keep_alive:
            return self._send_persistent(raw)
        transport = StringTransport()
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        channel.connectionLost(None)
        return _one(transport.value())

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
        return _one(written)


def _one(raw: bytes) -> HTTPResponse:
    # A channel answers each request whole; a closed or idle channel ends what it wrote.
    (response,) = read_responses(raw)
    return response
