"""TLS for the MDM server's listening ports: our CA-issued EC certificate, session resumption on.

`--listen ssl:...` is served as TLS over the equivalent TCP endpoint so we control the OpenSSL options.
"""

from __future__ import annotations

import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet import defer, ssl
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory

from mdm_wire.tls_server import server_tls_factory


def server_options(certificate_pem: bytes, key_pem: bytes, chain_pem: bytes = b"", *,
                   client_ca: x509.Certificate | None = None) -> ssl.CertificateOptions:
    """`client_ca`: ask clients for a certificate from this CA (mutual TLS) without requiring one."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    chain = x509.load_pem_x509_certificates(chain_pem) if chain_pem else []
    # cryptography objects, not pyOpenSSL's X509/PKey, which pyOpenSSL deprecates (Twisted passes them on).
    options = ssl.CertificateOptions(
        privateKey=key,
        certificate=certificate,
        extraCertChain=chain,
        # A new TLS connection per session is how iOS talks to MDM: resumption makes that affordable.
        enableSessions=True,
        enableSessionTickets=True,
        acceptableProtocols=[b"http/1.1"],
    )
    if client_ca is not None:
        request_client_certificates(options, client_ca)
    return options


def request_client_certificates(options: ssl.CertificateOptions, ca: x509.Certificate) -> None:
    """Ask for a client certificate but take the connection without one or with any: devices that sign their
    bodies instead still connect, and the certificate is judged per request (`IdentityVerifier`), where a
    refusal has a reason the device and the log can read, not a TLS alert."""
    context = options.getContext()  # CertificateOptions keeps this one context for every connection
    context.set_verify(SSL.VERIFY_PEER, _accept_any)
    context.add_client_ca(ca)


def _accept_any(connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int) -> bool:
    return True


def listen_endpoint(reactor, description: str, factory: Factory, options: ssl.CertificateOptions | None, *,
                    whole_writes: bool = False):
    """Listen on a Twisted endpoint description; `ssl:` ones get our TLS options.

    `whole_writes`: the protocol writes each answer in one call, so TLS need not buffer
    (`mdm_wire.tls_server.UnbufferedTLS`).
    """
    endpoint: IStreamServerEndpoint
    if description.startswith("ssl:"):
        if options is None:
            raise ValueError("ssl: endpoint without TLS options")
        endpoint = serverFromString(reactor, "tcp:" + description[len("ssl:"):])
        return endpoint.listen(server_tls_factory(options, factory, clock=reactor, whole_writes=whole_writes))
    endpoint = serverFromString(reactor, description)
    return endpoint.listen(factory)


def adopt_port(reactor, fd: int, description: str, factory: Factory, options: ssl.CertificateOptions | None, *,
               whole_writes: bool = False):
    """Serve on a listening socket this process was given (by `mdmsim serve --workers`), as `listen_endpoint`
    would on `description`: the supervisor binds once, every worker accepts from the one queue."""
    probe = socket.socket(fileno=os.dup(fd))  # only to learn the family; the reactor adopts `fd` itself
    family = probe.family
    probe.close()
    if description.startswith("ssl:"):
        if options is None:
            raise ValueError("ssl: endpoint without TLS options")
        factory = server_tls_factory(options, factory, clock=reactor, whole_writes=whole_writes)
    return defer.maybeDeferred(reactor.adoptStreamPort, fd, family, factory)
