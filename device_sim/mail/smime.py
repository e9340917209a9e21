"""S/MIME for simulated devices: sign, verify, encrypt and decrypt real RFC 8551 messages.

Signing and enveloping use cryptography's PKCS7 builders; verification goes through mdm_protocol.cms.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mdm_protocol.certificate_chain import verify_chain
from mdm_protocol.cms import SignatureError, verify_detached

from ..keychain import Moment, as_utc
from .errors import SMIMEError
from .mime_entity import CRLF, Entity, message_bytes, multipart_parts, parse_entity, split_envelope
from .recipients import Recipient, describe_recipients, envelope_recipients

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
ENVELOPE_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
# CVE-2026-69247: pkcs7_decrypt_* before 50.0 was a Bleichenbacher oracle (SPEC 6); refuse to decrypt with it.
FIXED_CRYPTOGRAPHY = (50, 0)
_SIGNED_HEADER = (b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;'
                  b'\r\n boundary="%s"')
_SIGNATURE_FIELDS = (b"Content-Type: application/pkcs7-signature; name=smime.p7s",
                     b"Content-Transfer-Encoding: base64",
                     b"Content-Disposition: attachment; filename=smime.p7s")
_ENVELOPE_FIELDS = (b"MIME-Version: 1.0",
                    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
                    b"Content-Transfer-Encoding: base64",
                    b"Content-Disposition: attachment; filename=smime.p7m")


@dataclass(frozen=True, slots=True)
class Verified:
    """A signature that verified and chains to a trusted root: who signed, and the exact signed entity."""

    signer: x509.Certificate
    content: bytes  # the signed MIME entity (its headers and body), canonical CRLF
    certificates: tuple[x509.Certificate, ...] = ()  # other certificates the signer attached
    signing_time: datetime | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        return certificate_addresses(self.signer)


@dataclass(frozen=True, slots=True)
class Decrypted:
    """A decrypted entity and which of the offered keys opened it (its index in the sequence given)."""

    content: bytes
    certificate: x509.Certificate
    key_index: int


def certificate_addresses(certificate: x509.Certificate) -> tuple[str, ...]:
    """The mail addresses a certificate names (rfc822Name SANs, then subject emailAddress), lower case."""
    found: list[str] = []
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found += names.get_values_for_type(x509.RFC822Name)
    except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
        pass
    with contextlib.suppress(ValueError):
        emails = certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
        found += [str(item.value) for item in emails]
    return tuple(dict.fromkeys(address.strip().lower() for address in found if address.strip()))


def describe_certificate(certificate: x509.Certificate) -> str:
    addresses = certificate_addresses(certificate)
    if addresses:
        return addresses[0]
    return certificate.subject.rfc4514_string() or f"serial {certificate.serial_number:#x}"


# --- signing -----------------------------------------------------------------------------------------------


def sign(message: Message | bytes, certificate: x509.Certificate, private_key: PrivateKey, *,
         extra_certificates: Iterable[x509.Certificate] = ()) -> bytes:
    """`message` as multipart/signed (RFC 8551 3.5.3), SHA-256 detached CMS, signer certificate included.

    Message headers (From, To, Subject...) stay outside; the Content-* entity is what gets signed.
    `extra_certificates` ride along in the signature, as iOS attaches the encryption certificate.
    """
    envelope, entity = split_envelope(message_bytes(message))
    content = entity.to_bytes()
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(certificate, private_key,
                                                                        hashes.SHA256())
    for extra in extra_certificates:  # after add_signer: cryptography's add_signer drops earlier extras
        builder = builder.add_certificate(extra)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    try:
        produced = builder.sign(serialization.Encoding.SMIME, options)
    except (TypeError, ValueError) as exc:
        raise SMIMEError(f"cannot sign with {describe_certificate(certificate)}: {exc}") from None
    return b"".join(field + CRLF for field in envelope) + _rfc8551_signed(produced, content)


def _rfc8551_signed(produced: bytes, content: bytes) -> bytes:
    """cryptography's x-pkcs7-signature output rewritten with RFC 8551 types, the signed part untouched."""
    outer = parse_entity(produced)
    parts = multipart_parts(outer)
    if len(parts) != 2 or parts[0] != content:
        raise SMIMEError("cryptography's signed output does not carry the signed entity byte for byte")
    boundary = (outer.param("boundary") or "").encode("ascii")
    signature = Entity(_SIGNATURE_FIELDS, parse_entity(parts[1]).body)
    body = (b"This is an S/MIME signed message\r\n\r\n--" + boundary + CRLF + content + b"\r\n--" + boundary
            + CRLF + signature.to_bytes() + b"\r\n--" + boundary + b"--\r\n")
    rewritten = Entity((b"MIME-Version: 1.0", _SIGNED_HEADER % boundary), body)
    if multipart_parts(rewritten)[0] != content:  # the property the signature depends on
        raise SMIMEError("the rewritten signed message no longer carries the signed entity byte for byte")
    return rewritten.to_bytes()


