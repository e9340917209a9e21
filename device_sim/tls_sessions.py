"""The fleet's TLS client contexts, each with the last session to resume, per (server, trust store, groups).

One cache per process, handed to every `HTTPSTransport`: a new transport for the same server resumes.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl

from mdm_wire.tls_client import ClientCredential, ClientTLS

MAX_CLIENT_TLS = 256  # (server, trust store, groups) whose TLS context and last session are kept
MAX_CREDENTIALS = 100_000  # client identities (mutual TLS) with their fingerprint computed once


class TLSSessionCache:
    """`ClientTLS` per (host, port, trust store digests, groups): a fleet trusting one CA shares one context.

    Sessions outlive a transport, as a device's TLS session cache outlives one connection pool: a transport
    given the cache another used resumes instead of opening with a full handshake per device.
    """

    def __init__(self, limit: int = MAX_CLIENT_TLS) -> None:
        self.limit = limit
        self._tls: dict[tuple[Any, ...], ClientTLS] = {}
        self._credentials: dict[x509.Certificate, ClientCredential] = {}

    def client_tls(self, key: tuple[Any, ...], roots: tuple[x509.Certificate, ...], groups: str | None
                   ) -> ClientTLS:
        """The context for `key` = (host, port, trust key, groups), made for `roots` the first time."""
        tls = self._tls.get(key)
        if tls is None:
            pem = [ssl.Certificate.loadPEM(r.public_bytes(serialization.Encoding.PEM)) for r in roots]
            if len(self._tls) >= self.limit:
                self._tls.clear()
            tls = self._tls[key] = ClientTLS(key[0], ssl.trustRootFromCertificates(pem), groups=groups)
        return tls

    def credential(self, certificate: x509.Certificate, key: Any) -> ClientCredential:
        """The client certificate `certificate` with `key`, named once per identity. Its sessions are kept
        apart by `ClientTLS`: a resumed session carries the identity it was made with."""
        credential = self._credentials.get(certificate)
        if credential is None:
            if len(self._credentials) >= MAX_CREDENTIALS:
                self._credentials.clear()
            credential = self._credentials[certificate] = ClientCredential(certificate, key)
        return credential

    def __len__(self) -> int:
        return len(self._tls)
