"""The server's APNs provider client: HTTP/2 (h2) over Twisted TLS with the push certificate, as against Apple.

One connection, many concurrent streams (up to what the gateway allows); 429/500/503 and a lost connection are
retried with jittered exponential backoff; every other answer (200, 4xx, 410) is final and goes to the caller.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from twisted.internet import defer, endpoints, ssl
from twisted.internet.protocol import Factory, Protocol

from mdm_wire.hpack_codec import FastDecoder

from .interface import ProviderResponse, PushRequest

log = logging.getLogger(__name__)
RETRIED = frozenset({429, 500, 503})
CONNECTION_FAILED = 0  # the status of a push that never got an answer


@dataclass(frozen=True)
class ProviderSettings:
    """Where and as whom to push: Apple's `https://api.push.apple.com` or a simulated APNs."""

    url: str
    certificate_pem: bytes
    private_key_pem: bytes
    ca_pem: bytes | None = None  # trust root of the gateway; None: the system's
    topic: str | None = None  # sent as apns-topic; None: the device's topic from its TokenUpdate
    expiration_after: float | None = 86400.0  # apns-expiration this long after sending; None: header omitted
    max_attempts: int = 6
    first_backoff: float = 0.25
    max_backoff: float = 30.0


    @classmethod
    def from_files(cls, url: str, certificate: Path, key: Path, ca: Path | None = None,
                   **options: Any) -> ProviderSettings:
        return cls(url, certificate.read_bytes(), key.read_bytes(), ca.read_bytes() if ca else None, **options)

    @property
    def certificate_topic(self) -> str | None:
        """The push certificate's topic (subject UID), which the server's devices must use."""
        uids = x509.load_pem_x509_certificate(self.certificate_pem).subject.get_attributes_for_oid(NameOID.USER_ID)
        return str(uids[0].value) if uids else None


@dataclass
class _Push:
    request: PushRequest
    deferred: defer.Deferred
    apns_id: str
    attempts: int = 0


class APNsProviderClient:
    """A `Pusher` whose `push()` returns a Deferred of the provider's final `ProviderResponse`."""

    def __init__(self, reactor: Any, settings: ProviderSettings, *, clock: Any = None, seed: int = 0) -> None:
        self.reactor, self.settings = reactor, settings
        self.clock = clock if clock is not None else reactor
        parts = urlsplit(settings.url)
        self.host, self.port = parts.hostname or "localhost", parts.port or 443
        self._rng = random.Random(f"{seed}:apns-client")
        self._queue: deque[_Push] = deque()
        self._link: _ProviderLink | None = None
        self._connecting = False
        self._connect_failures = 0
        self._flush_call: Any = None
        self.retries = 0
        self.connections = 0

    # The Pusher interface ------------------------------------------------------------------------------

    def push(self, request: PushRequest) -> defer.Deferred:
        apns_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        push = _Push(request, defer.Deferred(), apns_id)
        self._enqueue(push)
        return push.deferred

    def close(self) -> None:
        if self._link is not None:
            self._link.transport.loseConnection()

    # Sending ----------------------------------------------------------------------------------------------

    def _enqueue(self, push: _Push) -> None:
        self._queue.append(push)
        if self._link is None:
            self._connect()
        elif self._flush_call is None:
            # Pushes made in one turn of the reactor go out in one TLS write: a record per push costs both ends.
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._link is not None:
            self._link.send_queued()

    def _connect(self) -> None:
        if self._connecting:
            return
        self._connecting = True
        endpoint = endpoints.SSL4ClientEndpoint(self.reactor, self.host, self.port, self._tls_options())
        d = endpoint.connect(_LinkFactory(self))
        d.addCallbacks(self._connected, self._connect_failed)

    def _tls_options(self) -> Any:
        s = self.settings
        trust = ssl.Certificate.loadPEM(s.ca_pem) if s.ca_pem else None
        # The push certificate as cryptography objects (a PrivateCertificate would hand pyOpenSSL its deprecated
        # X509/PKey types).
        identity = {"certificate": x509.load_pem_x509_certificate(s.certificate_pem),
                    "privateKey": serialization.load_pem_private_key(s.private_key_pem, password=None)}
        return ssl.optionsForClientTLS(self.host, trustRoot=trust, acceptableProtocols=[b"h2"],
                                       extraCertificateOptions=identity)

    def _connected(self, link: _ProviderLink) -> None:
        self._connecting, self._connect_failures = False, 0
        self.connections += 1
        self._link = link
        link.send_queued()

    def _connect_failed(self, failure: Any) -> None:
        self._connecting = False
        self._connect_failures += 1
        if self._connect_failures >= self.settings.max_attempts:
            log.warning("APNs at %s:%s unreachable: %s", self.host, self.port, failure.getErrorMessage())
            pending, self._queue = list(self._queue), deque()
            self._connect_failures = 0
            for push in pending:
                push.deferred.callback(ProviderResponse(CONNECTION_FAILED, "ConnectionFailed"))
            return
        self.clock.callLater(self._backoff(self._connect_failures), self._connect)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.settings.max_backoff, self.settings.first_backoff * 2 ** (attempt - 1))
        return cap * (0.5 + self._rng.random() / 2)  # "equal jitter": spread retries, never zero

    def lost(self, link: _ProviderLink, unanswered: list[_Push]) -> None:
        """The connection went away (GOAWAY, reset, network): what it did not answer is sent again."""
        if self._link is link:
            self._link = None
        for push in unanswered:
            self._retry(push, ProviderResponse(CONNECTION_FAILED, "ConnectionLost"))

    def answered(self, push: _Push, response: ProviderResponse) -> None:
        if response.status in RETRIED:
            self._retry(push, response)
        else:
            push.deferred.callback(response)

    def _retry(self, push: _Push, response: ProviderResponse) -> None:
        push.attempts += 1
        if push.attempts >= self.settings.max_attempts:
            push.deferred.callback(response)
            return
        self.retries += 1
        self.clock.callLater(self._backoff(push.attempts), self._enqueue, push)

    def headers(self, push: _Push) -> list[tuple[str, str]]:
        s = self.settings
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", self.host),
                   (":path", "/3/device/" + push.request.token.hex()), ("content-type", "application/json"),
                   ("apns-push-type", "mdm"), ("apns-id", push.apns_id), ("apns-priority", "10")]
        headers.append(("apns-topic", s.topic or push.request.topic))
        if s.expiration_after is not None:
            headers.append(("apns-expiration", str(int(self.clock.seconds() + s.expiration_after))))
        return headers

    def take(self) -> _Push | None:
        return self._queue.popleft() if self._queue else None

    def put_back(self, push: _Push) -> None:
        self._queue.appendleft(push)


