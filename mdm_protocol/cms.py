"""Detached CMS SignedData (RFC 5652) for `Mdm-Signature` and S/MIME: sign with cryptography, verify here.

cryptography can build CMS signatures but has no API to verify them (SPEC section 6), so verification reads
the structure with `_cms_asn1`, checks the signed attributes and verifies the signer's signature itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from ._cms_asn1 import (
    ID_MGF1,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    Asn1Error,
    Attribute,
    BerReader,
    SignedData,
    SignerInfo,
    certificate_issuer,
    der_set,
    oid_text,
    read_content_info,
    read_encapsulated_content,
    read_pss_parameters,
    read_signed_data,
    read_time,
)
from ._cms_template import Templates
from .certificate_chain import CERTIFICATE_ERRORS as _CERTIFICATE_ERRORS
from .errors import SignatureError

__all__ = [
    "SHA256",
    "EmbeddedSignedData",
    "SignatureError",
    "SignedDataInfo",
    "mdm_signature",
    "sign_detached",
    "sign_embedded",
    "signed_certificates",
    "verify_detached",
    "verify_embedded",
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
# The signed attributes we check; smimeCapabilities and any other are covered by the signature, no more.
_CHECKED_ATTRIBUTES = frozenset({_ATTR_CONTENT_TYPE, _ATTR_MESSAGE_DIGEST, _ATTR_SIGNING_TIME})

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
        return _fingerprint(self.signer)


# --- signing -------------------------------------------------------------------------------------------


def sign_detached(
    data: bytes,
    certificate: x509.Certificate,
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    hash: hashes.HashAlgorithm = SHA256,
    rsa_padding: padding.PSS | padding.PKCS1v15 | None = None,
    signing_time: float | None = None,
) -> bytes:
    """DER CMS SignedData over `data`, detached, signer certificate included; Binary keeps the bytes exact.

    With SHA-256 and the default padding, cryptography's builder only shows the template its shape, once per
    kind of key; every signature is then that DER around a fresh digest, signing time and signature (~2x
    faster). `signing_time` (seconds since the epoch; None: the wall clock) is the signingTime attribute, so an
    RSA key's signature is the same bytes for the same inputs. Other hashes and paddings (and kinds of key with
    no template) go through the builder, which stamps the wall clock's time whatever `signing_time` says.
    """
    if isinstance(hash, hashes.SHA256) and rsa_padding is None:
        at = time.time() if signing_time is None else signing_time
        return _templates.sign(data, certificate, private_key, lambda: _build(data, certificate, private_key, hash),
                               at)
    return _build(data, certificate, private_key, hash, rsa_padding)


_templates = Templates()
_BUILDER_HASHES = (hashes.SHA224, hashes.SHA256, hashes.SHA384, hashes.SHA512)


def _build(
    data: bytes,
    certificate: x509.Certificate,
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    hash: hashes.HashAlgorithm,
    rsa_padding: padding.PSS | padding.PKCS1v15 | None = None,
) -> bytes:
    if not isinstance(hash, _BUILDER_HASHES):  # the builder's own check, made here so the type narrows
        raise TypeError("hash_algorithm must be one of hashes.SHA224, SHA256, SHA384, or SHA512")
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
    if rsa_padding is None:
        builder = builder.add_signer(certificate, private_key, hash)
    else:
        builder = builder.add_signer(certificate, private_key, hash, rsa_padding=rsa_padding)
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    return builder.sign(serialization.Encoding.DER, options)


def sign_embedded(
    content: bytes,
    certificate: x509.Certificate,
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    certificates: Sequence[x509.Certificate] = (),
) -> bytes:
    """DER CMS SignedData that carries `content` (a signed .mobileconfig, as Fleet, Zentral and MicroMDM send),
    SHA-256, signer certificate and `certificates` (its chain) included; Binary keeps the bytes exact."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(certificate, private_key, SHA256)
    for extra in certificates:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def mdm_signature(
    body: bytes, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *, signing_time: float | None = None,
) -> str:
    """The `Mdm-Signature` header value for a request body: base64 of its detached CMS signature, signed at
    `signing_time` (seconds since the epoch; None: the wall clock)."""
    signature = sign_detached(body, certificate, private_key, signing_time=signing_time)
    return base64.b64encode(signature).decode("ascii")


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
    if signed.embeds_content:
        raise SignatureError("the signature embeds its content; a detached signature was expected")
    return _verify_signed(signed, data, allow_sha1)[0]


