"""The twisted.web Site for the MDM server: a body cap enforced while reading, before any parsing.

A body over the cap is discarded as it streams in and answered 413; slow clients hit the Site's idle timeout,
a request's head and body their own deadlines, and a client address over its connection cap is dropped.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.web import resource, server

from .client_limits import ClientConnections, ClientLimits, GuardedChannel, Refused

DEFAULT_BODY_LIMIT = 1024 * 1024  # SPEC/issue: 1 MiB for device endpoints
DEFAULT_IDLE_TIMEOUT = 30.0


class CappedRequest(server.Request):
    """A Request that refuses bodies larger than `body_limit` without buffering them."""

    body_limit = DEFAULT_BODY_LIMIT
    body_too_large = False

    def gotLength(self, length: int | None) -> None:
        self._body_size = 0
        if length is not None and length > self.body_limit:
            self.body_too_large = True
            self.content = io.BytesIO()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        self._body_size += len(data)
        if self._body_size > self.body_limit:  # chunked bodies announce no length
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """The admin API reads only JSON: keep Twisted from parsing form bodies into `args` (or answering a
        malformed multipart body with a bare 400) so JsonAPI can refuse the content type itself (415)."""
        if not path.startswith(b"/api/"):
            super().requestReceived(command, path, version)
            return
        self._held_content_type = self.requestHeaders.getRawHeaders(b"content-type")
        self.requestHeaders.removeHeader(b"content-type")
        super().requestReceived(command, path, version)  # ends by calling process()

    def process(self) -> None:
        held = getattr(self, "_held_content_type", None)
        if held is not None:
            self.requestHeaders.setRawHeaders(b"content-type", held)
        if not self.body_too_large:
            super().process()
            return
        self.site = self.channel.site
        self.setResponseCode(413)
        message = f"request body exceeds the limit of {self.body_limit} bytes"
        if self.uri.startswith(b"/api/"):  # the admin API answers every failure in JSON
            self.setHeader(b"content-type", b"application/json")
            self.write(json.dumps({"code": "body_too_large", "message": message}).encode() + b"\n")
        else:
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.write(f"{message}\n".encode())
        self.finish()


class MDMSite(server.Site):
    """A Site with request deadlines and a per-address connection cap, without Twisted's access log line.

    That line goes to Twisted's legacy log, which `mdmsim serve` never starts (it logs through `logging`):
    about 30 µs a request, some 15% of the web layer's own cost, for output nobody could read.
    """

    protocol = GuardedChannel  # HTTP/1.1 only (the port offers no h2), so no generic h2-or-1.1 wrapper
    limits = ClientLimits()
    connections = ClientConnections(0)

    def buildProtocol(self, addr: Any) -> Protocol:
        counted = self.connections.admit(addr)
        if counted is None:
            return Refused()
        channel = self.build_channel(addr)
        channel.connections, channel.counted = self.connections, counted
        return channel

    def build_channel(self, addr: Any) -> GuardedChannel:
        """A channel outside the cap: for a connection the lean device channel already counted."""
        channel = super().buildProtocol(addr)
        channel.limits = self.limits
        return channel

    def log(self, request: server.Request) -> None:
        pass


def make_site(
    root: resource.Resource, *, body_limit: int = DEFAULT_BODY_LIMIT, timeout: float = DEFAULT_IDLE_TIMEOUT,
    reactor=None, limits: ClientLimits | None = None,
) -> MDMSite:
    request_class = type("CappedRequest", (CappedRequest,), {"body_limit": body_limit})
    site = MDMSite(root, requestFactory=request_class, timeout=timeout, reactor=reactor)
    site.displayTracebacks = False
    site.limits = limits or ClientLimits()
    site.connections = ClientConnections(site.limits.per_client)  # shared with the lean device channel
    return site
