"""A small HTTP/2 client for the gateway tests (h2 over Twisted TLS, any headers, even wrong ones), and a
gateway on loopback whose clock is a fake one set to a fixed epoch time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded, StreamReset
from twisted.internet import defer, endpoints, ssl
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock

from apns_sim.faults import FaultPlan
from mdm_world.apns_gateway import APNsGatewayServer, GatewayConfig, PushCertificate

# The fake clock starts at the wall clock's second: OpenSSL checks the gateway's TLS certificate (issued on the
# fake clock) against the real time.
NOW = float(int(time.time()))
TOPIC = "com.apple.mgmt.External.5e6c0c3e-2f07-4d8e-9b5a-0c1b2d3e4f50"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class _Pending:
    deferred: defer.Deferred
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class H2TestClient(Protocol):
    def __init__(self) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.pending: dict[int, _Pending] = {}
        self.goaway: ConnectionTerminated | None = None
        self.lost = defer.Deferred()

    def connectionMade(self) -> None:
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def request(self, path: str, headers: dict[str, str] | None = None, body: bytes = b"",
                method: str = "POST") -> defer.Deferred:
        stream_id = self.h2.get_next_available_stream_id()
        pseudo = [(":method", method), (":scheme", "https"), (":authority", "api.push.apple.com"),
                  (":path", path)]
        self.h2.send_headers(stream_id, pseudo + list((headers or {}).items()), end_stream=not body)
        if body:
            self.h2.send_data(stream_id, body, end_stream=True)
        self.transport.write(self.h2.data_to_send())
        self.pending[stream_id] = _Pending(defer.Deferred())
        return self.pending[stream_id].deferred

    def dataReceived(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, ResponseReceived):
                self.pending[event.stream_id].headers.update(event.headers)
            elif isinstance(event, DataReceived):
                self.pending[event.stream_id].body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded | StreamReset):
                pending = self.pending.pop(event.stream_id)
                headers = pending.headers
                pending.deferred.callback(Reply(int(headers.pop(":status", 0)), headers, bytes(pending.body)))
            elif isinstance(event, ConnectionTerminated):
                self.goaway = event
        self.transport.write(self.h2.data_to_send())

    def connectionLost(self, reason: Any = None) -> None:
        self.lost_reason = reason
        for pending in self.pending.values():
            pending.deferred.errback(reason)
        self.pending.clear()
        self.lost.callback(None)


def client_options(ca_pem: bytes, push: PushCertificate | None) -> ssl.IOpenSSLClientConnectionCreator:
    identity = {}
    if push is not None:
        identity = {"certificate": x509.load_pem_x509_certificate(push.certificate_pem),
                    "privateKey": serialization.load_pem_private_key(push.private_key_pem, password=None)}
    return ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(ca_pem),
                                   acceptableProtocols=[b"h2"], extraCertificateOptions=identity)


class ProxiedH2Client(H2TestClient):
    """What NanoMDM's Go client does with HTTPS_PROXY: CONNECT api.push.apple.com:443 through the proxy, then TLS
    (checked against the trust store, as Apple's host) and HTTP/2 inside the tunnel. `ready` fires once it is up."""

    def __init__(self, tls: ssl.IOpenSSLClientConnectionCreator) -> None:
        super().__init__()
        self._tls, self._head = tls, b""
        self.tunnelled = False
        self.ready: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"CONNECT api.push.apple.com:443 HTTP/1.1\r\nHost: api.push.apple.com:443\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        if self.tunnelled:
            super().dataReceived(data)
            return
        self._head += data
        if b"\r\n\r\n" in self._head:
            assert self._head.startswith(b"HTTP/1.1 200"), self._head
            self.tunnelled = True
            self.transport.startTLS(self._tls)
            super().connectionMade()  # the HTTP/2 preface, sent once TLS is up
            self.ready.callback(self)


def connect_through_proxy(reactor: Any, proxy_port: int, ca_pem: bytes, push: PushCertificate) -> defer.Deferred:
    """An h2 client reaching the gateway as api.push.apple.com through the CONNECT proxy; fires when tunnelled."""
    identity = {"certificate": x509.load_pem_x509_certificate(push.certificate_pem),
                "privateKey": serialization.load_pem_private_key(push.private_key_pem, password=None)}
    tls = ssl.optionsForClientTLS("api.push.apple.com", trustRoot=ssl.Certificate.loadPEM(ca_pem),
                                  acceptableProtocols=[b"h2"], extraCertificateOptions=identity)
    client = ProxiedH2Client(tls)
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", proxy_port)
    return endpoints.connectProtocol(endpoint, client).addCallback(lambda _: client.ready)


def connect(reactor: Any, port: int, ca_pem: bytes, push: PushCertificate | None) -> defer.Deferred:
    endpoint = endpoints.SSL4ClientEndpoint(reactor, "127.0.0.1", port, client_options(ca_pem, push))
    return endpoints.connectProtocol(endpoint, H2TestClient())


def gateway(tmp_path: Any, *, faults: FaultPlan | None = None, clock: Clock | None = None,
            push_link: bool | str = False, **config: Any) -> tuple[APNsGatewayServer, Clock]:
    if clock is None:
        clock = Clock()
        clock.advance(NOW)
    config.setdefault("listen", "ssl:0:interface=127.0.0.1")
    if push_link is True:
        push_link = "tcp:0:interface=127.0.0.1"
    config["push_link"] = push_link or None
    options = GatewayConfig(data_dir=tmp_path, faults=faults or FaultPlan(), **config)
    return APNsGatewayServer(options, clock=clock), clock


class WatchedClock(Clock):
    """A fake clock that says when something schedules a call on it (a retry, a reconnect)."""

    def __init__(self, start: float = NOW) -> None:
        super().__init__()
        self.advance(start)
        self._watchers: list[defer.Deferred] = []

    def callLater(self, delay, f, *args, **kw):  # noqa: N802 (IReactorTime's name)
        call = super().callLater(delay, f, *args, **kw)
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.callback(call)
        return call

    def next_call(self) -> defer.Deferred:
        watcher: defer.Deferred = defer.Deferred()
        self._watchers.append(watcher)
        return watcher


def until(reactor: Any, predicate: Any, timeout: float = 10.0) -> defer.Deferred:
    """Fires once `predicate()` holds, checking after each reactor turn: for state that real sockets change."""
    deadline = reactor.seconds() + timeout
    done: defer.Deferred = defer.Deferred()

    def check() -> None:
        if predicate():
            done.callback(None)
        elif reactor.seconds() > deadline:
            done.errback(AssertionError(f"still false after {timeout} s: {predicate}"))
        else:
            reactor.callLater(0.001, check)

    check()
    return done