@dataclass(frozen=True, slots=True)
class EmbeddedSignedData:
    """A verified SignedData that carries its content (SCEP messages): the content and every signed attribute."""

    info: SignedDataInfo
    content: bytes  # empty when the SignedData has no eContent (a SCEP CertRep FAILURE or PENDING)
    attributes: tuple[Attribute, ...]


def verify_embedded(der: bytes, *, allow_sha1: bool = False,
                    max_size: int = MAX_SIGNATURE_SIZE) -> EmbeddedSignedData:
    """Verify a SignedData over its own content (none counts as empty); signed attributes are required.

    As with `verify_detached`, who the signer is remains the caller's question. `max_size` bounds the input
    (a signed profile is far larger than a SCEP message).
    """
    signed = _decode_signed_data(der, max_size)
    reader = BerReader(bytes(der))  # framing checked by the decode above; this reads the eContent's octets
    try:
        content = read_encapsulated_content(reader, read_content_info(reader)[1])[1] or b""
    except Asn1Error as exc:
        raise SignatureError(f"the SignedData content is malformed: {exc}") from None
    info, signer_info = _verify_signed(signed, content, allow_sha1)
    if signer_info.signed_attributes is None:
        raise SignatureError("the SignedData has no signed attributes")
    return EmbeddedSignedData(info, content, signer_info.signed_attributes)


def _verify_signed(signed: SignedData, data: bytes, allow_sha1: bool) -> tuple[SignedDataInfo, SignerInfo]:
    signer_info = _single_signer(signed)
    certificates = _load_certificates(signed.certificates)
    signer = _find_signer(signer_info, signed.certificates, certificates)
    digest_name = _digest_name(signer_info.digest_algorithm.oid, allow_sha1)
    signing_time = None
    if signer_info.signed_attributes is not None:
        attributes = signer_info.signed_attributes
        signing_time = _check_signed_attributes(attributes, signed.content_type, digest_name, data)
        message = der_set([attribute.raw for attribute in attributes])
    elif signed.content_type != _ID_DATA:
        raise SignatureError(f"content type {signed.content_type} needs signed attributes; there are none")
    else:
        message = data
    _verify_signature(_public_key(signer), signer_info, digest_name, message)
    others = tuple(c for c in certificates if c is not signer)
    return SignedDataInfo(signer, others, digest_name, signing_time), signer_info


def _decode_signed_data(signature_der: bytes, max_size: int = MAX_SIGNATURE_SIZE) -> SignedData:
    if not isinstance(signature_der, bytes | bytearray | memoryview):
        raise SignatureError(f"a CMS signature is bytes, not {type(signature_der).__name__}")
    if not signature_der:
        raise SignatureError("the CMS signature is empty")
    if len(signature_der) > max_size:
        raise SignatureError(f"the CMS signature is {len(signature_der)} bytes, over {max_size}")
    reader = BerReader(bytes(signature_der))
    try:
        content_type, content, end = read_content_info(reader)
    except Asn1Error as exc:
        raise SignatureError(f"the signature is not CMS: {exc}") from None
    if end != len(reader.buffer):
        trailing = len(reader.buffer) - end
        raise SignatureError(f"the signature has {trailing} trailing bytes after its ContentInfo")
    if content_type != _ID_SIGNED_DATA:
        raise SignatureError(f"the CMS content is not SignedData (content type {content_type})")
    try:
        signed = read_signed_data(reader, content)
    except Asn1Error as exc:
        raise SignatureError(f"the SignedData is malformed: {exc}") from None
    return signed


def _single_signer(signed: SignedData) -> SignerInfo:
    if not signed.signer_infos:
        raise SignatureError("the SignedData has no signer")
    if len(signed.signer_infos) > 1:
        count = len(signed.signer_infos)
        raise SignatureError(f"the SignedData has {count} signers; exactly one is supported")
    return signed.signer_infos[0]


