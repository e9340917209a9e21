"""Checks a user's uploaded PKCS#12 (password, exactly one private key, its certificate, validity dates).

An accepted upload is re-exported once as the P12 that profiles embed, so rendering never parses it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ..ca import as_utc
from ..pki import Pkcs12Contents, Pkcs12Encryption, PkiError, export_pkcs12, load_pkcs12, random_password
from .contracts import AdminError
from .pkcs12_bags import count_bags, is_pkcs12

MAX_P12_BYTES = 256 * 1024  # a P12 with one identity and its chain is a few KB


@dataclass(frozen=True, slots=True)
class AcceptedUpload:
    """A checked identity and the P12 a profile will carry (legacy suite, fresh random password)."""

    contents: Pkcs12Contents
    fingerprint: str  # lowercase hex SHA-256 of the certificate
    profile_p12: bytes
    profile_password: str
    warnings: tuple[str, ...]


def accept_upload(data: bytes, password: str | None, *, require_password: bool, now: datetime,
                  friendly_name: str) -> AcceptedUpload:
    """The upload, checked as EPMM's portal does; AdminError (400) with a reason the user can act on."""
    if not data:
        raise AdminError("the P12 file is empty")
    if len(data) > MAX_P12_BYTES:
        raise AdminError(f"the P12 file is {len(data)} bytes; at most {MAX_P12_BYTES} are accepted")
    if require_password and not password:
        raise AdminError("this certificate setting requires a password-protected P12: give its password")
    if not is_pkcs12(data):
        raise AdminError("the file is not a PKCS#12 (.p12/.pfx) file")
    contents = _open(data, password)
    _check_key_count(count_bags(data, password or None).private_keys)
    fingerprint = contents.certificate.fingerprint(hashes.SHA256()).hex()
    profile_password = random_password()
    # Legacy suite: the one every emulated iOS version imports (see pki.Pkcs12Encryption).
    profile_p12 = export_pkcs12(contents.certificate, contents.private_key, profile_password, friendly_name,
                                chain=contents.chain, encryption=Pkcs12Encryption.LEGACY)
    warnings = _validity_warnings(contents, now)
    return AcceptedUpload(contents, fingerprint, profile_p12, profile_password, warnings)


def _open(data: bytes, password: str | None) -> Pkcs12Contents:
    if not password:
        return _open_without_password(data)
    try:
        return load_pkcs12(data, password)
    except PkiError as exc:
        if exc.reason.startswith("wrong password"):  # the file parsed as a PFX, so the MAC check failed
            raise AdminError("wrong password for this P12 file") from None
        _check_key_count(count_bags(data, password).private_keys)
        raise AdminError(f"the P12 cannot be used: {exc.reason}") from None


def _check_key_count(keys: int) -> None:
    if keys == 0:
        raise AdminError("the P12 holds no private key; export the certificate with its key")
    if keys > 1:
        raise AdminError(f"the P12 holds {keys} private keys; upload a file with exactly one identity "
                         "(one certificate and its private key)")


def _open_without_password(data: bytes) -> Pkcs12Contents:
    """pki refuses empty passwords (profiles need one); an upload may lack one when the setting allows it."""
    try:
        loaded = pkcs12.load_pkcs12(data, None)
    except ValueError:
        raise AdminError("this P12 file is password-protected: give its password") from None
    if loaded.key is None:
        raise AdminError("the P12 holds no private key; export the certificate with its key")
    if loaded.cert is None:
        raise AdminError("the P12 holds no certificate for its private key")
    if not isinstance(loaded.key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise AdminError(f"the P12 key is a {type(loaded.key).__name__}; only RSA and EC keys are supported")
    certificate = loaded.cert.certificate
    if loaded.key.public_key() != certificate.public_key():
        raise AdminError("the P12 private key does not belong to its certificate")
    name = loaded.cert.friendly_name
    chain = tuple(extra.certificate for extra in loaded.additional_certs)
    return Pkcs12Contents(certificate, loaded.key, chain, name.decode("utf-8", "replace") if name else None)


def _validity_warnings(contents: Pkcs12Contents, now: datetime) -> tuple[str, ...]:
    certificate, moment = contents.certificate, as_utc(now)
    if certificate.not_valid_after_utc <= moment:
        return (f"the certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d}; devices will not "
                "use it to sign, and mail encrypted to it cannot be sent",)
    if certificate.not_valid_before_utc > moment:
        return (f"the certificate is not valid before {certificate.not_valid_before_utc:%Y-%m-%d}",)
    return ()
