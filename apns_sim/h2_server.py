"""The Twisted edge of the gateway's provider API: TLS bytes to a `ProviderConnection` and back.

The client certificate is asked for but not required by TLS (the API answers 403), read once when the handshake
completes; GOAWAY goes to every connection on stop.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from .gateway import Gateway
from .h2_connection import MAX_CONCURRENT_STREAMS, ProviderConnection
from .push_certificate import provider_identity


class _AnyClientCertificate(ssl.CertificateOptions):
    """Asks every client for a certificate and lets the handshake succeed without one (or with a bad one):
    APNs answers those with 403 BadCertificate, which the provider can read, rather than a TLS alert."""

    _asks = False

    def getContext(self) -> SSL.Context:
        context = super().getContext()  # made once, then shared by every connection (and frozen by OpenSSL)
        if not self._asks:
            context.set_verify(SSL.VERIFY_PEER, lambda *_: True)
            self._asks = True
        return context


def gateway_tls_options(certificate_pem: bytes, key_pem: bytes, chain_pem: bytes) -> ssl.CertificateOptions:
    return _AnyClientCertificate(
        privateKey=serialization.load_pem_private_key(key_pem, password=None),
        certificate=x509.load_pem_x509_certificate(certificate_pem),
        extraCertChain=x509.load_pem_x509_certificates(chain_pem),
        acceptableProtocols=[b"h2"],  # APNs speaks HTTP/2 only
        enableSessions=True,
    )


@implementer(IHandshakeListener)
class ProviderProtocol(Protocol):
    def __init__(self, gateway: Gateway, authority: x509.Certificate, connections: set[ProviderProtocol], *,
                 max_streams: int = MAX_CONCURRENT_STREAMS) -> None:
        self.connection = ProviderConnection(gateway.answer, max_streams=max_streams)
        self._authority = authority
        self._connections = connections

    def connectionMade(self) -> None:
        self._connections.add(self)
        self.transport.write(self.connection.initiate())  # held by TLS until the handshake is done

    def handshakeCompleted(self) -> None:
        peer = self.transport.getPeerCertificate()
        certificate = peer.to_cryptography() if peer is not None else None
        self.connection.identity = provider_identity(certificate, self._authority)

    def dataReceived(self, data: bytes) -> None:
        out = self.connection.receive(data)
        if out:
            self.transport.write(out)
        if self.connection.closed:
            self.transport.loseConnection()

    def goaway(self) -> None:
        self.transport.write(self.connection.goaway())
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self._connections.discard(self)


class ProviderFactory(Factory):
    """Serves `POST /3/device/<token>` for `gateway`; wrap it in TLS with `gateway_tls_options`."""

    def __init__(self, gateway: Gateway, authority: x509.Certificate, *,
                 max_streams: int = MAX_CONCURRENT_STREAMS) -> None:
        self.gateway = gateway
        self.authority = authority
        self.max_streams = max_streams
        self.connections: set[ProviderProtocol] = set()

    def buildProtocol(self, addr: Any) -> ProviderProtocol:
        protocol = ProviderProtocol(self.gateway, self.authority, self.connections, max_streams=self.max_streams)
        protocol.factory = self
        return protocol

    def goaway(self) -> None:
        for protocol in list(self.connections):
            protocol.goaway()