def verify(mime_bytes: bytes, *, roots: Sequence[x509.Certificate], now: Moment,
           intermediates: Sequence[x509.Certificate] = ()) -> Verified:
    """Check a multipart/signed message: the signature covers the first part, the signer chains to `roots`."""
    outer = parse_entity(message_bytes(mime_bytes))
    if outer.content_type != "multipart/signed":
        raise SMIMEError(f"not a signed message: its Content-Type is {outer.content_type}")
    protocol = (outer.param("protocol") or "").lower()
    if protocol not in SIGNATURE_TYPES:
        raise SMIMEError(f"multipart/signed with protocol {protocol or '(none)'!r} is not S/MIME")
    parts = multipart_parts(outer)
    if len(parts) != 2:
        raise SMIMEError(f"a signed message has 2 parts (content, signature), this one has {len(parts)}")
    signature = parse_entity(parts[1])
    if signature.content_type not in SIGNATURE_TYPES:
        raise SMIMEError(f"the second part is {signature.content_type}, not an S/MIME signature")
    try:
        info = verify_detached(signature.decoded_body(), parts[0])
    except SignatureError as exc:
        raise SMIMEError(_signature_failure(exc.reason)) from None
    try:
        verify_chain(info.signer, roots, intermediates=[*info.certificates, *intermediates], now=as_utc(now),
                     purpose=ExtendedKeyUsageOID.EMAIL_PROTECTION)
    except SignatureError as exc:
        who = describe_certificate(info.signer)
        raise SMIMEError(f"the signer {who} is not trusted: {exc.reason}") from None
    return Verified(info.signer, parts[0], info.certificates, info.signing_time)


def _signature_failure(reason: str) -> str:
    if "messageDigest does not match" in reason or reason.startswith("bad signature:"):
        return f"signature does not match the content: the message was changed after it was signed ({reason})"
    return f"the S/MIME signature is invalid: {reason}"


# --- encryption --------------------------------------------------------------------------------------------


def encrypt(message: Message | bytes, recipients: Sequence[x509.Certificate], *,
            aes256: bool = False) -> bytes:
    """`message` as application/pkcs7-mime enveloped-data for `recipients` (RSA key transport).

    AES-128-CBC by default (RFC 5751's MUST), AES-256-CBC on request. Message headers stay outside.
    """
    envelope, entity = split_envelope(message_bytes(message))
    if not recipients:
        raise SMIMEError("an encrypted message needs at least one recipient certificate")
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(entity.to_bytes())
    seen: set[bytes] = set()
    for certificate in recipients:
        if not isinstance(certificate, x509.Certificate):
            raise SMIMEError(f"a recipient must be an x509.Certificate, not {type(certificate).__name__}")
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
            kind = "an elliptic-curve (EC)" if is_ec else "a non-RSA"
            raise SMIMEError(f"cannot encrypt to {describe_certificate(certificate)}: its certificate has "
                             f"{kind} key and S/MIME encryption here supports RSA recipients only")
        digest = certificate.fingerprint(hashes.SHA256())
        if digest not in seen:
            seen.add(digest)
            builder = builder.add_recipient(certificate)
    builder = builder.set_content_encryption_algorithm(algorithms.AES256 if aes256 else algorithms.AES128)
    der = builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    encoded = base64.encodebytes(der).replace(b"\n", CRLF)
    return b"".join(field + CRLF for field in envelope) + Entity(_ENVELOPE_FIELDS, encoded).to_bytes()


