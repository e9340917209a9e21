"""Where a device's TLS client certificate comes from: its own TLS connection, or a header set by a TLS proxy.

A proxy's header is believed only from the configured proxy addresses: from anyone else it is a forgery.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm_protocol.cms import SignatureError

NGINX_HEADER = "X-SSL-Client-Cert"  # nginx's $ssl_client_escaped_cert: URL-encoded PEM
RFC9440_HEADER = "Client-Cert"  # RFC 9440: a byte sequence, :base64 of the DER:


@dataclass(frozen=True, slots=True)
class Peer:
    """What the connection says about a request's sender, beside its body and Mdm-Signature."""

    host: str | None = None  # the TCP peer's address
    certificate: bytes | None = None  # DER of the TLS client certificate, if the device presented one
    header: bytes | None = None  # the value of the configured client-certificate header, if sent


NO_PEER = Peer()


@dataclass(frozen=True)
class ClientCertSource:
    """`header` (its name, any case): where a TLS proxy puts the client certificate; `trusted_proxies`: the
    addresses whose header is believed. Without a header name only the TLS connection's certificate counts."""

    header: str | None = None
    trusted_proxies: frozenset[str] = frozenset()

    @property
    def header_key(self) -> bytes | None:
        return None if self.header is None else self.header.lower().encode("latin-1")

    def certificate(self, peer: Peer) -> bytes | None:
        """The client certificate's DER, or None; SignatureError for a header from elsewhere or unreadable."""
        if peer.header is None or self.header is None:
            return peer.certificate
        if peer.host not in self.trusted_proxies:
            raise SignatureError(f"{self.header} header from {peer.host}, which is not a trusted proxy "
                                 "(--trusted-proxy)")
        if not peer.header.strip():
            return peer.certificate  # the proxy saw no client certificate (nginx sends the header empty)
        return parse_certificate_header(peer.header)


def parse_certificate_header(value: bytes) -> bytes:
    """The DER in an RFC 9440 `Client-Cert` (`:base64:`) or nginx `X-SSL-Client-Cert` (URL-encoded PEM)."""
    value = value.strip()
    try:
        if value.startswith(b":") and value.endswith(b":") and len(value) > 1:
            der = base64.b64decode(value[1:-1], validate=True)
            x509.load_der_x509_certificate(der)
            return der
        pem = unquote_to_bytes(value)
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"unreadable client certificate header: {exc}") from None