# A device embeds the same certificate in every request: parse it (and derive its key and fingerprint) once.
# Certificates are immutable; the memo is bounded and simply starts over when full.
MAX_MEMO_CERTIFICATES = 20_000
_certificates: dict[bytes, x509.Certificate] = {}
_derived: dict[int, tuple[x509.Certificate, object, str]] = {}  # id(certificate) → (it, public key, fingerprint)


def _load_certificates(raw_certificates: Sequence[bytes]) -> list[x509.Certificate]:
    certificates = []
    for raw in raw_certificates:
        certificate = _certificates.get(raw)
        if certificate is None:
            try:
                certificate = x509.load_der_x509_certificate(raw)
            except (ValueError, x509.InvalidVersion) as exc:
                raise SignatureError(f"an embedded certificate is malformed: {exc}") from None
            if len(_certificates) >= MAX_MEMO_CERTIFICATES:
                _certificates.clear()
                _derived.clear()
            _certificates[raw] = certificate
        certificates.append(certificate)
    return certificates


def _derive(certificate: x509.Certificate) -> tuple[x509.Certificate, object, str]:
    derived = _derived.get(id(certificate))
    if derived is None or derived[0] is not certificate:
        try:
            key = certificate.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SignatureError(f"the signer's public key is unusable: {exc}") from None
        derived = (certificate, key, certificate.fingerprint(hashes.SHA256()).hex())
        if len(_derived) >= MAX_MEMO_CERTIFICATES:
            _derived.clear()
        _derived[id(certificate)] = derived
    return derived


def _fingerprint(certificate: x509.Certificate) -> str:
    return _derive(certificate)[2]


def _find_signer(
    signer_info: SignerInfo, raw_certificates: Sequence[bytes], certificates: Sequence[x509.Certificate]
) -> x509.Certificate:
    for raw, certificate in zip(raw_certificates, certificates, strict=True):
        try:
            if signer_info.issuer is not None:
                # The issuer as encoded: re-encoding cryptography's parsed Name costs ~8 µs per request.
                found = (
                    certificate.serial_number == signer_info.serial_number
                    and certificate_issuer(raw) == signer_info.issuer
                )
            else:
                found = _subject_key_identifier(certificate) == signer_info.subject_key_identifier
        except (*_CERTIFICATE_ERRORS, Asn1Error):
            continue
        if found:
            return certificate
    raise SignatureError("the signer certificate is not among the embedded certificates")


def _public_key(certificate: x509.Certificate) -> object:
    return _derive(certificate)[1]


def _subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _digest_name(oid: str, allow_sha1: bool) -> str:
    name = _DIGESTS.get(oid)
    if name is None:
        raise SignatureError(f"unsupported digest algorithm {oid}")
    if name == "sha1" and not allow_sha1:
        raise SignatureError("unsupported digest algorithm sha1 (SHA-1 is refused)")
    return name


def _check_signed_attributes(
    attributes: Sequence[Attribute], content_type: str, digest_name: str, data: bytes
) -> datetime | None:
    """RFC 5652 section 11: contentType must match and messageDigest must be the digest of the content."""
    values = _checked_attribute_values(attributes)
    if _ATTR_CONTENT_TYPE not in values or _ATTR_MESSAGE_DIGEST not in values:
        raise SignatureError("the signed attributes lack contentType or messageDigest")
    signed_type = _attribute_oid(values[_ATTR_CONTENT_TYPE])
    if signed_type != content_type:
        raise SignatureError(f"contentType attribute {signed_type} differs from the content {content_type}")
    kind, claimed = values[_ATTR_MESSAGE_DIGEST]
    if kind != OCTET_STRING:
        raise SignatureError(f"the messageDigest attribute is not an OCTET STRING (tag {kind:#04x})")
    if not hmac.compare_digest(claimed, hashlib.new(digest_name, data).digest()):
        raise SignatureError("the messageDigest does not match: signature over a different body")
    if _ATTR_SIGNING_TIME not in values:
        return None
    try:
        return read_time(*values[_ATTR_SIGNING_TIME])
    except Asn1Error as exc:
        raise SignatureError(f"the signingTime attribute is not a valid time: {exc}") from None


