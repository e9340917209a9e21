"""CMS EnvelopedData (RFC 5652 section 6) for SCEP's pkcsPKIEnvelope: RSA key transport, AES or 3DES content.

AES goes through cryptography's PKCS7EnvelopeBuilder and pkcs7_decrypt_der; cryptography has no 3DES there,
which iOS falls back to when a CA does not advertise AES, so that one cipher is built and opened here.
"""

from __future__ import annotations

import enum
import functools
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

from ._cms_asn1 import (
    CONTEXT_0,
    INTEGER,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    SEQUENCE,
    SET,
    Asn1Error,
    BerReader,
    Tlv,
    certificate_issuer,
    octet_string,
    oid_text,
    read_content_info,
)
from ._cms_template import der

ID_DATA = "1.2.840.113549.1.7.1"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
MAX_ENVELOPE = 256 * 1024  # a CSR or a certificate chain is a few KB


class ContentCipher(enum.StrEnum):
    """Content-encryption algorithms by their OID; iOS picks AES when the CA says so, else 3DES."""

    AES128 = "2.16.840.1.101.3.4.1.2"
    AES256 = "2.16.840.1.101.3.4.1.42"
    DES3 = "1.2.840.113549.3.7"


class EnvelopeError(Exception):
    """An envelope we cannot build or open; `reason` says why (never which step of decryption failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Opened:
    content: bytes
    cipher: ContentCipher


def envelope(content: bytes, recipient: x509.Certificate, cipher: ContentCipher = ContentCipher.AES128) -> bytes:
    """DER ContentInfo(EnvelopedData) of `content` for one RSA recipient certificate."""
    if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
        raise EnvelopeError("SCEP envelopes need an RSA recipient certificate")
    if cipher is ContentCipher.DES3:
        return _envelope_des3(content, recipient)
    algorithm = algorithms.AES128 if cipher is ContentCipher.AES128 else algorithms.AES256
    builder = (pkcs7.PKCS7EnvelopeBuilder().set_data(content).add_recipient(recipient)
               .set_content_encryption_algorithm(algorithm))
    return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def open_envelope(data: bytes, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> Opened:
    """The content of an envelope addressed to `certificate`; EnvelopeError when it is not for us or unreadable."""
    if len(data) > MAX_ENVELOPE:
        raise EnvelopeError(f"the envelope is {len(data)} bytes, over {MAX_ENVELOPE}")
    try:
        recipient, cipher, iv, encrypted = _read(data, certificate_der(certificate), certificate.serial_number)
    except Asn1Error as exc:
        raise EnvelopeError(f"the envelope is malformed: {exc}") from None
    if cipher is ContentCipher.DES3:
        return Opened(_open_des3(recipient, iv, encrypted, key), cipher)
    try:
        return Opened(pkcs7.pkcs7_decrypt_der(data, certificate, key, []), cipher)
    except ValueError:
        raise EnvelopeError("the envelope cannot be decrypted with our key") from None


def certificate_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _read(data: bytes, certificate: bytes, serial: int) -> tuple[bytes, ContentCipher, bytes, bytes]:
    """(encryptedKey for us, cipher, IV, ciphertext) of a ContentInfo(EnvelopedData)."""
    reader = BerReader(data)
    content_type, content, end = read_content_info(reader)
    if content_type != ID_ENVELOPED_DATA:
        raise Asn1Error(f"the content type is {content_type}, not EnvelopedData")
    if end != len(data):
        raise Asn1Error(f"{len(data) - end} trailing bytes after the ContentInfo")
    (enveloped,) = _one(reader, content, "the ContentInfo content")
    fields = reader.children(enveloped, "the EnvelopedData")
    if len(fields) < 3 or fields[0][0] != INTEGER:
        raise Asn1Error("the EnvelopedData lacks its version, recipientInfos or encryptedContentInfo")
    rest = fields[1:] if fields[1][0] != CONTEXT_0 else fields[2:]  # skip originatorInfo
    if len(rest) < 2 or rest[0][0] != SET or rest[1][0] != SEQUENCE:
        raise Asn1Error("the EnvelopedData lacks its recipientInfos or encryptedContentInfo")
    key = _recipient_key(reader, rest[0], certificate_issuer(certificate), serial)
    cipher, iv, encrypted = _encrypted_content(reader, rest[1])
    return key, cipher, iv, encrypted


def _one(reader: BerReader, item: Tlv, what: str) -> list[Tlv]:
    inner = reader.children(item, what)
    if len(inner) != 1 or inner[0][0] != SEQUENCE:
        raise Asn1Error(f"{what} is not one SEQUENCE")
    return inner


def _recipient_key(reader: BerReader, infos: Tlv, issuer: bytes, serial: int) -> bytes:
    for info in reader.children(infos, "the recipientInfos"):
        parts = reader.children(info, "a RecipientInfo") if info[0] == SEQUENCE else []
        if len(parts) != 4 or parts[1][0] != SEQUENCE or parts[3][0] != OCTET_STRING:
            continue  # not a KeyTransRecipientInfo by issuerAndSerialNumber
        sid = reader.children(parts[1], "the issuerAndSerialNumber")
        if len(sid) == 2 and reader.whole(sid[0]) == issuer and sid[1][0] == INTEGER and \
                int.from_bytes(reader.content(sid[1]), "big", signed=True) == serial:
            algorithm = reader.children(parts[2], "the keyEncryptionAlgorithm")
            if not algorithm or oid_text(reader.content(algorithm[0])) != RSA_ENCRYPTION:
                raise Asn1Error("our RecipientInfo does not use rsaEncryption")
            return reader.content(parts[3])
    raise Asn1Error("no RecipientInfo names our certificate")


def _encrypted_content(reader: BerReader, item: Tlv) -> tuple[ContentCipher, bytes, bytes]:
    parts = reader.children(item, "the encryptedContentInfo")
    if len(parts) != 3 or parts[0][0] != OBJECT_IDENTIFIER or parts[1][0] != SEQUENCE:
        raise Asn1Error("the encryptedContentInfo has no content, algorithm and ciphertext")
    algorithm = reader.children(parts[1], "the contentEncryptionAlgorithm")
    oid = oid_text(reader.content(algorithm[0])) if algorithm and algorithm[0][0] == OBJECT_IDENTIFIER else ""
    try:
        cipher = ContentCipher(oid)
    except ValueError:
        raise Asn1Error(f"unsupported content encryption algorithm {oid or '(none)'}") from None
    if len(algorithm) != 2 or algorithm[1][0] != OCTET_STRING:
        raise Asn1Error("the content encryption algorithm has no IV")
    if parts[2][0] == 0x80:
        encrypted = reader.content(parts[2])
    elif parts[2][0] == 0xA0:  # constructed: BER segments
        encrypted = octet_string(reader, (0x24, *parts[2][1:]))
    else:
        raise Asn1Error("the encryptedContentInfo has no encryptedContent")
    return cipher, reader.content(algorithm[1]), encrypted


def _envelope_des3(content: bytes, recipient: x509.Certificate) -> bytes:
    key, iv = os.urandom(24), os.urandom(8)
    padder = symmetric_padding.PKCS7(64).padder()
    encryptor = Cipher(TripleDES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    public_key = recipient.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    encrypted_key = public_key.encrypt(key, padding.PKCS1v15())
    recipient_der = certificate_der(recipient)
    sid = der(SEQUENCE, certificate_issuer(recipient_der) + integer(recipient.serial_number))
    rsa_algorithm = der(SEQUENCE, oid(RSA_ENCRYPTION) + b"\x05\x00")
    recipient_info = der(SEQUENCE, integer(0) + sid + rsa_algorithm + der(OCTET_STRING, encrypted_key))
    algorithm = der(SEQUENCE, oid(ContentCipher.DES3) + der(OCTET_STRING, iv))
    encrypted_info = der(SEQUENCE, oid(ID_DATA) + algorithm + der(0x80, ciphertext))
    enveloped = der(SEQUENCE, integer(0) + der(SET, recipient_info) + encrypted_info)
    return der(SEQUENCE, oid(ID_ENVELOPED_DATA) + der(CONTEXT_0, enveloped))


def _open_des3(encrypted_key: bytes, iv: bytes, ciphertext: bytes, key: rsa.RSAPrivateKey) -> bytes:
    # OpenSSL 3.2+ answers a bad PKCS#1 v1.5 block with a random key (implicit rejection), so a forged key
    # only shows as bad padding below: one error for both, no Bleichenbacher oracle (RFC 3218).
    try:
        content_key = key.decrypt(encrypted_key, padding.PKCS1v15())
        if len(content_key) != 24 or len(iv) != 8 or not ciphertext or len(ciphertext) % 8:
            raise ValueError("wrong sizes")
        decryptor = Cipher(TripleDES(content_key), modes.CBC(iv)).decryptor()
        unpadder = symmetric_padding.PKCS7(64).unpadder()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise EnvelopeError("the envelope cannot be decrypted with our key") from None


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
