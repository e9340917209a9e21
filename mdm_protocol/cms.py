"""Detached CMS SignedData (RFC 5652) for `Mdm-Signature` and S/MIME: sign with cryptography, verify here.

cryptography can build CMS signatures but has no API to verify them (SPEC section 6), so verification parses
the structure with pyasn1, checks the signed attributes and verifies the signer's signature itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import base, namedtype, tag, univ
from pyasn1_modules import rfc4055, rfc5652

from .errors import ProtocolError

__all__ = [
    "SHA256",
    "SignatureError",
    "SignedDataInfo",
    "mdm_signature",
    "sign_detached",
    "verify_chain",
    "verify_detached",
    "verify_mdm_signature",
]

SHA256 = hashes.SHA256()
# An Mdm-Signature is about 2 KB; refusing large inputs bounds the pure-Python parser's work per request.
MAX_SIGNATURE_SIZE = 64 * 1024

_ID_DATA = "1.2.840.113549.1.7.1"
_ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_ATTR_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_ATTR_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_ATTR_SIGNING_TIME = "1.2.840.113549.1.9.5"

_DIGESTS = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
# Signature algorithm OID -> the hash it names (None: the hash is the SignerInfo's digestAlgorithm).
_RSA_PKCS1 = {
    "1.2.840.113549.1.1.1": None, "1.2.840.113549.1.1.5": "sha1", "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256", "1.2.840.113549.1.1.12": "sha384", "1.2.840.113549.1.1.13": "sha512",
}
_RSA_PSS = "1.2.840.113549.1.1.10"
_ECDSA = {
    "1.2.840.10045.2.1": None, "1.2.840.10045.4.1": "sha1", "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256", "1.2.840.10045.4.3.3": "sha384", "1.2.840.10045.4.3.4": "sha512",
}
_MGF1 = "1.2.840.113549.1.1.8"
# cryptography parses certificate fields lazily, so reading one can raise any of these on hostile input.
_CERTIFICATE_ERRORS = (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
_PURPOSE_NAMES = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
}

# Decoding is BER, not DER: Apple's CMS encoder writes indefinite lengths (as `openssl cms -stream` does), and
# only the signed attributes must be DER, which _checked_attribute_values enforces on their framing.
# pyasn1 is slow (tens of µs per structure), so the specs below keep what we never inspect opaque:
# certificates go to cryptography's parser as raw DER, and signed attributes stay raw TLVs because their
# exact bytes are what the signature covers.


def _context(number: int, fmt: int = tag.tagFormatConstructed) -> tag.Tag:
    return tag.Tag(tag.tagClassContext, fmt, number)


class _RawSet(univ.SetOf):
    componentType = univ.Any()


class _IssuerAndSerialNumber(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("issuer", univ.Any()),
        namedtype.NamedType("serialNumber", univ.Integer()),
    )


class _SignerIdentifier(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("issuerAndSerialNumber", _IssuerAndSerialNumber()),
        namedtype.NamedType(
            "subjectKeyIdentifier", univ.OctetString().subtype(implicitTag=_context(0, tag.tagFormatSimple))
        ),
    )


class _SignerInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", univ.Integer()),
        namedtype.NamedType("sid", _SignerIdentifier()),
        namedtype.NamedType("digestAlgorithm", rfc5652.DigestAlgorithmIdentifier()),
        namedtype.OptionalNamedType("signedAttrs", _RawSet().subtype(implicitTag=_context(0))),
        namedtype.NamedType("signatureAlgorithm", rfc5652.SignatureAlgorithmIdentifier()),
        namedtype.NamedType("signature", univ.OctetString()),
        namedtype.OptionalNamedType("unsignedAttrs", _RawSet().subtype(implicitTag=_context(1))),
    )


class _SignerInfos(univ.SetOf):
    componentType = _SignerInfo()


class _SignedData(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", univ.Integer()),
        namedtype.NamedType("digestAlgorithms", _RawSet()),
        namedtype.NamedType("encapContentInfo", rfc5652.EncapsulatedContentInfo()),
        namedtype.OptionalNamedType("certificates", _RawSet().subtype(implicitTag=_context(0))),
        namedtype.OptionalNamedType("crls", _RawSet().subtype(implicitTag=_context(1))),
        namedtype.NamedType("signerInfos", _SignerInfos()),
    )


class _SignedContentInfo(univ.Sequence):
    """rfc5652.ContentInfo with the content decoded as SignedData in the same pass (one decoder call)."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("contentType", rfc5652.ContentType()),
        namedtype.NamedType("content", _SignedData().subtype(explicitTag=_context(0))),
    )


