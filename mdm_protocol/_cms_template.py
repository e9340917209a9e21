"""Detached CMS signatures built around a template: cryptography makes the first, later ones reuse its DER.

Only the message digest, the signing time and the signature itself differ between two signatures by one signer.
The signing time is passed in (no clock here), so an RSA signer's bytes follow from its inputs alone.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ._cms_asn1 import (
    CONTEXT_0,
    INTEGER,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    SEQUENCE,
    SET,
    Asn1Error,
    BerReader,
    read_content_info,
)

# OpenSSL's CMS signer puts these four signed attributes on every signature (RFC 5652 section 11, RFC 8551).
_MESSAGE_DIGEST = bytes.fromhex("06092a864886f70d010904")  # the attrType TLV of messageDigest
_SIGNING_TIME = bytes.fromhex("06092a864886f70d010905")
_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
MAX_SIGNERS = 1024  # signer certificates whose DER pieces are kept (~0.7 KB each); a miss costs ~5 µs


class TemplateError(Exception):
    """cryptography's signature does not have the shape the template reproduces (then it keeps signing)."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What every signature with one kind of key shares, read from one that cryptography made."""

    signed_data_head: bytes  # version, digestAlgorithms, encapContentInfo
    signer_head: bytes  # the SignerInfo's version
    digest_algorithm: bytes
    fixed_attributes: tuple[bytes, ...]  # contentType, smimeCapabilities: the same on every signature
    signature_algorithm: bytes


@dataclass(frozen=True, slots=True)
class Signer:
    """One signer certificate's part: its DER and the issuerAndSerialNumber naming it."""

    certificate: x509.Certificate
    sid: bytes
    certificates: bytes  # the SignedData's [0] certificates: this one alone (its DER, once: ~0.6 KB a signer)


def der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    if length < 0x100:
        return bytes((tag, 0x81, length)) + content
    if length < 0x10000:
        return bytes((tag, 0x82, length >> 8, length & 0xFF)) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(octets))) + octets + content


