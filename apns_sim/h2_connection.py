"""The gateway's HTTP/2 connection as a sans-IO object: bytes from the provider in, bytes to send out.

h2 keeps the connection's state; each finished stream becomes one `ProviderRequest` and gets one `Answer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from .provider_api import MAX_PAYLOAD, Answer, ProviderIdentity, ProviderRequest

log = logging.getLogger(__name__)
MAX_CONCURRENT_STREAMS = 1000  # what api.push.apple.com advertises once the certificate is accepted


@dataclass(slots=True)
class _Stream:
    method: str = ""
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class ProviderConnection:
    """One provider's connection; `identity` comes from its TLS client certificate (None: it sent none)."""

    def __init__(self, answer: Callable[[ProviderRequest], Answer], identity: ProviderIdentity | None = None,
                 *, max_streams: int = MAX_CONCURRENT_STREAMS) -> None:
        self.answer = answer
        self.identity = identity
        self.closed = False
        self.answered = 0
        self._streams: dict[int, _Stream] = {}
        self._h2 = H2Connection(H2Configuration(
            client_side=False, header_encoding="utf-8",
            # h2's per-header validation and normalisation cost more than the rest of a push together (profiled);
            # what we read from a request is checked by provider_api, and our answers are well-formed.
            validate_inbound_headers=False, normalize_inbound_headers=False,
            validate_outbound_headers=False, normalize_outbound_headers=False,
        ))
        self._max_streams = max_streams

    def initiate(self) -> bytes:
        """The server preface (SETTINGS): send it as soon as the connection is up."""
        self._h2.initiate_connection()
        self._h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self._max_streams})
        return self._h2.data_to_send()

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the provider; returns the bytes to send (answers, acknowledgements, GOAWAY)."""
        if self.closed:
            return b""
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as exc:
            log.warning("provider broke HTTP/2 (%s: %s); GOAWAY PROTOCOL_ERROR", type(exc).__name__, exc)
            self.closed = True
            self._h2.close_connection(error_code=ErrorCodes.PROTOCOL_ERROR)
            return self._h2.data_to_send()
        for event in events:
            self._on(event)
        return self._h2.data_to_send()

    def goaway(self) -> bytes:
        """Shutting down: GOAWAY with NO_ERROR; streams already answered are complete."""
        if self.closed:
            return b""
        self.closed = True
        self._h2.close_connection(error_code=ErrorCodes.NO_ERROR)
        return self._h2.data_to_send()

    def _on(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            stream = self._streams[event.stream_id] = _Stream()
            # header_encoding="utf-8": h2 hands over str names and values (its hints say bytes or str).
            for name, value in cast("list[tuple[str, str]]", event.headers):
                if name == ":method":
                    stream.method = value
                elif name == ":path":
                    stream.path = value
                elif not name.startswith(":"):
                    stream.headers[name] = value
        elif isinstance(event, DataReceived):
            receiving = self._streams.get(event.stream_id)
            if event.flow_controlled_length:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if receiving is not None and len(receiving.body) <= MAX_PAYLOAD:
                # One byte over the limit is enough to answer 413; the rest is not kept.
                receiving.body += event.data[: MAX_PAYLOAD + 1 - len(receiving.body)]
        elif isinstance(event, StreamEnded):
            self._respond(event.stream_id)
        elif isinstance(event, StreamReset):
            self._streams.pop(event.stream_id, None)
        elif isinstance(event, ConnectionTerminated):
            self.closed = True

    def _respond(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        request = ProviderRequest(stream.method, stream.path, stream.headers, bytes(stream.body), self.identity)
        answer = self.answer(request)
        self.answered += 1
        payload = answer.body()
        self._h2.send_headers(stream_id, answer.headers(), end_stream=not payload)
        if payload:
            self._h2.send_data(stream_id, payload, end_stream=True)
