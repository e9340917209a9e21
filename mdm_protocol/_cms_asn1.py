"""The CMS SignedData structure (RFC 5652) as `cms` verifies it, read by a strict BER/DER TLV reader.

Only the framing and the fields verification needs are read; certificates stay raw DER for cryptography.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc4055, rfc5280

__all__ = [
    "AlgorithmIdentifier",
    "Asn1Error",
    "Attribute",
    "BerReader",
    "PssParameters",
    "SignedData",
    "SignerInfo",
    "certificate_issuer",
    "der_set",
    "octet_string",
    "oid_text",
    "read_content_info",
    "read_encapsulated_content",
    "read_pss_parameters",
    "read_signed_data",
    "read_time",
]

# Why no general ASN.1 library on this path: it runs on every device request with a budget of ~50 µs. pyasn1
# costs ~12 µs per field (~290 µs per Mdm-Signature), asn1crypto ~160 µs for the fields we read, asn1tools
# ~55 µs and it accepts extra SEQUENCE fields and padded OID arcs. What we read is a fixed path of ~50 TLVs,
# each checked by exact tag; X.509 goes to cryptography, RSASSA-PSS-params (DEFAULTs, rare) to pyasn1.

SEQUENCE, SET, INTEGER, OCTET_STRING, OBJECT_IDENTIFIER = 0x30, 0x31, 0x02, 0x04, 0x06
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
CONTEXT_0, CONTEXT_1, CONTEXT_0_PRIMITIVE = 0xA0, 0xA1, 0x80
# Apple's encoder nests five indefinite lengths; much deeper nesting is only ever an attack on the scan.
MAX_INDEFINITE_DEPTH = 16
ID_MGF1 = "1.2.840.113549.1.1.8"
ID_SHA1 = "1.3.14.3.2.26"

Tlv = tuple[int, int, int, int, int]  # (tag, offset, content start, content end, offset of the next TLV)


class Asn1Error(Exception):
    """Bytes that do not frame as the expected structure; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class AlgorithmIdentifier:
    oid: str
    parameters: bytes | None  # the raw TLV, when present


@dataclass(frozen=True, slots=True)
class Attribute:
    raw: bytes  # its DER, as the signature covers it
    oid: str
    values: tuple[tuple[int, bytes], ...]  # (tag, content) of each value


@dataclass(frozen=True, slots=True)
class SignerInfo:
    issuer: bytes | None  # raw DER Name of the issuerAndSerialNumber, None for a subjectKeyIdentifier
    serial_number: int | None
    subject_key_identifier: bytes | None
    digest_algorithm: AlgorithmIdentifier
    signed_attributes: tuple[Attribute, ...] | None
    signature_algorithm: AlgorithmIdentifier
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedData:
    content_type: str  # the encapContentInfo's eContentType
    embeds_content: bool
    certificates: tuple[bytes, ...]  # raw DER of each `certificate` choice; other choices are dropped
    signer_infos: tuple[SignerInfo, ...]


@dataclass(frozen=True, slots=True)
class PssParameters:
    hash_algorithm: str
    mask_generation: str
    mask_generation_hash: str | None  # the MGF1 hash; None for another mask generation function
    salt_length: int


