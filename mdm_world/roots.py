"""Self-signed root certificates and the configuration profiles that carry them, for scenarios and tests.

A root profile is the smallest real profile a device installs: one com.apple.security.root payload.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mdm_protocol.payloads import configuration_profile, root_certificate_payload
from mdm_protocol.profile import encode_profile


def self_signed_root(common_name: str, now: datetime | None = None) -> x509.Certificate:
    now = now or datetime(2026, 1, 1, tzinfo=UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def root_profile(identifier: str, common_name: str = "Corporate Root CA") -> bytes:
    der = self_signed_root(common_name).public_bytes(serialization.Encoding.DER)
    payload = root_certificate_payload(der, identifier=f"{identifier}.root", display_name=common_name)
    return encode_profile(configuration_profile([payload], identifier=identifier, display_name=common_name))