def decrypt(mime_bytes: bytes, keys: Sequence[tuple[x509.Certificate, PrivateKey]]) -> bytes:
    """The entity inside an enveloped-data message, opened with the first of `keys` it was encrypted for."""
    return decrypt_detailed(mime_bytes, keys).content


def decrypt_detailed(mime_bytes: bytes, keys: Sequence[tuple[x509.Certificate, PrivateKey]]) -> Decrypted:
    """As `decrypt`, also saying which key opened it. Keys go in preference order: current, then archived."""
    require_fixed_cryptography(cryptography.__version__)
    outer = parse_entity(message_bytes(mime_bytes))
    if outer.content_type not in ENVELOPE_TYPES:
        raise SMIMEError(f"not an encrypted message: its Content-Type is {outer.content_type}")
    smime_type = (outer.param("smime-type") or "enveloped-data").lower()
    if smime_type != "enveloped-data":
        raise SMIMEError(f"smime-type {smime_type} is not supported here (only enveloped-data)")
    der = outer.decoded_body()
    recipients = envelope_recipients(der)
    candidates = [(index, certificate, key) for index, (certificate, key) in enumerate(keys)
                  if isinstance(key, rsa.RSAPrivateKey) and any(r.matches(certificate) for r in recipients)]
    if candidates:
        _require_readable_recipients(recipients)
    for index, certificate, key in candidates:
        try:
            content = pkcs7.pkcs7_decrypt_der(der, certificate, key, [])
        except ValueError:
            continue  # one uniform outcome whatever went wrong: no padding oracle through our errors either
        return Decrypted(message_bytes(content), certificate, index)
    if candidates:
        names = ", ".join(describe_certificate(certificate) for _, certificate, _ in candidates)
        raise SMIMEError(f"the message could not be decrypted with the key for {names}: it is damaged or "
                         "its key was not made for that certificate")
    raise SMIMEError("no key on this device can decrypt this message "
                     f"(it was encrypted for {describe_recipients(recipients)})")


def _require_readable_recipients(recipients: Sequence[Recipient]) -> None:
    # cryptography parses only issuer-and-serial key transport (openssl cms -keyid writes subject key ids).
    odd = [r for r in recipients if r.kind != "key-transport" or r.subject_key_identifier is not None]
    if odd:
        raise SMIMEError(f"cannot decrypt: the message names {describe_recipients(odd)}, and cryptography "
                         "reads only recipients named by issuer and serial number (key transport)")


def require_fixed_cryptography(version: str) -> None:
    """Refuse to decrypt with a cryptography release that still has the PKCS#7 decryption oracle."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        raise SMIMEError(f"cannot tell whether cryptography {version!r} has the CVE-2026-69247 fix") from None
    if major_minor < FIXED_CRYPTOGRAPHY:
        raise SMIMEError(f"refusing to decrypt with cryptography {version}: releases before 50.0 leak a "
                         "Bleichenbacher oracle (CVE-2026-69247); upgrade cryptography")


def message_kind(mime_bytes: bytes) -> str:
    """"encrypted", "signed" or "plain", judged from the outer Content-Type."""
    content_type = parse_entity(message_bytes(mime_bytes)).content_type
    if content_type in ENVELOPE_TYPES:
        return "encrypted"
    return "signed" if content_type == "multipart/signed" else "plain"