class BerReader:
    """BER TLVs of one buffer: definite lengths in any form, indefinite ones on constructed values only.

    Each indefinite-length value is scanned once (ends are remembered), so hostile nesting costs linear time.
    """

    __slots__ = ("buffer", "_ends")

    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer
        self._ends: dict[int, int] = {}

    def read(self, offset: int, limit: int) -> Tlv:
        """The TLV at `offset`, which must end by `limit` (its container's end)."""
        buffer = self.buffer
        if offset + 2 > limit:
            raise Asn1Error(f"truncated at byte {offset}")
        tag, first = buffer[offset], buffer[offset + 1]
        if tag & 0x1F == 0x1F or tag == 0:
            raise Asn1Error(f"unexpected tag {tag:#04x} at byte {offset}")
        start = offset + 2
        if first == 0x80:
            if not tag & 0x20:
                raise Asn1Error(f"indefinite length on a primitive value at byte {offset}")
            end = self._ends.get(start)
            if end is None:
                end = self._scan(start, limit)
            if end + 2 > limit:
                raise Asn1Error(f"the value at byte {offset} runs past its container")
            return tag, offset, start, end, end + 2
        if first > 0x80:
            count = first - 0x80
            if count > 4 or start + count > limit:
                raise Asn1Error(f"bad length at byte {offset}")
            length = int.from_bytes(buffer[start : start + count], "big")
            start += count
        else:
            length = first
        end = start + length
        if end > limit:
            raise Asn1Error(f"the length at byte {offset} runs past its container")
        return tag, offset, start, end, end

    def _scan(self, start: int, limit: int) -> int:
        """Where the indefinite-length value whose contents begin at `start` has its end-of-contents."""
        buffer, open_starts, offset = self.buffer, [start], start
        while open_starts:
            if offset + 2 > limit:
                raise Asn1Error("an indefinite-length value has no end-of-contents")
            tag, first = buffer[offset], buffer[offset + 1]
            if tag == 0:
                if first != 0:
                    raise Asn1Error(f"malformed end-of-contents at byte {offset}")
                self._ends[open_starts.pop()] = offset
                offset += 2
            elif first == 0x80:
                if tag & 0x1F == 0x1F or not tag & 0x20:
                    raise Asn1Error(f"indefinite length on tag {tag:#04x} at byte {offset}")
                if len(open_starts) >= MAX_INDEFINITE_DEPTH:
                    raise Asn1Error(f"indefinite lengths nested over {MAX_INDEFINITE_DEPTH} deep")
                offset += 2
                open_starts.append(offset)
            else:
                offset = self.read(offset, limit)[4]
        return self._ends[start]

    def expect(self, offset: int, limit: int, tag: int, what: str) -> Tlv:
        item = self.read(offset, limit)
        if item[0] != tag:
            raise Asn1Error(f"{what} has tag {item[0]:#04x}, not {tag:#04x}")
        return item

    def children(self, item: Tlv, what: str) -> list[Tlv]:
        """The TLVs that fill the constructed `item` exactly."""
        if not item[0] & 0x20:
            raise Asn1Error(f"{what} is not constructed")
        found, offset, end = [], item[2], item[3]
        while offset < end:
            child = self.read(offset, end)
            found.append(child)
            offset = child[4]
        return found

    def content(self, item: Tlv) -> bytes:
        return self.buffer[item[2] : item[3]]

    def whole(self, item: Tlv) -> bytes:
        return self.buffer[item[1] : item[4]]


class _Fields:
    """The elements of one SEQUENCE, taken in order: a missing, extra or mistagged field is an Asn1Error."""

    __slots__ = ("_items", "_index", "_what")

    def __init__(self, reader: BerReader, item: Tlv, what: str) -> None:
        self._items, self._index, self._what = reader.children(item, what), 0, what

    def take(self, tag: int, name: str) -> Tlv:
        index = self._index
        if index < len(self._items) and self._items[index][0] == tag:
            self._index = index + 1
            return self._items[index]
        raise Asn1Error(f"{self._what} lacks its {name} (or it has the wrong tag)")

    def optional(self, tag: int) -> Tlv | None:
        if self._index < len(self._items) and self._items[self._index][0] == tag:
            self._index += 1
            return self._items[self._index - 1]
        return None

    def rest(self) -> list[Tlv]:
        items, self._index = self._items[self._index :], len(self._items)
        return items

    def done(self) -> None:
        if self._index != len(self._items):
            raise Asn1Error(f"{self._what} has an unexpected field (tag {self._items[self._index][0]:#04x})")


# --- ContentInfo and SignedData ----------------------------------------------------------------------


def read_content_info(reader: BerReader) -> tuple[str, Tlv, int]:
    """(contentType, [0] content, end offset) of the ContentInfo at the start of the buffer."""
    outer = reader.expect(0, len(reader.buffer), SEQUENCE, "the ContentInfo")
    fields = _Fields(reader, outer, "the ContentInfo")
    content_type = oid_text(reader.content(fields.take(OBJECT_IDENTIFIER, "contentType")))
    content = fields.take(CONTEXT_0, "content")
    fields.done()
    return content_type, content, outer[4]


