"""Who an S/MIME EnvelopedData was encrypted for: its RecipientInfos, read with pyasn1 (RFC 5652 section 6).

cryptography decrypts but does not list recipients; a device needs them to pick keys and to explain failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from pyasn1.codec.ber import decoder
from pyasn1.codec.der import encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import base, char, namedtype, tag, univ
from pyasn1_modules import rfc5280

from .errors import SMIMEError

ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
_NAME_LABELS = {"2.5.4.3": "CN", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.6": "C",
                "1.2.840.113549.1.9.1": "E"}
# RecipientInfo CHOICE alternatives other than KeyTransRecipientInfo, by their context tag (RFC 5652 6.2).
_OTHER_KINDS = {1: "key-agreement", 2: "key-encryption-key", 3: "password", 4: "other-type"}


def _context(number: int, fmt: int = tag.tagFormatConstructed) -> tag.Tag:
    return tag.Tag(tag.tagClassContext, fmt, number)


class _ContentInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("contentType", univ.ObjectIdentifier()),
        namedtype.NamedType("content", univ.Any().subtype(explicitTag=_context(0))),
    )


class _RawSet(univ.SetOf):
    componentType = univ.Any()


class _EnvelopedData(univ.Sequence):
    # Only the recipients are decoded; the encrypted content stays an opaque TLV for cryptography.
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", univ.Integer()),
        namedtype.OptionalNamedType("originatorInfo", univ.Any().subtype(implicitTag=_context(0))),
        namedtype.NamedType("recipientInfos", _RawSet()),
        namedtype.NamedType("encryptedContentInfo", univ.Any()),
        namedtype.OptionalNamedType("unprotectedAttrs", univ.Any().subtype(implicitTag=_context(1))),
    )


class _IssuerAndSerialNumber(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("issuer", univ.Any()),
        namedtype.NamedType("serialNumber", univ.Integer()),
    )


class _RecipientIdentifier(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("issuerAndSerialNumber", _IssuerAndSerialNumber()),
        namedtype.NamedType(
            "subjectKeyIdentifier", univ.OctetString().subtype(implicitTag=_context(0, tag.tagFormatSimple))),
    )


class _KeyTransRecipientInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", univ.Integer()),
        namedtype.NamedType("rid", _RecipientIdentifier()),
        namedtype.NamedType("keyEncryptionAlgorithm", univ.Any()),
        namedtype.NamedType("encryptedKey", univ.OctetString()),
    )


@dataclass(frozen=True, slots=True)
class Recipient:
    """One RecipientInfo: the certificate it names (issuer + serial, or subject key id), or another kind."""

    issuer_der: bytes | None = None
    serial_number: int | None = None
    subject_key_identifier: bytes | None = None
    kind: str = "key-transport"

    def matches(self, certificate: x509.Certificate) -> bool:
        """Whether `certificate` is the one this RecipientInfo was encrypted for."""
        if self.kind != "key-transport":
            return False
        if self.subject_key_identifier is not None:
            return _subject_key_identifier(certificate) == self.subject_key_identifier
        return (certificate.serial_number == self.serial_number
                and certificate.issuer.public_bytes() == self.issuer_der)

    def describe(self) -> str:
        if self.kind != "key-transport":
            return f"a {self.kind} recipient"
        if self.subject_key_identifier is not None:
            return f"the key with subject key identifier {self.subject_key_identifier.hex(':')}"
        return f"certificate serial {self.serial_number:#x} issued by {describe_name(self.issuer_der or b'')}"


def envelope_recipients(der: bytes) -> tuple[Recipient, ...]:
    """The RecipientInfos of a DER/BER CMS EnvelopedData; SMIMEError when it is not one."""
    content_info = _decode(der, _ContentInfo(), "the encrypted message (not CMS)")
    content_type = str(content_info["contentType"])
    if content_type != ID_ENVELOPED_DATA:
        raise SMIMEError(f"the CMS content is not EnvelopedData (content type {content_type})")
    enveloped = _decode(bytes(content_info["content"]), _EnvelopedData(), "the EnvelopedData")
    recipients = tuple(_recipient(bytes(raw)) for raw in enveloped["recipientInfos"])
    if not recipients:
        raise SMIMEError("the EnvelopedData names no recipients")
    return recipients


def describe_recipients(recipients: Sequence[Recipient]) -> str:
    return "; ".join(recipient.describe() for recipient in recipients)


def _recipient(raw: bytes) -> Recipient:
    first = raw[0] if raw else 0
    if first & 0xC0 == 0x80:  # context-tagged: not key transport
        return Recipient(kind=_OTHER_KINDS.get(first & 0x1F, "unknown"))
    info = _decode(raw, _KeyTransRecipientInfo(), "a RecipientInfo")
    rid = info["rid"]
    if rid.getName() == "subjectKeyIdentifier":
        return Recipient(subject_key_identifier=bytes(rid["subjectKeyIdentifier"]))
    issuer_and_serial = rid["issuerAndSerialNumber"]
    return Recipient(issuer_der=bytes(issuer_and_serial["issuer"]),
                     serial_number=int(issuer_and_serial["serialNumber"]))


def describe_name(der: bytes) -> str:
    """An X.501 Name as "CN=..., O=..." for messages; the raw hex if it does not parse."""
    try:
        name, _ = decoder.decode(der, asn1Spec=rfc5280.Name(), decodeOpenTypes=True)
    except (PyAsn1Error, ValueError, TypeError, IndexError, RecursionError):
        return f"(unparsed name {der[:32].hex()})"
    parts = []
    for rdn in name["rdnSequence"]:
        for attribute in rdn:
            label = _NAME_LABELS.get(str(attribute["type"]), str(attribute["type"]))
            parts.append(f"{label}={_attribute_text(attribute['value'])}")
    return ", ".join(parts) or "(empty name)"


def _attribute_text(value: base.Asn1Item) -> str:
    if isinstance(value, univ.Choice) and value.getName():
        value = value.getComponent()
    if isinstance(value, char.AbstractCharacterString):
        return str(value)
    return encoder.encode(value).hex() if isinstance(value, base.Asn1Item) else str(value)


def _subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return None


def _decode(substrate: bytes, spec: base.Asn1Item, what: str) -> base.Asn1Item:
    try:
        value, rest = decoder.decode(substrate, asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        raise SMIMEError(f"{what} is malformed: {type(exc).__name__}: {exc}"[:300]) from None
    if rest:
        raise SMIMEError(f"{what} has {len(rest)} trailing bytes")
    return value
