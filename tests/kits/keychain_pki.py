"""Keys, certificates, PKCS#12 files and a small PKI for the device keychain and install tests."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_sim.keychain import Identity, Keychain

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION


def new_key(kind: str = "ec") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def certificate(common_name: str, key, *, issuer: x509.Certificate | None = None, issuer_key=None,
                ca: bool = False, eku: tuple[x509.ObjectIdentifier, ...] | None = (EMAIL,),
                not_before: datetime = NOW - timedelta(days=30),
                not_after: datetime = NOW + timedelta(days=365)) -> x509.Certificate:
    """A real X.509 certificate; self-signed when no issuer is given."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key = issuer_key or key
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer is not None else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
                              critical=False))
    if ca:
        usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    elif eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return builder.sign(signer_key, hashes.SHA256())


def p12(cert: x509.Certificate | None, key, password: str = "secret", *,
        cas: tuple[x509.Certificate, ...] = (), name: bytes = b"identity") -> bytes:
    """A PKCS#12 in the suite iOS imports (3DES, SHA-1 MAC, 2048 rounds)."""
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
                  .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
                  .build(password.encode()))
    return pkcs12.serialize_key_and_certificates(name, key, cert, list(cas) or None, encryption)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Pki:
    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    other_ca: x509.Certificate
    alice: x509.Certificate
    alice_key: ec.EllipticCurvePrivateKey
    bob: x509.Certificate
    bob_key: rsa.RSAPrivateKey  # RSA: the usual encryption identity (mail encrypts to RSA keys only)
    expired: x509.Certificate
    expired_key: ec.EllipticCurvePrivateKey
    stranger: x509.Certificate  # issued by other_ca, which devices do not trust
    stranger_key: ec.EllipticCurvePrivateKey


@functools.cache
def pki() -> Pki:
    ca_key, other_key = new_key(), new_key()
    ca = certificate("mdmsim Test CA", ca_key, ca=True, eku=None)
    other_ca = certificate("Untrusted CA", other_key, ca=True, eku=None)
    keys = [new_key(), new_key("rsa"), new_key(), new_key()]
    alice = certificate("alice@example.com", keys[0], issuer=ca, issuer_key=ca_key)
    bob = certificate("bob@example.com", keys[1], issuer=ca, issuer_key=ca_key)
    expired = certificate("old@example.com", keys[2], issuer=ca, issuer_key=ca_key,
                          not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=35))
    stranger = certificate("eve@example.com", keys[3], issuer=other_ca, issuer_key=other_key)
    return Pki(ca, ca_key, other_ca, alice, keys[0], bob, keys[1], expired, keys[2], stranger, keys[3])


def identity(cert: x509.Certificate, key, *, uuid: str = "ID-1", profile: str = "com.example.p",
             installed_at: datetime = NOW, chain: tuple[x509.Certificate, ...] = ()) -> Identity:
    return Identity(uuid, profile, cert, key, f"{uuid}.p12", installed_at, chain)


def trusting_keychain() -> Keychain:
    keychain = Keychain()
    keychain.add_root(pki().ca, "com.example.trust")
    return keychain