def _checked_attribute_values(attributes: Sequence[Attribute]) -> dict[str, tuple[int, bytes]]:
    """The single value of each attribute we check; others (smimeCapabilities...) are only signed over."""
    values: dict[str, tuple[int, bytes]] = {}
    for attribute in attributes:
        if attribute.oid not in _CHECKED_ATTRIBUTES:
            continue
        if len(attribute.values) != 1 or attribute.oid in values:
            raise SignatureError(f"signed attribute {attribute.oid} must appear once with exactly one value")
        values[attribute.oid] = attribute.values[0]
    return values


def _attribute_oid(value: tuple[int, bytes]) -> str:
    kind, content = value
    try:
        if kind != OBJECT_IDENTIFIER:
            raise Asn1Error(f"tag {kind:#04x} is not an OBJECT IDENTIFIER")
        return oid_text(content)
    except Asn1Error as exc:
        raise SignatureError(f"the contentType attribute is malformed: {exc}") from None


def _verify_signature(public_key: object, signer_info: SignerInfo, digest_name: str, message: bytes) -> None:
    algorithm = signer_info.signature_algorithm.oid
    signature = signer_info.signature
    chosen = _HASHES[digest_name]()
    try:
        if algorithm in _ECDSA and isinstance(public_key, ec.EllipticCurvePublicKey):
            _same_hash(_ECDSA[algorithm], digest_name)
            public_key.verify(signature, message, ec.ECDSA(chosen))
        elif algorithm in _RSA_PKCS1 and isinstance(public_key, rsa.RSAPublicKey):
            _same_hash(_RSA_PKCS1[algorithm], digest_name)
            public_key.verify(signature, message, padding.PKCS1v15(), chosen)
        elif algorithm == _RSA_PSS and isinstance(public_key, rsa.RSAPublicKey):
            pss = _pss_padding(signer_info.signature_algorithm.parameters, digest_name)
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


def _pss_padding(parameters: bytes | None, digest_name: str) -> padding.PSS:
    if parameters is None:
        raise SignatureError("RSASSA-PSS signature without parameters")
    try:
        params = read_pss_parameters(parameters)
    except Asn1Error as exc:
        raise SignatureError(str(exc)) from None
    # Unknown hashes count as SHA-1, RFC 4055's default, which we refuse below like any SHA-1 mismatch.
    _same_hash(_DIGESTS.get(params.hash_algorithm, "sha1"), digest_name)
    if params.mask_generation != ID_MGF1:
        raise SignatureError(f"unsupported RSASSA-PSS mask generation {params.mask_generation}")
    mgf_name = _DIGESTS.get(params.mask_generation_hash or "")
    if mgf_name is None or mgf_name == "sha1":
        raise SignatureError(f"unsupported RSASSA-PSS MGF1 hash {params.mask_generation_hash}")
    if not 0 <= params.salt_length <= 1024:
        raise SignatureError(f"RSASSA-PSS salt length {params.salt_length} is out of range")
    return padding.PSS(mgf=padding.MGF1(_HASHES[mgf_name]()), salt_length=params.salt_length)


# --- Reading what a SignedData embeds (signed .mobileconfig files) -----------------------------------------------


def signed_content(data: bytes) -> bytes | None:
    """The content a CMS SignedData embeds (a signed profile's plist), or None when `data` is not CMS at all.

    The signature is not verified. SignatureError: CMS that is not SignedData, or a detached signature.
    """
    if not data.startswith(b"\x30"):
        return None
    reader = BerReader(bytes(data))
    try:
        content_type, content, _ = read_content_info(reader)
        if content_type != _ID_SIGNED_DATA:
            raise SignatureError("the file is CMS but not SignedData")
        _, embedded = read_encapsulated_content(reader, content)
    except Asn1Error:
        return None  # not CMS after all; the caller's own decoder says what it is
    if embedded is None:
        raise SignatureError("the signed profile carries no content (a detached signature)")
    return embedded


def signed_certificates(der: bytes, *, max_size: int = MAX_SIGNATURE_SIZE) -> tuple[x509.Certificate, ...]:
    """The certificates a SignedData embeds, its signer's first when it can be found; nothing is verified.

    What a device records for a profile whose signature does not verify (ProfileList SignerCertificates).
    """
    signed = _decode_signed_data(der, max_size)
    certificates = _load_certificates(signed.certificates)
    try:
        signer = _find_signer(_single_signer(signed), signed.certificates, certificates)
    except SignatureError:
        return tuple(certificates)
    return (signer, *(c for c in certificates if c is not signer))