# The attributes we check, by the last byte of their PKCS #9 OID 1.2.840.113549.1.9.n, with the spec of their
# one value. smimeCapabilities and any other attribute are covered by the signature but never decoded.
_PKCS9_OID_PREFIX = bytes.fromhex("06092a864886f70d0109")
_CHECKED_ATTRIBUTES = {
    3: (_ATTR_CONTENT_TYPE, rfc5652.ContentType()),
    4: (_ATTR_MESSAGE_DIGEST, rfc5652.MessageDigest()),
    5: (_ATTR_SIGNING_TIME, rfc5652.SigningTime()),
}


class SignatureError(ProtocolError):
    """A CMS signature that is malformed, unsupported, or does not prove the body came from its signer."""


@dataclass(frozen=True, slots=True)
class SignedDataInfo:
    """What a verified detached signature tells us: who signed, with which digest, and when they said."""

    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]  # the other embedded certificates (chain candidates)
    digest_algorithm: str  # "sha256", ...
    signing_time: datetime | None

    @property
    def signer_fingerprint(self) -> str:
        """SHA-256 of the signer certificate, lowercase hex: what an enrollment binds to (DESIGN 7)."""
        return self.signer.fingerprint(hashes.SHA256()).hex()


# --- signing -------------------------------------------------------------------------------------------