class _Connection(H2Connection):
    """h2 counts its open streams by walking every stream before each new one: with the gateway's 1000 in
    flight that walk was the provider's largest cost in a 10,000-push rollout (profiled). Here the count is the
    streams the link still waits answers for (they close when answered or reset); h2's own walk, which also
    forgets closed streams, runs once per batch (`forget_closed`)."""

    def __init__(self, config: H2Configuration, in_flight: dict[int, Any]) -> None:
        super().__init__(config)
        self._in_flight = in_flight

    @property
    def open_outbound_streams(self) -> int:
        return len(self._in_flight)

    def forget_closed(self) -> None:
        H2Connection.open_outbound_streams.fget(self)  # type: ignore[attr-defined]


class _ProviderLink(Protocol):
    """One HTTP/2 connection to the provider API."""

    def __init__(self, client: APNsProviderClient) -> None:
        self.client = client
        # Our requests are well-formed (no outbound validation); answers stay bytes and are decoded by the
        # gateway's HPACK decoder (a fifth of this client's cost per push, profiled). Requests keep h2's encoder:
        # Huffman and indexing, as Apple expects from a provider.
        self.streams: dict[int, tuple[_Push, list[Any]]] = {}  # stream -> (push, [status, body])
        self.h2 = _Connection(H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                              normalize_outbound_headers=False), self.streams)
        decoder = FastDecoder()
        decoder.max_header_list_size = self.h2.decoder.max_header_list_size
        self.h2.decoder = decoder
        self.closing = False
        # Until the server's first SETTINGS arrive its stream limit is unknown (h2 assumes none): send nothing.
        self.settled = False

    def connectionMade(self) -> None:
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def send_queued(self) -> None:
        self.h2.forget_closed()
        limit = self.h2.remote_settings.max_concurrent_streams
        while self.settled and not self.closing and self.h2.open_outbound_streams < limit:
            push = self.client.take()
            if push is None:
                break
            if self.h2.outbound_flow_control_window < len(push.request.payload()):
                # The connection's flow-control window is spent: wait for the gateway's WINDOW_UPDATE.
                self.client.put_back(push)
                break
            stream_id = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream_id, self.client.headers(push))
            self.h2.send_data(stream_id, push.request.payload(), end_stream=True)
            self.streams[stream_id] = (push, [0, b""])
        self.transport.write(self.h2.data_to_send())

    def dataReceived(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            self._on(event)
        self.transport.write(self.h2.data_to_send())
        if not self.closing:
            self.send_queued()

    def _on(self, event: Any) -> None:
        if isinstance(event, ResponseReceived):
            self.streams[event.stream_id][1][0] = int(dict(event.headers)[b":status"])
        elif isinstance(event, DataReceived):
            self.streams[event.stream_id][1][1] += event.data
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, StreamEnded):
            push, (status, body) = self.streams.pop(event.stream_id)
            self.client.answered(push, ProviderResponse(status, _reason(body)))
        elif isinstance(event, StreamReset):
            push, _ = self.streams.pop(event.stream_id)
            self.client.lost(self, [push])
        elif isinstance(event, RemoteSettingsChanged):
            self.settled = True  # dataReceived calls send_queued next: it reads the new stream limit
        elif isinstance(event, WindowUpdated):
            pass  # likewise for the flow-control window
        elif isinstance(event, ConnectionTerminated):
            # GOAWAY: streams above last_stream_id were never processed; they go out on a new connection.
            self.closing = True
            last = event.last_stream_id or 0
            unprocessed = [self.streams.pop(sid)[0] for sid in sorted(self.streams) if sid > last]
            self.client.lost(self, unprocessed)
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        unanswered = [push for push, _ in self.streams.values()]
        self.streams.clear()
        self.client.lost(self, unanswered)


class _LinkFactory(Factory):
    def __init__(self, client: APNsProviderClient) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> _ProviderLink:
        return _ProviderLink(self.client)


def _reason(body: bytes) -> str | None:
    if not body:
        return None
    try:
        return str(json.loads(body).get("reason"))
    except (ValueError, AttributeError):
        return None