def read_signed_data(reader: BerReader, content: Tlv) -> SignedData:
    """The SignedData that must fill the ContentInfo's [0] `content`."""
    inner = reader.children(content, "the ContentInfo content")
    if len(inner) != 1 or inner[0][0] != SEQUENCE:
        raise Asn1Error("the ContentInfo content is not one SEQUENCE")
    fields = _Fields(reader, inner[0], "the SignedData")
    fields.take(INTEGER, "version")
    for algorithm in reader.children(fields.take(SET, "digestAlgorithms"), "the digestAlgorithms"):
        _algorithm(reader, algorithm, "a digestAlgorithms element")
    encapsulated = fields.take(SEQUENCE, "encapContentInfo")
    certificates = fields.optional(CONTEXT_0)
    crls = fields.optional(CONTEXT_1)
    signer_infos = fields.take(SET, "signerInfos")
    fields.done()
    if crls is not None:
        reader.children(crls, "the crls")  # framing only: revocation is not our business here
    raw_certificates = () if certificates is None else tuple(
        reader.whole(choice) for choice in reader.children(certificates, "the certificates")
        if choice[0] == SEQUENCE  # attribute and other certificate formats are never a signer
    )
    content_type, embeds_content = _encapsulated_content_info(reader, encapsulated)
    signers = tuple(_signer_info(reader, item) for item in reader.children(signer_infos, "the signerInfos"))
    return SignedData(content_type, embeds_content, raw_certificates, signers)


def read_encapsulated_content(reader: BerReader, content: Tlv) -> tuple[str, bytes | None]:
    """(eContentType, eContent) of the SignedData filling the ContentInfo's [0] `content`; None when detached.

    Only the path to the content is read (a signed profile is linted, not verified). A constructed OCTET STRING,
    as BER encoders write long content, is joined from its segments.
    """
    inner = reader.children(content, "the ContentInfo content")
    if len(inner) != 1 or inner[0][0] != SEQUENCE:
        raise Asn1Error("the ContentInfo content is not one SEQUENCE")
    fields = _Fields(reader, inner[0], "the SignedData")
    fields.take(INTEGER, "version")
    fields.take(SET, "digestAlgorithms")
    encapsulated = _Fields(reader, fields.take(SEQUENCE, "encapContentInfo"), "the encapContentInfo")
    content_type = oid_text(reader.content(encapsulated.take(OBJECT_IDENTIFIER, "eContentType")))
    explicit = encapsulated.optional(CONTEXT_0)
    encapsulated.done()
    if explicit is None:
        return content_type, None
    octets = reader.children(explicit, "the eContent")
    if len(octets) != 1:
        raise Asn1Error("the eContent is not one OCTET STRING")
    return content_type, octet_string(reader, octets[0])


def octet_string(reader: BerReader, item: Tlv) -> bytes:
    """An OCTET STRING's octets, primitive or (BER) constructed from segments (SCEP envelopes use it too)."""
    if item[0] == OCTET_STRING:
        return reader.content(item)
    if item[0] == OCTET_STRING | 0x20:
        return b"".join(octet_string(reader, segment) for segment in reader.children(item, "an OCTET STRING"))
    raise Asn1Error(f"an OCTET STRING has tag {item[0]:#04x}")


def _encapsulated_content_info(reader: BerReader, item: Tlv) -> tuple[str, bool]:
    fields = _Fields(reader, item, "the encapContentInfo")
    content_type = oid_text(reader.content(fields.take(OBJECT_IDENTIFIER, "eContentType")))
    embedded = fields.optional(CONTEXT_0)
    fields.done()
    return content_type, embedded is not None


