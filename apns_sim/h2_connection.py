"""The gateway's HTTP/2 connection as a sans-IO object: bytes from the provider in, bytes to send out.

h2 keeps the connection's state; each finished stream becomes one `ProviderRequest` and gets one `Answer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from mdm_wire.hpack_codec import AnswerEncoder, FastDecoder

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
            client_side=False, header_encoding=None,  # bytes: _on decodes only what it keeps
            # h2's per-header validation and normalisation cost more than the rest of a push together (profiled);
            # what we read from a request is checked by provider_api, and our answers are well-formed.
            validate_inbound_headers=False, normalize_inbound_headers=False,
            validate_outbound_headers=False, normalize_outbound_headers=False,
        ))
        decoder = FastDecoder()
        decoder.max_header_list_size = self._h2.decoder.max_header_list_size
        self._h2.decoder, self._h2.encoder = decoder, AnswerEncoder()  # type: ignore[assignment]
        self._max_streams = max_streams
        self._cuts = _RequestCuts()

    def initiate(self) -> bytes:
        """The server preface (SETTINGS): send it as soon as the connection is up."""
        self._h2.initiate_connection()
        self._h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: self._max_streams})
        return self._h2.data_to_send()

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the provider; returns the bytes to send (answers, acknowledgements, GOAWAY)."""
        if self.closed:
            return b""
        for request in self._cuts.cut(data):
            if self.closed:
                break
            self._receive(request)
        return self._h2.data_to_send()  # every answer of the batch in one write

    def _receive(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as exc:
            log.warning("provider broke HTTP/2 (%s: %s); GOAWAY PROTOCOL_ERROR", type(exc).__name__, exc)
            self.closed = True
            self._h2.close_connection(error_code=ErrorCodes.PROTOCOL_ERROR)
            return
        try:
            for event in events:
                self._on(event)
        except UnicodeDecodeError:
            log.warning("provider sent a header that is not UTF-8; GOAWAY PROTOCOL_ERROR")
            self.closed = True
            self._h2.close_connection(error_code=ErrorCodes.PROTOCOL_ERROR)

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
            headers = stream.headers
            for name, value in event.headers:  # bytes (header_encoding None)
                if not name.startswith(b":"):  # not a pseudo-header (HPACK allows an empty name)
                    headers[name.decode()] = value.decode()
                elif name == b":method":
                    stream.method = value.decode()
                elif name == b":path":
                    stream.path = value.decode()
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


_END_STREAM, _DATA, _HEADERS = 0x1, 0x0, 0x1
CLIENT_PREFACE = 24  # "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", before the client's first frame


class _RequestCuts:
    """Cuts the bytes h2 is fed after each frame that ends a request (HEADERS or DATA with END_STREAM). h2
    counts the open streams at every new one by walking them all: fed 500 requests at once, 500 are open;
    fed one request at a time, each is answered before the next opens (profiled: a sixth of h2's cost per
    push at 100 streams, more at 1000). Only where h2 is fed changes, never what: any cut is correct, since h2
    buffers a partial frame; the frame positions are followed across reads (a header split by TCP included)."""

    def __init__(self) -> None:
        self._skip = CLIENT_PREFACE  # bytes of `data` before the next frame header
        self._tail = b""  # the start of a frame header cut by the last read (already fed to h2)

    def cut(self, data: bytes) -> list[bytes]:
        buffer = self._tail + data
        lead = len(self._tail)
        at, start, end, cuts = (0 if lead else self._skip), lead, len(buffer), []
        while at + 9 <= end:
            length = int.from_bytes(buffer[at : at + 3], "big")
            kind, flags = buffer[at + 3], buffer[at + 4]
            at += 9 + length
            if flags & _END_STREAM and kind in (_DATA, _HEADERS) and at <= end:
                cuts.append(buffer[start:at])
                start = at
        if start < end:
            cuts.append(buffer[start:end])
        self._skip, self._tail = (at - end, b"") if at >= end else (0, buffer[at:end])
        return cuts