def sign_detached(
    data: bytes,
    certificate: x509.Certificate,
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    hash: hashes.HashAlgorithm = SHA256,
    rsa_padding: padding.PSS | padding.PKCS1v15 | None = None,
) -> bytes:
    """DER CMS SignedData over `data`, detached, signer certificate included; Binary keeps the bytes exact."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
    if rsa_padding is None:
        builder = builder.add_signer(certificate, private_key, hash)
    else:
        builder = builder.add_signer(certificate, private_key, hash, rsa_padding=rsa_padding)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(serialization.Encoding.DER, options)


def mdm_signature(
    body: bytes, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> str:
    """The `Mdm-Signature` header value for a request body: base64 of its detached CMS signature."""
    return base64.b64encode(sign_detached(body, certificate, private_key)).decode("ascii")


# --- verification --------------------------------------------------------------------------------------


def verify_mdm_signature(header: str | bytes, body: bytes, *, allow_sha1: bool = False) -> SignedDataInfo:
    """Verify an `Mdm-Signature` header value against the exact request body."""
    value = header.strip()
    if not value:
        raise SignatureError("Mdm-Signature is empty")
    try:
        der = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"Mdm-Signature is not base64: {exc}") from None
    return verify_detached(der, body, allow_sha1=allow_sha1)


def verify_detached(signature_der: bytes, data: bytes, *, allow_sha1: bool = False) -> SignedDataInfo:
    """Verify a detached CMS SignedData over `data`; SHA-1 digests are refused unless `allow_sha1`.

    This proves the holder of the signer certificate's key signed exactly `data`, nothing more: the caller
    must bind `signer` to the enrollment (its fingerprint) or check it with `verify_chain`.
    """
    signed = _decode_signed_data(signature_der)
    signer_info = _single_signer(signed)
    certificates = _load_certificates(signed)
    signer = _find_signer(signer_info["sid"], certificates)
    digest_name = _digest_name(signer_info["digestAlgorithm"]["algorithm"], allow_sha1)
    content_type = str(signed["encapContentInfo"]["eContentType"])
    signing_time = None
    if signer_info["signedAttrs"].isValue:
        raw_attributes = [bytes(attribute) for attribute in signer_info["signedAttrs"]]
        signing_time = _check_signed_attributes(raw_attributes, content_type, digest_name, data)
        # RFC 5652 section 5.4: the signature covers the DER SET OF the attributes, not the [0] encoding.
        message = _der_set(raw_attributes)
    elif content_type != _ID_DATA:
        raise SignatureError(f"content type {content_type} needs signed attributes, and there are none")
    else:
        message = data
    _verify_signature(_public_key(signer), signer_info, digest_name, message)
    others = tuple(c for c in certificates if c is not signer)
    return SignedDataInfo(signer, others, digest_name, signing_time)


def _decode(substrate: bytes, spec: base.Asn1Item, what: str) -> base.Asn1Item:
    """Decode one whole value; any parser failure (pyasn1 raises several kinds) becomes SignatureError."""
    try:
        value, rest = decoder.decode(substrate, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        raise SignatureError(f"{what} is malformed: {type(exc).__name__}: {exc}"[:300]) from None
    if rest:
        raise SignatureError(f"{what} has {len(rest)} trailing bytes")
    return value


def _decode_signed_data(signature_der: bytes) -> univ.Sequence:
    if not isinstance(signature_der, bytes | bytearray | memoryview):
        raise SignatureError(f"a CMS signature is bytes, not {type(signature_der).__name__}")
    if not signature_der:
        raise SignatureError("the CMS signature is empty")
    if len(signature_der) > MAX_SIGNATURE_SIZE:
        raise SignatureError(f"the CMS signature is {len(signature_der)} bytes, over {MAX_SIGNATURE_SIZE}")
    try:
        content_info = _decode(bytes(signature_der), _SignedContentInfo(), "the SignedData")
    except SignatureError as fast_path_error:
        raise _explain_failure(bytes(signature_der)) from fast_path_error
    if str(content_info["contentType"]) != _ID_SIGNED_DATA:
        raise _explain_failure(bytes(signature_der))
    signed = content_info["content"]
    if signed["encapContentInfo"]["eContent"].isValue:
        raise SignatureError("the signature embeds its content; a detached signature was expected")
    return signed


def _explain_failure(signature_der: bytes) -> SignatureError:
    """Why the one-pass decode failed, said precisely (a slow path: only bad input gets here)."""
    try:
        content_info = _decode(signature_der, rfc5652.ContentInfo(), "the signature (not CMS)")
    except SignatureError as error:
        return error
    content_type = str(content_info["contentType"])
    if content_type != _ID_SIGNED_DATA:
        return SignatureError(f"the CMS content is not SignedData (content type {content_type})")
    try:
        _decode(bytes(content_info["content"]), _SignedData(), "the SignedData")
    except SignatureError as error:
        return error
    return SignatureError("the SignedData is malformed")


def _single_signer(signed: univ.Sequence) -> univ.Sequence:
    signer_infos = signed["signerInfos"]
    if len(signer_infos) == 0:
        raise SignatureError("the SignedData has no signer")
    if len(signer_infos) > 1:
        raise SignatureError(f"the SignedData has {len(signer_infos)} signers; exactly one is supported")
    return signer_infos[0]


def _load_certificates(signed: univ.Sequence) -> list[x509.Certificate]:
    certificates = []
    if not signed["certificates"].isValue:
        return certificates
    for choice in signed["certificates"]:
        raw = bytes(choice)
        if raw[:1] != b"\x30":  # attribute and other certificate formats: never a signer, skip them
            continue
        try:
            certificates.append(x509.load_der_x509_certificate(raw))
        except (ValueError, x509.InvalidVersion) as exc:
            raise SignatureError(f"an embedded certificate is malformed: {exc}") from None
    return certificates


def _find_signer(sid: univ.Choice, certificates: Sequence[x509.Certificate]) -> x509.Certificate:
    by_issuer = sid.getName() == "issuerAndSerialNumber"
    if by_issuer:
        issuer = bytes(sid["issuerAndSerialNumber"]["issuer"])
        serial = int(sid["issuerAndSerialNumber"]["serialNumber"])
    else:
        key_id = bytes(sid["subjectKeyIdentifier"])
    for certificate in certificates:
        try:
            if by_issuer:
                found = certificate.serial_number == serial and certificate.issuer.public_bytes() == issuer
            else:
                found = _subject_key_identifier(certificate) == key_id
        except _CERTIFICATE_ERRORS:
            continue
        if found:
            return certificate
    raise SignatureError("the signer certificate is not among the embedded certificates")


def _public_key(certificate: x509.Certificate) -> object:
    try:
        return certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"the signer's public key is unusable: {exc}") from None


def _subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _digest_name(oid: univ.ObjectIdentifier, allow_sha1: bool) -> str:
    name = _DIGESTS.get(str(oid))
    if name is None:
        raise SignatureError(f"unsupported digest algorithm {oid}")
    if name == "sha1" and not allow_sha1:
        raise SignatureError("unsupported digest algorithm sha1 (SHA-1 is refused)")
    return name


def _check_signed_attributes(
    raw_attributes: Sequence[bytes], content_type: str, digest_name: str, data: bytes
) -> datetime | None:
    """RFC 5652 section 11: contentType must match and messageDigest must be the digest of the content."""
    values = _checked_attribute_values(raw_attributes)
    if _ATTR_CONTENT_TYPE not in values or _ATTR_MESSAGE_DIGEST not in values:
        raise SignatureError("the signed attributes lack contentType or messageDigest")
    signed_type = str(values[_ATTR_CONTENT_TYPE])  # already decoded, one value each
    if signed_type != content_type:
        raise SignatureError(f"contentType attribute {signed_type} differs from the content {content_type}")
    claimed = bytes(values[_ATTR_MESSAGE_DIGEST])
    if not hmac.compare_digest(claimed, hashlib.new(digest_name, data).digest()):
        raise SignatureError("the messageDigest does not match: signature over a different body")
    if _ATTR_SIGNING_TIME not in values:
        return None
    return _signing_time(values[_ATTR_SIGNING_TIME])


def _checked_attribute_values(raw_attributes: Sequence[bytes]) -> dict[str, base.Asn1Item]:
    """The single value of each attribute we check, decoded; other attributes are left alone."""
    values: dict[str, base.Asn1Item] = {}
    for raw in raw_attributes:
        # Framing is read by hand because a pyasn1 call costs ~40 µs and this runs on every request.
        _, start, end = _der_header(raw, 0)
        if not raw.startswith(_PKCS9_OID_PREFIX, start):
            continue
        kind_byte = start + len(_PKCS9_OID_PREFIX)
        checked = _CHECKED_ATTRIBUTES.get(raw[kind_byte]) if kind_byte < end else None
        if checked is None:
            continue
        kind, spec = checked
        set_tag, set_start, set_end = _der_header(raw, kind_byte + 1)
        _, _, value_end = _der_header(raw, set_start) if set_start < set_end else (0, 0, -1)
        if set_tag != 0x31 or set_end != end or value_end != set_end or kind in values:
            raise SignatureError(f"signed attribute {kind} must appear once with exactly one value")
        values[kind] = _decode(raw[set_start:set_end], spec, f"the signed attribute {kind}")
    return values


def _der_header(buffer: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER TLV at `offset`, which must fit in `buffer`."""
    if offset + 2 > len(buffer):
        raise SignatureError("a signed attribute is truncated")
    tag_byte, first = buffer[offset], buffer[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        length_bytes = buffer[start : start + count]
        if count == 0 or count > 3 or len(length_bytes) != count or length_bytes[0] == 0:
            raise SignatureError("a signed attribute has a non-DER length")
        length, start = int.from_bytes(length_bytes, "big"), start + count
    if tag_byte & 0x1F == 0x1F or start + length > len(buffer):
        raise SignatureError("a signed attribute is malformed")
    return tag_byte, start, start + length


def _signing_time(time: univ.Choice) -> datetime:
    try:
        moment = time.getComponent().asDateTime
    except (PyAsn1Error, ValueError) as exc:
        raise SignatureError(f"the signingTime attribute is not a valid time: {exc}") from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _der_set(elements: Sequence[bytes]) -> bytes:
    # DER orders SET OF elements by their encodings, as OpenSSL does when it re-encodes for verification.
    body = b"".join(sorted(elements))
    return b"\x31" + _der_length(len(body)) + body


def _verify_signature(
    public_key: object, signer_info: univ.Sequence, digest_name: str, message: bytes
) -> None:
    algorithm = str(signer_info["signatureAlgorithm"]["algorithm"])
    signature = bytes(signer_info["signature"])
    chosen = _HASHES[digest_name]()
    try:
        if algorithm in _ECDSA and isinstance(public_key, ec.EllipticCurvePublicKey):
            _same_hash(_ECDSA[algorithm], digest_name)
            public_key.verify(signature, message, ec.ECDSA(chosen))
        elif algorithm in _RSA_PKCS1 and isinstance(public_key, rsa.RSAPublicKey):
            _same_hash(_RSA_PKCS1[algorithm], digest_name)
            public_key.verify(signature, message, padding.PKCS1v15(), chosen)
        elif algorithm == _RSA_PSS and isinstance(public_key, rsa.RSAPublicKey):
            pss = _pss_padding(signer_info["signatureAlgorithm"]["parameters"], digest_name)
            public_key.verify(signature, message, pss, chosen)
        elif algorithm in _ECDSA or algorithm in _RSA_PKCS1 or algorithm == _RSA_PSS:
            raise SignatureError(f"signature algorithm {algorithm} does not fit the signer's key")
        else:
            raise SignatureError(f"unsupported signature algorithm {algorithm}")
    except InvalidSignature:
        raise SignatureError("bad signature: it does not verify with the signer's public key") from None
    except ValueError as exc:  # e.g. a PSS salt longer than the key allows
        raise SignatureError(f"bad signature parameters: {exc}") from None


def _same_hash(named: str | None, digest_name: str) -> None:
    if named is not None and named != digest_name:
        raise SignatureError(f"unsupported algorithm mix: a {named} signature over a {digest_name} digest")


def _pss_padding(parameters: univ.Any, digest_name: str) -> padding.PSS:
    if not parameters.isValue:
        raise SignatureError("RSASSA-PSS signature without parameters")
    params = _decode(bytes(parameters), rfc4055.RSASSA_PSS_params(), "the RSASSA-PSS-params")
    # Absent fields take RFC 4055's defaults (SHA-1), which we refuse below like any SHA-1 mismatch.
    hash_name = _DIGESTS.get(str(params["hashAlgorithm"]["algorithm"]), "sha1")
    _same_hash(hash_name, digest_name)
    mgf = params["maskGenAlgorithm"]
    if str(mgf["algorithm"]) != _MGF1:
        raise SignatureError(f"unsupported RSASSA-PSS mask generation {mgf['algorithm']}")
    mgf_hash = _decode(bytes(mgf["parameters"]), rfc5652.DigestAlgorithmIdentifier(), "the MGF1 hash")
    mgf_name = _DIGESTS.get(str(mgf_hash["algorithm"]))
    if mgf_name is None or mgf_name == "sha1":
        raise SignatureError(f"unsupported RSASSA-PSS MGF1 hash {mgf_hash['algorithm']}")
    salt_length = int(params["saltLength"])
    if not 0 <= salt_length <= 1024:
        raise SignatureError(f"RSASSA-PSS salt length {salt_length} is out of range")
    return padding.PSS(mgf=padding.MGF1(_HASHES[mgf_name]()), salt_length=salt_length)


# --- certificate chains --------------------------------------------------------------------------------


def verify_chain(
    certificate: x509.Certificate,
    roots: Sequence[x509.Certificate],
    *,
    intermediates: Sequence[x509.Certificate] = (),
    now: datetime,
    purpose: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> None:
    """Check `certificate` chains to one of `roots` and is valid at `now` (naive means UTC).

    The leaf needs no SAN (device identities have none); if it has an extendedKeyUsage it must allow
    `purpose` (clientAuth for device identities, emailProtection for S/MIME; None skips the check).
    """
    moment = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    _check_validity(certificate, moment)
    _check_purpose(certificate, purpose)
    if not roots:
        raise SignatureError("no trusted root certificates to verify against")
    leaf_policy = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, verification.Criticality.AGNOSTIC, None)
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(roots)))
        .time(moment)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(certificate, list(intermediates))
    except (verification.VerificationError, *_CERTIFICATE_ERRORS) as exc:
        raise SignatureError(f"certificate does not chain to a trusted CA: {exc}") from None


def _check_validity(certificate: x509.Certificate, moment: datetime) -> None:
    try:
        subject = certificate.subject.rfc4514_string()
    except _CERTIFICATE_ERRORS:
        subject = "(malformed subject)"
    if moment < certificate.not_valid_before_utc:
        raise SignatureError(f"certificate {subject} is not valid before {certificate.not_valid_before_utc}")
    if moment > certificate.not_valid_after_utc:
        raise SignatureError(f"certificate {subject} expired at {certificate.not_valid_after_utc}")


def _check_purpose(certificate: x509.Certificate, purpose: x509.ObjectIdentifier | None) -> None:
    if purpose is None:
        return
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    except _CERTIFICATE_ERRORS as exc:
        raise SignatureError(f"certificate extensions are malformed: {exc}") from None
    if purpose not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        name = _PURPOSE_NAMES.get(purpose, purpose.dotted_string)
        raise SignatureError(f"certificate is not for {name}: its extendedKeyUsage excludes it")