def _signer_info(reader: BerReader, item: Tlv) -> SignerInfo:
    if item[0] != SEQUENCE:
        raise Asn1Error(f"a SignerInfo has tag {item[0]:#04x}, not a SEQUENCE")
    fields = _Fields(reader, item, "a SignerInfo")
    fields.take(INTEGER, "version")
    issuer = serial = key_id = None
    by_issuer = fields.optional(SEQUENCE)
    if by_issuer is not None:
        sid = _Fields(reader, by_issuer, "the issuerAndSerialNumber")
        issuer = reader.whole(sid.take(SEQUENCE, "issuer"))
        serial = _integer(reader, sid.take(INTEGER, "serialNumber"))
        sid.done()
    else:
        key_id = reader.content(fields.take(CONTEXT_0_PRIMITIVE, "sid"))
    digest_algorithm = _algorithm(reader, fields.take(SEQUENCE, "digestAlgorithm"), "the digestAlgorithm")
    signed = fields.optional(CONTEXT_0)
    attributes = None if signed is None else _signed_attributes(reader, signed)
    signature_algorithm = _algorithm(
        reader, fields.take(SEQUENCE, "signatureAlgorithm"), "the signatureAlgorithm"
    )
    signature = reader.content(fields.take(OCTET_STRING, "signature"))
    unsigned = fields.optional(CONTEXT_1)
    fields.done()
    if unsigned is not None:
        reader.children(unsigned, "the unsignedAttrs")
    return SignerInfo(issuer, serial, key_id, digest_algorithm, attributes, signature_algorithm, signature)


def _algorithm(reader: BerReader, item: Tlv, what: str) -> AlgorithmIdentifier:
    if item[0] != SEQUENCE:
        raise Asn1Error(f"{what} has tag {item[0]:#04x}, not a SEQUENCE")
    fields = _Fields(reader, item, what)
    oid = oid_text(reader.content(fields.take(OBJECT_IDENTIFIER, "algorithm")))
    parameters = fields.rest()
    if len(parameters) > 1:
        raise Asn1Error(f"{what} has {len(parameters)} parameters")
    return AlgorithmIdentifier(oid, reader.whole(parameters[0]) if parameters else None)


def _integer(reader: BerReader, item: Tlv) -> int:
    content = reader.content(item)
    if not content:
        raise Asn1Error("an INTEGER is empty")
    return int.from_bytes(content, "big", signed=True)


# --- signed attributes: DER, because the signature covers their DER encoding ---------------------------


def _is_der(item: Tlv) -> bool:
    """A definite length in its shortest form (BER also allows indefinite and padded lengths)."""
    length = item[3] - item[2]
    header = 2 if length < 0x80 else 2 + (length.bit_length() + 7) // 8
    return item[4] == item[3] and item[2] - item[1] == header


def _signed_attributes(reader: BerReader, signed: Tlv) -> tuple[Attribute, ...]:
    """Each Attribute ::= SEQUENCE { attrType OBJECT IDENTIFIER, attrValues SET OF ANY }, DER-framed."""
    attributes, buffer = [], reader.buffer
    for item in reader.children(signed, "the signedAttrs"):
        parts = reader.children(item, "a signed attribute")
        if item[0] != SEQUENCE or len(parts) != 2 or parts[0][0] != OBJECT_IDENTIFIER or parts[1][0] != SET:
            raise Asn1Error("a signed attribute is not a SEQUENCE of its type and its SET of values")
        values = reader.children(parts[1], "the values of a signed attribute")
        if not all(map(_is_der, (item, *parts, *values))):
            raise Asn1Error("a signed attribute is not DER: a length is indefinite or not in shortest form")
        kind = oid_text(buffer[parts[0][2] : parts[0][3]])
        contents = tuple((value[0], buffer[value[2] : value[3]]) for value in values)
        attributes.append(Attribute(buffer[item[1] : item[4]], kind, contents))
    return tuple(attributes)


def certificate_issuer(certificate: bytes) -> bytes:
    """The issuer Name, as encoded, of a DER certificate: what an issuerAndSerialNumber must match."""
    reader = BerReader(certificate)
    outer = reader.expect(0, len(certificate), SEQUENCE, "the certificate")
    _, _, offset, end, _ = reader.expect(outer[2], outer[3], SEQUENCE, "the tbsCertificate")
    field = reader.read(offset, end)
    if field[0] == CONTEXT_0:  # version
        field = reader.read(field[4], end)
    if field[0] != INTEGER:
        raise Asn1Error("the tbsCertificate lacks its serialNumber")
    signature = reader.expect(field[4], end, SEQUENCE, "the tbsCertificate signature")
    return reader.whole(reader.expect(signature[4], end, SEQUENCE, "the issuer"))


