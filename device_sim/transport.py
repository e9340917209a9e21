"""How a device's requests reach a server: in memory (scenarios) or over real HTTPS (fleets, load tests).

Both check the server's TLS certificate against the device's own trust store, as iOS does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import defer

from mdm_protocol.certificate_chain import verify_chain
from mdm_protocol.clocks import Clock
from mdm_protocol.cms import SignatureError

from .effects import SendRequest
from .memory_http import MemoryHTTP


class TransportError(Exception):
    def __init__(self, reason: str, *, untrusted: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.untrusted = untrusted


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


class Transport(Protocol):
    def send(self, request: SendRequest, roots: tuple[x509.Certificate, ...],
             session: object | None = None) -> defer.Deferred[Reply]:
        """Fires with the server's Reply, or fails with TransportError (untrusted=True for TLS trust).
        `session`: who is sending (one device's session), for transports that connect once per session."""
        ...


class MemoryTransport:
    """Requests go through the real twisted.web Site in this process, after a simulated TLS trust check."""

    def __init__(self, site: Any, clock: Clock, server_chain: tuple[x509.Certificate, ...], *,
                 latency: float = 0.0) -> None:
        self.http = MemoryHTTP(site, keep_alive=True)  # no TLS here: one channel serves every device
        self.clock = clock
        self.server_chain = server_chain  # leaf first: what the server would present in its handshake
        self.latency = latency
        self._trusted: dict[frozenset[x509.Certificate], bool] = {}

    def send(self, request: SendRequest, roots: tuple[x509.Certificate, ...],
             session: object | None = None) -> defer.Deferred[Reply]:
        if not self._trust(roots):
            return defer.fail(TransportError("server certificate is not trusted", untrusted=True))
        result: defer.Deferred[Reply] = defer.Deferred()
        self.clock.callLater(self.latency, self._deliver, request, result)
        return result

    def _deliver(self, request: SendRequest, result: defer.Deferred[Reply]) -> None:
        path = request.url.split("://", 1)[-1].partition("/")[2]
        headers = {"Content-Type": request.content_type} if request.content_type else {}
        if request.signature is not None:  # no TLS here: a SignMessage-false device has no identity to show
            headers["Mdm-Signature"] = request.signature
        response = self.http.request(request.method, "/" + path, request.body, headers)
        result.callback(Reply(response.status, response.body))

    def _trust(self, roots: tuple[x509.Certificate, ...]) -> bool:
        key = frozenset(roots)  # certificates hash and compare by their DER
        if key not in self._trusted:
            self._trusted[key] = chain_trusted(self.server_chain, roots, datetime.fromtimestamp(
                self.clock.seconds(), UTC))
        return self._trusted[key]


def chain_trusted(chain: tuple[x509.Certificate, ...], roots: tuple[x509.Certificate, ...],
                  now: datetime) -> bool:
    if not chain or not roots:
        return False
    try:
        purpose = ExtendedKeyUsageOID.SERVER_AUTH
        verify_chain(chain[0], roots, intermediates=chain[1:], now=now, purpose=purpose)
    except SignatureError:
        return False
    return True

