"""Signed and encrypted configuration profiles (SPEC 8): a profile as CMS SignedData, and EncryptedPayloadContent.

The server signs with `sign_profile`; the device and `mdmsim profile lint` read back with `open_signed_profile`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .certificate_chain import verify_chain
from .cms import sign_embedded, signed_certificates, signed_content, verify_embedded
from .errors import INSTALLATION, PROFILE, PlistError, ProfileError, SignatureError, error_chain
from .plist import decode_plist
from .scep_envelope import EnvelopeError, open_envelope

# A profile with a few certificates and fonts is well under a megabyte; the bound caps the parser's work.
MAX_SIGNED_PROFILE = 8 * 1024 * 1024


class SignatureStatus(enum.StrEnum):
    """What a device can say of a signed profile (iOS shows Verified or Not Verified; it installs either)."""

    VERIFIED = "verified"  # the signature holds and the signer chains to a trusted root
    UNTRUSTED = "untrusted"  # the signature holds; the signer does not chain to a trusted root
    INVALID = "invalid"  # the signature does not verify (tampered content, wrong key)


@dataclass(frozen=True, slots=True)
class SignedProfile:
    """A signed profile opened: its content, its signer (then the other embedded certificates) and the verdict."""

    content: bytes
    certificates: tuple[x509.Certificate, ...]
    status: SignatureStatus
    reason: str  # why it is not VERIFIED ("" when it is)

    @property
    def verified(self) -> bool:
        return self.status is SignatureStatus.VERIFIED

    @property
    def signer(self) -> x509.Certificate | None:
        return self.certificates[0] if self.certificates else None


def sign_profile(profile: bytes, certificate: x509.Certificate,
                 private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *,
                 chain: Sequence[x509.Certificate] = ()) -> bytes:
    """The profile plist as the encapsulated content of a DER CMS SignedData by `certificate`, `chain` embedded."""
    return sign_embedded(profile, certificate, private_key, certificates=chain)


def open_signed_profile(data: bytes, *, roots: Sequence[x509.Certificate], now: datetime) -> SignedProfile | None:
    """`data` unwrapped when it is a CMS SignedData, None when it is not CMS (a plain plist).

    A signature that does not verify is no refusal (iOS installs it as Not Verified); SignatureError only when
    the CMS itself cannot be read or carries no content.
    """
    content = signed_content(data)
    if content is None:
        return None
    try:
        verified = verify_embedded(data, max_size=MAX_SIGNED_PROFILE)
    except SignatureError as exc:
        return SignedProfile(content, _embedded(data), SignatureStatus.INVALID, exc.reason)
    info = verified.info
    certificates = (info.signer, *info.certificates)
    try:
        verify_chain(info.signer, roots, intermediates=info.certificates, now=now, purpose=None)
    except SignatureError as exc:
        return SignedProfile(content, certificates, SignatureStatus.UNTRUSTED, exc.reason)
    return SignedProfile(content, certificates, SignatureStatus.VERIFIED, "")


def unsigned(data: bytes) -> bytes:
    """The plist of a profile as sent: a signed profile's content (signature not checked), else `data` itself."""
    content = signed_content(data)
    return data if content is None else content


def unreadable_signed_profile(reason: str) -> ProfileError:
    """What iOS reports for CMS that holds no readable signed profile: the chain of any unparseable profile."""
    chain = error_chain(INSTALLATION[4000], (PROFILE[1000], "The profile is not properly formatted."))
    return ProfileError(f"profile is CMS but cannot be read: {reason}", chain)


def describe_signature(signed: SignedProfile) -> str:
    """One line for people (`profile lint`): who signed and whether a device would show it as Verified."""
    signer = "an unknown signer" if signed.signer is None else signed.signer.subject.rfc4514_string()
    if signed.status is SignatureStatus.VERIFIED:
        return f"CMS-signed by {signer}; signature verified, the signer chains to a trusted root"
    if signed.status is SignatureStatus.UNTRUSTED:
        return f"CMS-signed by {signer}; signature valid but not verified: {signed.reason}"
    return f"CMS-signed by {signer}; the signature does NOT verify ({signed.reason}); iOS installs it as Not Verified"


def _embedded(data: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return signed_certificates(data, max_size=MAX_SIGNED_PROFILE)
    except SignatureError:
        return ()


class DecryptError(Exception):
    """EncryptedPayloadContent that no identity of ours opens, or that holds no payload array."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Identity = tuple[x509.Certificate, Any]  # (certificate, private key)


def decrypt_payload_content(encrypted: Any, identities: Iterable[Identity]) -> list[Any]:
    """The payload array in `EncryptedPayloadContent` (CMS EnvelopedData of the plist array), opened with the
    first identity it is addressed to: RSA key transport or EC key agreement (RFC 5753), as openssl cms makes."""
    if not isinstance(encrypted, bytes | bytearray):
        raise DecryptError("EncryptedPayloadContent is not data")
    tried = 0
    for certificate, key in identities:
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            continue
        tried += 1
        try:
            opened = open_envelope(bytes(encrypted), certificate, key)
        except EnvelopeError:
            continue
        return _payload_array(opened.content)
    if not tried:
        raise DecryptError("no RSA or EC identity on the device to decrypt EncryptedPayloadContent with")
    raise DecryptError(f"EncryptedPayloadContent is not addressed to any of the device's {tried} identities "
                       "(or none of their keys opens it)")


def _payload_array(content: bytes) -> list[Any]:
    try:
        value = decode_plist(content)
    except PlistError as exc:
        raise DecryptError(f"the decrypted payload content is not a property list: {exc.reason}") from None
    if not isinstance(value, list):
        raise DecryptError(f"the decrypted payload content is a {type(value).__name__}, not an array")
    return value


__all__ = [
    "MAX_SIGNED_PROFILE", "DecryptError", "SignatureStatus", "SignedProfile", "decrypt_payload_content",
    "describe_signature", "open_signed_profile", "sign_profile", "unreadable_signed_profile",
    "unsigned",
]