def der_set(elements: Sequence[bytes]) -> bytes:
    """The DER SET OF `elements`: RFC 5652 section 5.4 has the signature cover this, not the [0] encoding."""
    # DER orders SET OF elements by their encodings, as OpenSSL does when it re-encodes for verification.
    body = b"".join(sorted(elements))
    length = len(body)
    if length < 0x80:
        return b"\x31" + bytes([length]) + body
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return b"\x31" + bytes([0x80 | len(octets)]) + octets + body


# --- primitive values --------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def oid_text(content: bytes) -> str:
    """Dotted text of an OBJECT IDENTIFIER's content octets; non-minimal arcs are refused."""
    if not content or content[-1] & 0x80:
        raise Asn1Error("an OBJECT IDENTIFIER is empty or truncated")
    arcs, value = [], 0
    for byte in content:
        if value == 0 and byte == 0x80:
            raise Asn1Error("an OBJECT IDENTIFIER arc is not in its shortest form")
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))


# DER times (X.690 11.7, 11.8): UTC with seconds, GeneralizedTime fractions without trailing zeros.
_UTC_TIME = re.compile(rb"(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z")
_GENERALIZED_TIME = re.compile(rb"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d*[1-9]))?Z")


def read_time(tag: int, content: bytes) -> datetime:
    """A DER UTCTime or GeneralizedTime, in UTC; UTCTime's two-digit years are 1950-2049 (RFC 5280)."""
    if tag == UTC_TIME and (match := _UTC_TIME.fullmatch(content)):
        year = int(match[1])
        fields, fraction = [year + (1900 if year >= 50 else 2000), *map(int, match.groups()[1:])], None
    elif tag == GENERALIZED_TIME and (match := _GENERALIZED_TIME.fullmatch(content)):
        fields, fraction = [int(group) for group in match.groups()[:6]], match[7]
    else:
        raise Asn1Error(f"not a DER UTCTime or GeneralizedTime: {content[:40]!r}")
    microsecond = int((fraction or b"0")[:6].ljust(6, b"0"))
    try:
        year, month, day, hour, minute, second = fields
        return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)
    except ValueError as exc:
        raise Asn1Error(f"not a valid time: {content.decode('ascii')} ({exc})") from None


def read_pss_parameters(raw: bytes) -> PssParameters:
    """RSASSA-PSS-params (RFC 4055); absent fields take its defaults (SHA-1, MGF1 with SHA-1, salt 20)."""
    params = _pyasn1_decode(raw, rfc4055.RSASSA_PSS_params(), "the RSASSA-PSS-params")
    # pyasn1 hands out schema objects (which raise on use) for absent DEFAULT fields: test isValue first.
    hash_algorithm, mgf = params["hashAlgorithm"], params["maskGenAlgorithm"]
    salt_length, trailer = params["saltLength"], params["trailerField"]
    if trailer.isValue and int(trailer) != 1:
        raise Asn1Error(f"the RSASSA-PSS trailerField is {int(trailer)}, not 1")
    mgf_oid, mgf_hash = (str(mgf["algorithm"]), None) if mgf.isValue else (ID_MGF1, ID_SHA1)
    if mgf.isValue and mgf_oid == ID_MGF1:
        parameters = mgf["parameters"]
        if not parameters.isValue:
            raise Asn1Error("the RSASSA-PSS MGF1 has no hash")
        mgf_hash_algorithm = _pyasn1_decode(bytes(parameters), rfc5280.AlgorithmIdentifier(), "the MGF1 hash")
        mgf_hash = str(mgf_hash_algorithm["algorithm"])
    return PssParameters(
        str(hash_algorithm["algorithm"]) if hash_algorithm.isValue else ID_SHA1,
        mgf_oid,
        mgf_hash,
        int(salt_length) if salt_length.isValue else 20,
    )


def _pyasn1_decode(substrate: bytes, spec: object, what: str) -> Any:  # pyasn1 values take their spec's shape
    try:
        value, rest = ber_decoder.decode(substrate, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        raise Asn1Error(f"{what} is malformed: {type(exc).__name__}: {exc}"[:300]) from None
    if rest:
        raise Asn1Error(f"{what} has {len(rest)} trailing bytes")
    return value
