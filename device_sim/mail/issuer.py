"""An organisation's S/MIME certificate authority: real X.509 user certificates for simulated mailboxes.

Scenarios and tests issue signing and encryption identities here; the keys are passed in (RSA costs ~50 ms).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import DirectoryError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Usage(enum.Enum):
    """What a user certificate may do: iOS accounts can name separate signing and encryption identities."""

    SIGNING = "signing"
    ENCRYPTION = "encryption"
    BOTH = "both"


def _key_usage(usage: Usage, key: PrivateKey) -> x509.KeyUsage:
    signs = usage in (Usage.SIGNING, Usage.BOTH)
    # RSA encrypts by key transport; an EC key could only do key agreement, which cryptography cannot use.
    transports = usage in (Usage.ENCRYPTION, Usage.BOTH) and isinstance(key, rsa.RSAPrivateKey)
    agrees = usage in (Usage.ENCRYPTION, Usage.BOTH) and not transports
    return x509.KeyUsage(digital_signature=signs, content_commitment=signs, key_encipherment=transports,
                         data_encipherment=False, key_agreement=agrees, key_cert_sign=False, crl_sign=False,
                         encipher_only=False, decipher_only=False)


def _serial(*parts: object) -> int:
    """A positive serial below 2**159 derived from the inputs, so seeded runs issue identical certificates."""
    digest = hashlib.sha256("\x00".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:20], "big") >> 1 or 1


@dataclass(frozen=True, slots=True)
class OrganisationCA:
    """A self-signed root for one mail domain and its key."""

    domain: str
    certificate: x509.Certificate
    private_key: PrivateKey

    @classmethod
    def create(cls, organisation: str, domain: str, key: PrivateKey, *, now: datetime,
               days: int = 3650) -> OrganisationCA:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} S/MIME CA"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)])
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(_serial("ca", organisation, domain, now.isoformat()))
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
        return cls(domain.lower(), certificate, key)

    def issue(self, address: str, key: PrivateKey, *, now: datetime, days: int = 365,
              usage: Usage = Usage.BOTH, not_before: datetime | None = None) -> x509.Certificate:
        """A user certificate for `address` in this domain, for emailProtection, valid from `not_before`."""
        local, _, domain = address.strip().lower().rpartition("@")
        if not local or domain != self.domain:
            raise DirectoryError(f"{address!r} is not an address in {self.domain}")
        start = not_before if not_before is not None else now - timedelta(minutes=5)
        public = key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address.strip().lower())]))
            .issuer_name(self.certificate.subject).public_key(public)
            .serial_number(_serial("user", address, usage.value, start.isoformat(), public.public_numbers()))
            .not_valid_before(start).not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(usage, key), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address.strip().lower())]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                           critical=False)
            .sign(self.private_key, hashes.SHA256()))
