"""The MDM server's certificate authority: creates or loads its CA and issues TLS and device certificates.

Every method takes `now`; nothing here reads the wall clock, so virtual-time scenarios get consistent PKI.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from apns_sim.push_certificate import APNS_DEVELOPMENT_OID, APNS_PRODUCTION_OID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_CERTIFICATE_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
# Devices and the server rarely agree on the clock to the second; backdating avoids "not yet valid" at issue.
BACKDATE = timedelta(hours=1)
CA_VALIDITY = timedelta(days=3650)
# Apple refuses TLS server certificates valid over 825 days (398 under public roots); stay under both.
SERVER_VALIDITY = timedelta(days=397)
DEVICE_VALIDITY = timedelta(days=365)
PUSH_VALIDITY = timedelta(days=365)  # Apple's MDM push certificates last a year and are renewed
_DER_NULL = b"\x05\x00"  # the value of Apple's environment extensions


class PkiError(Exception):
    """A PKI file, name or parameter we cannot use; `reason` says what to fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyType(enum.StrEnum):
    EC = "ec"  # P-256: fast to generate and verify, accepted by iOS for identities and TLS
    RSA = "rsa"  # 2048 bits: for peers that need RSA (S/MIME encryption recipients, old clients)


def generate_key(key_type: KeyType | str = KeyType.EC) -> PrivateKey:
    try:
        kind = KeyType(key_type)
    except ValueError:
        raise PkiError(f"unknown key type {key_type!r}; use 'ec' or 'rsa'") from None
    if kind is KeyType.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as colon-separated uppercase hex (how admins compare fingerprints)."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def as_utc(now: datetime) -> datetime:
    """`now` in UTC; a naive datetime is taken as UTC, as cryptography does."""
    return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)