@functools.lru_cache(maxsize=64)
def oid(dotted: str) -> bytes:
    """The DER OBJECT IDENTIFIER for dotted text."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for value in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | value & 0x7F)
            value >>= 7
        body += bytes(reversed(chunk))
    return der(OBJECT_IDENTIFIER, bytes(body))


def integer(value: int) -> bytes:
    """The DER INTEGER (two's complement, shortest form)."""
    length = value.bit_length() // 8 + 1
    return der(INTEGER, value.to_bytes(length, "big", signed=True))


def shape_key(private_key: Any) -> tuple[str, ...] | None:
    """Keys whose signatures share a shape (SHA-256, default padding; the curve or modulus size changes no
    identifier); None for keys we leave to cryptography."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return ("ec",)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return ("rsa",)
    return None


def read_shape(signature: bytes, signer_certificates: bytes) -> Shape:
    """The shared parts of a detached SignedData with one signer and `signer_certificates` (its [0] field
    holding the signer's certificate alone)."""
    reader = BerReader(signature)
    try:
        _, content, _ = read_content_info(reader)
        (signed_data,) = reader.children(content, "the content")
        version, digests, encapsulated, certificates, signer_infos = reader.children(signed_data, "SignedData")
        (embedded,) = reader.children(certificates, "the certificates")
        (signer_info,) = reader.children(signer_infos, "the signerInfos")
        fields = reader.children(signer_info, "the SignerInfo")
        signer_version, _, digest_algorithm, attributes, signature_algorithm, _ = fields
        every = [reader.whole(item) for item in reader.children(attributes, "the signed attributes")]
        kept = tuple(item for item in every if not item[2:].startswith((_MESSAGE_DIGEST, _SIGNING_TIME)))
    except (Asn1Error, ValueError) as exc:
        raise TemplateError(f"unexpected SignedData layout: {exc}") from None
    tags = (certificates[0], attributes[0], signer_infos[0])
    alone = reader.whole(certificates) == signer_certificates
    if tags != (CONTEXT_0, CONTEXT_0, SET) or not alone or len(every) - len(kept) != 2:
        raise TemplateError("the SignedData has more than its signer's certificate, or lacks digest or time")
    head = b"".join(reader.whole(item) for item in (version, digests, encapsulated))
    return Shape(head, reader.whole(signer_version), reader.whole(digest_algorithm), kept,
                 reader.whole(signature_algorithm))


def read_signer(certificate: x509.Certificate) -> Signer:
    """The DER of a certificate and its issuerAndSerialNumber, both as encoded in the certificate."""
    encoded = certificate.public_bytes(serialization.Encoding.DER)
    reader = BerReader(encoded)
    outer = reader.expect(0, len(encoded), SEQUENCE, "the certificate")
    tbs = reader.expect(outer[2], outer[3], SEQUENCE, "the tbsCertificate")
    serial = reader.read(tbs[2], tbs[3])
    if serial[0] == 0xA0:  # version
        serial = reader.read(serial[4], tbs[3])
    if serial[0] != INTEGER:
        raise Asn1Error("the tbsCertificate lacks its serialNumber")
    algorithm = reader.expect(serial[4], tbs[3], SEQUENCE, "the tbsCertificate signature")
    issuer = reader.expect(algorithm[4], tbs[3], SEQUENCE, "the issuer")
    sid = der(SEQUENCE, reader.whole(issuer) + reader.whole(serial))
    return Signer(certificate, sid, der(CONTEXT_0, encoded))


def signing_time(now: float) -> bytes:
    """The signingTime attribute for `now`: UTCTime up to 2049, GeneralizedTime after (RFC 5280 4.1.2.5)."""
    moment = time.gmtime(now)
    if 1950 <= moment.tm_year < 2050:
        value = der(0x17, time.strftime("%y%m%d%H%M%SZ", moment).encode("ascii"))
    else:
        value = der(0x18, time.strftime("%Y%m%d%H%M%SZ", moment).encode("ascii"))
    return der(SEQUENCE, _SIGNING_TIME + der(SET, value))


# The messageDigest attribute up to its 32 octets of SHA-256.
_DIGEST_ATTRIBUTE_HEAD = der(SEQUENCE, _MESSAGE_DIGEST + der(SET, der(OCTET_STRING, bytes(32))))[:-32]


def assemble(shape: Shape, signer: Signer, digest: bytes, time_attribute: bytes, sign: Any) -> bytes:
    """The DER ContentInfo; `sign` gets the DER SET of signed attributes and returns the signature."""
    if len(digest) == 32:
        digest_attribute = _DIGEST_ATTRIBUTE_HEAD + digest
    else:
        digest_attribute = der(SEQUENCE, _MESSAGE_DIGEST + der(SET, der(OCTET_STRING, digest)))
    attributes = b"".join(sorted((*shape.fixed_attributes, time_attribute, digest_attribute)))
    signature = sign(der(SET, attributes))
    signer_info = der(SEQUENCE, b"".join((
        shape.signer_head, signer.sid, shape.digest_algorithm, der(CONTEXT_0, attributes),
        shape.signature_algorithm, der(OCTET_STRING, signature))))
    signed_data = der(SEQUENCE, shape.signed_data_head + signer.certificates + der(SET, signer_info))
    return der(SEQUENCE, _SIGNED_DATA + der(CONTEXT_0, signed_data))


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_SHA256 = hashes.SHA256()
_PKCS1 = padding.PKCS1v15()


class Templates:
    """Shapes per kind of key and pieces per signer certificate, filled from cryptography's own signatures."""

    def __init__(self) -> None:
        self.shapes: dict[tuple[str, ...], Shape | None] = {}  # None: this kind of key is not templated
        self._kinds: dict[type, tuple[str, ...] | None] = {}  # key class → shape_key (isinstance on ABCs is slow)
        self.signers: dict[int, Signer] = {}  # id(certificate) → its pieces (checked by identity)
        self._time: tuple[int, bytes] = (-1, b"")

    def sign(self, data: bytes, certificate: x509.Certificate, private_key: Any, fallback: Callable[[], bytes],
             at: float) -> bytes:
        """A signature from the template, signed `at` (seconds since the epoch), or `fallback()` (cryptography's
        builder, which stamps the wall clock's time) for a kind of key that has no template."""
        kind: tuple[str, ...] | None | Literal[False] = self._kinds.get(type(private_key), False)
        if kind is False:
            kind = self._kinds[type(private_key)] = shape_key(private_key)
        if kind is None:
            return fallback()
        shape: Shape | None | Literal[False] = self.shapes.get(kind, False)
        if shape is None:
            return fallback()
        signer = self._signer(certificate)
        if shape is False:
            shape, made = self._learn(kind, signer, fallback)
            if shape is None:
                return made
        sign: Callable[..., bytes] = private_key.sign
        if kind[0] == "ec":
            def signed(message: bytes) -> bytes:
                return sign(message, _ECDSA_SHA256)
        else:
            def signed(message: bytes) -> bytes:
                return sign(message, _PKCS1, _SHA256)
        return assemble(shape, signer, hashlib.sha256(data).digest(), self._signing_time(at), signed)

    def _signing_time(self, now: float) -> bytes:
        second = int(now)  # the attribute has whole seconds: encode each second once
        if self._time[0] != second:
            self._time = (second, signing_time(second))
        return self._time[1]

    def _signer(self, certificate: x509.Certificate) -> Signer:
        signer = self.signers.get(id(certificate))
        if signer is None or signer.certificate is not certificate:
            signer = read_signer(certificate)
            if len(self.signers) >= MAX_SIGNERS:
                self.signers.clear()
            self.signers[id(certificate)] = signer
        return signer

    def _learn(self, kind: tuple[str, ...], signer: Signer, fallback: Callable[[], bytes]
               ) -> tuple[Shape | None, bytes]:
        """The shape of one builder signature, and that signature (used only when it has no template shape:
        it carries the wall clock's time, not the one asked for)."""
        made = fallback()
        try:
            shape = read_shape(made, signer.certificates)
        except TemplateError:
            shape = None
        self.shapes[kind] = shape
        return shape, made
