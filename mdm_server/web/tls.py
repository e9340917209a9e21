"""TLS for the MDM server's listening ports: our CA-issued EC certificate, session resumption on.

`--listen ssl:...` is served as TLS over the equivalent TCP endpoint so we control the OpenSSL options.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol


def server_options(certificate_pem: bytes, key_pem: bytes, chain_pem: bytes = b"") -> ssl.CertificateOptions:
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    chain = x509.load_pem_x509_certificates(chain_pem) if chain_pem else []
    # cryptography objects, not pyOpenSSL's X509/PKey, which pyOpenSSL deprecates (Twisted passes them on).
    return ssl.CertificateOptions(
        privateKey=key,
        certificate=certificate,
        extraCertChain=chain,
        # A new TLS connection per session is how iOS talks to MDM: resumption makes that affordable.
        enableSessions=True,
        enableSessionTickets=True,
        acceptableProtocols=[b"http/1.1"],
    )


class UnbufferedTLS(TLSMemoryBIOProtocol):
    """TLS for a protocol that writes each answer whole (the device channel): two per-connection costs removed.

    Twisted's default `BufferingTLSTransport` holds every write for a `callLater(0)` to merge small writes,
    a timer per response that a single-write answer does not need. And `TLSMemoryBIOProtocol.makeConnection`
    re-declares each interface the TCP transport provides on the wrapper with one `directlyProvides` call
    apiece (each call replaces the last): ~45 µs of every accepted connection, for declarations nothing we
    serve asks for. This is that method without the loop.
    """

    def makeConnection(self, transport) -> None:
        self._tlsConnection = self.factory._creatorCallable(self)
        self._appSendBuffer = []
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        if self._connectWrapped:
            ProtocolWrapper.makeConnection(self, transport)
        self._checkHandshakeStatus()


def unbuffered_fits(factory: TLSMemoryBIOFactory) -> bool:
    """Whether this Twisted still has the private parts `UnbufferedTLS.makeConnection` uses; if a release
    renames them, the stock (buffering) protocol serves instead of a broken one."""
    return (callable(getattr(factory, "_creatorCallable", None))
            and callable(getattr(factory, "registerProtocol", None))
            and callable(getattr(TLSMemoryBIOProtocol, "_checkHandshakeStatus", None))
            and "_connectWrapped" in TLSMemoryBIOProtocol.__init__.__code__.co_varnames)


def listen_endpoint(reactor, description: str, factory: Factory, options: ssl.CertificateOptions | None, *,
                    whole_writes: bool = False):
    """Listen on a Twisted endpoint description; `ssl:` ones get our TLS options.

    `whole_writes`: the protocol writes each answer in one call, so TLS need not buffer (see `UnbufferedTLS`).
    """
    endpoint: IStreamServerEndpoint
    if description.startswith("ssl:"):
        if options is None:
            raise ValueError("ssl: endpoint without TLS options")
        endpoint = serverFromString(reactor, "tcp:" + description[len("ssl:"):])
        tls = TLSMemoryBIOFactory(options, False, factory, clock=reactor)
        if whole_writes and unbuffered_fits(tls):
            tls.protocol = UnbufferedTLS
        return endpoint.listen(tls)
    endpoint = serverFromString(reactor, description)
    return endpoint.listen(factory)