def _key_usage(*, signer: bool = False, encipher: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=encipher, data_encipherment=False,
        key_agreement=False, key_cert_sign=signer, crl_sign=signer, encipher_only=False, decipher_only=False,
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    if not common_name or len(common_name) > 64:
        raise PkiError(f"a common name must be 1 to 64 characters, not {common_name!r}")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.rstrip(".").split(".")
    if not name.isascii() or not all(label and label.replace("-", "").isalnum() for label in labels):
        raise PkiError(f"{name!r} is neither an IP address nor an ASCII DNS name")
    return x509.DNSName(name)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA certificate and its key; issues the server's TLS certificate and device identities."""

    certificate: x509.Certificate
    private_key: PrivateKey

    @classmethod
    def create(
        cls, common_name: str, *, key_type: KeyType | str = KeyType.EC, now: datetime,
        organization: str | None = "mdmsim",
    ) -> CertificateAuthority:
        """A fresh self-signed CA valid from `now` for ten years; it may sign leaves only (pathlen 0)."""
        now = as_utc(now)
        key = generate_key(key_type)
        name = _name(common_name, organization)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signer=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def from_pem(cls, certificate_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """Load a CA from PEM, refusing a key that does not match or a certificate that is not a CA."""
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise PkiError(f"the CA certificate or key is not readable PEM: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PkiError(f"the CA key is a {type(key).__name__}; only EC and RSA keys are supported")
        if key.public_key() != certificate.public_key():
            raise PkiError("the CA key does not belong to the CA certificate")
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise PkiError("the CA certificate lacks basicConstraints CA:TRUE")
        return cls(certificate, key)

    @classmethod
    def load_or_create(
        cls, data_dir: Path | str, common_name: str = "mdmsim CA", *, key_type: KeyType | str = KeyType.EC,
        now: datetime,
    ) -> CertificateAuthority:
        """The CA kept in `data_dir` (ca.pem and ca.key, mode 0600), created there on first use."""
        directory = Path(data_dir)
        cert_path, key_path = directory / CA_CERTIFICATE_FILE, directory / CA_KEY_FILE
        if cert_path.exists() and key_path.exists():
            return cls.from_pem(cert_path.read_bytes(), key_path.read_bytes())
        if cert_path.exists() or key_path.exists():
            present, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
            raise PkiError(f"found {present} but not {missing}; restore it or remove both to make a new CA")
        authority = cls.create(common_name, key_type=key_type, now=now)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Key first: an interrupted first run then leaves a key without a certificate, never the reverse.
        write_private_file(key_path, authority.private_key_pem)
        write_private_file(cert_path, authority.certificate_pem)
        return authority

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(self.certificate)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def private_key_pem(self) -> bytes:
        return private_key_pem(self.private_key)

    def issue_server_certificate(
        self, names: Sequence[str], now: datetime, *, key_type: KeyType | str = KeyType.EC,
        validity: timedelta = SERVER_VALIDITY,
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A TLS server certificate for DNS names and IP addresses (SANs), EKU serverAuth."""
        if not names:
            raise PkiError("a server certificate needs at least one DNS name or IP address")
        entries = [_san_entry(name) for name in names]
        key = generate_key(key_type)
        certificate = (
            self._leaf(_name(names[0]), key.public_key(), now, validity)
            .add_extension(x509.SubjectAlternativeName(entries), critical=False)
            .add_extension(_key_usage(encipher=isinstance(key, rsa.RSAPrivateKey)), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.private_key, hashes.SHA256())
        )
        return certificate, key

    def issue_device_identity(
        self, common_name: str, now: datetime, key_type: KeyType | str = KeyType.EC, *,
        validity: timedelta = DEVICE_VALIDITY, user_id: str | None = None,
        extra: tuple[x509.NameAttribute, ...] = (),
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A device identity (what SCEP would give an iPhone): EKU clientAuth, short random serial.

        `user_id` goes into the subject as UID, binding the enrollment to that user for the server; `extra`
        attributes follow it (the enrollment token that issued the identity).
        """
        key = generate_key(key_type)
        subject = _name(common_name)
        if user_id is not None:
            subject = x509.Name([*subject, x509.NameAttribute(NameOID.USER_ID, user_id)])
        if extra:
            subject = x509.Name([*subject, *extra])
        return self.issue_for_key(subject, key.public_key(), now, validity=validity), key

    def issue_for_key(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, now: datetime, *,
        validity: timedelta = DEVICE_VALIDITY,
    ) -> x509.Certificate:
        """A device identity for a key the device made (SCEP): EKU clientAuth, 64 random bits of serial."""
        # 64 random bits: unpredictable like CA/B Forum asks, yet short enough to read in logs.
        serial = secrets.randbits(64) or 1
        return (
            self._leaf(subject, public_key, now, validity, serial=serial)
            .add_extension(_key_usage(encipher=isinstance(public_key, rsa.RSAPublicKey)), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.private_key, hashes.SHA256())
        )

    def issue_registration_authority(
        self, common_name: str, now: datetime, *, validity: timedelta = SERVER_VALIDITY,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """An RSA SCEP RA certificate: devices encrypt their requests to it and it signs the replies (a CA
        that signs with EC cannot be a SCEP recipient, and iOS SCEP is RSA only)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        certificate = (
            self._leaf(_name(common_name, "mdmsim"), key.public_key(), now, validity)
            .add_extension(_key_usage(encipher=True), critical=True)
            .sign(self.private_key, hashes.SHA256())
        )
        return certificate, key

    def issue_push_certificate(
        self, topic: str, now: datetime, *, production: bool = True, validity: timedelta = PUSH_VALIDITY,
        key_type: KeyType | str = KeyType.RSA,
    ) -> tuple[x509.Certificate, PrivateKey]:
        """An MDM push certificate as Apple's push portal issues it: subject UID = topic, CN `APSP:<uuid>`,
        EKU clientAuth, and Apple's extension for the environment. RSA by default, as Apple's are."""
        key = generate_key(key_type)
        suffix = topic.rsplit(".", 1)[-1]
        subject = x509.Name([*_name(f"APSP:{suffix}"[:64]), x509.NameAttribute(NameOID.USER_ID, topic)])
        environment = APNS_PRODUCTION_OID if production else APNS_DEVELOPMENT_OID
        certificate = (
            self._leaf(subject, key.public_key(), now, validity)
            .add_extension(_key_usage(encipher=isinstance(key, rsa.RSAPrivateKey)), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.UnrecognizedExtension(environment, _DER_NULL), critical=False)
            .sign(self.private_key, hashes.SHA256())
        )
        return certificate, key

    def issue_signing_identity(
        self, common_name: str, now: datetime, *, key_type: KeyType | str = KeyType.EC,
        validity: timedelta = SERVER_VALIDITY,
    ) -> tuple[x509.Certificate, PrivateKey]:
        """A certificate that signs what the server sends (profiles): digitalSignature, no EKU, as Fleet's."""
        key = generate_key(key_type)
        certificate = (
            self._leaf(_name(common_name, "mdmsim"), key.public_key(), now, validity)
            .add_extension(_key_usage(), critical=True)
            .sign(self.private_key, hashes.SHA256())
        )
        return certificate, key

    def _leaf(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, now: datetime,
        validity: timedelta, *, serial: int | None = None,
    ) -> x509.CertificateBuilder:
        issuer_key = self.certificate.public_key()
        now = as_utc(now)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + validity, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False)
        )


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_directory(path: Path) -> None:
    """Create the data directory as 0700, or take an existing one back to it: it holds keys, tokens and the
    databases, and a file made 0600 in a world-listable directory still shows its name and size."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(mode & 0o700)


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` atomically with mode 0600 whatever the umask (keys must never be world-readable)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
