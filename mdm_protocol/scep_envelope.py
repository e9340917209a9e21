"""CMS EnvelopedData (RFC 5652 section 6): SCEP's pkcsPKIEnvelope and a profile's EncryptedPayloadContent.

RSA key transport with AES goes through cryptography's PKCS7EnvelopeBuilder and pkcs7_decrypt_der; 3DES (iOS's
fallback when a CA does not advertise AES) and EC key agreement (cms_key_agreement.py), which cryptography has
not, are built and opened here.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
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
from ._cms_template import der, integer, oid
from .cms_key_agreement import find_key_agreement, key_agreement_recipient, unwrap_content_key

ID_DATA = "1.2.840.113549.1.7.1"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
MAX_ENVELOPE = 256 * 1024  # a CSR or a certificate chain is a few KB


class ContentCipher(enum.StrEnum):
    """Content-encryption algorithms by their OID; iOS picks AES when the CA says so, else 3DES."""

    AES128 = "2.16.840.1.101.3.4.1.2"
    AES256 = "2.16.840.1.101.3.4.1.42"
    DES3 = "1.2.840.113549.3.7"


_KEY_BYTES = {ContentCipher.AES128: 16, ContentCipher.AES256: 32, ContentCipher.DES3: 24}


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
    """DER ContentInfo(EnvelopedData) of `content` for one RSA (key transport) or EC (key agreement) recipient."""
    public_key = recipient.public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _envelope_ec(content, recipient, public_key, cipher)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise EnvelopeError(f"an envelope needs an RSA or EC recipient, not {type(public_key).__name__}")
    if cipher is ContentCipher.DES3:
        return _envelope_des3(content, recipient)
    algorithm = algorithms.AES128 if cipher is ContentCipher.AES128 else algorithms.AES256
    builder = (pkcs7.PKCS7EnvelopeBuilder().set_data(content).add_recipient(recipient)
               .set_content_encryption_algorithm(algorithm))
    return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def open_envelope(data: bytes, certificate: x509.Certificate,
                  key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Opened:
    """The content of an envelope addressed to `certificate`; EnvelopeError when it is not for us or unreadable."""
    if len(data) > MAX_ENVELOPE:
        raise EnvelopeError(f"the envelope is {len(data)} bytes, over {MAX_ENVELOPE}")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _open_ec(data, certificate, key)
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
    reader, infos, encrypted_info = _envelope_parts(data)
    key = _recipient_key(reader, infos, certificate_issuer(certificate), serial)
    cipher, iv, encrypted = _encrypted_content(reader, encrypted_info)
    return key, cipher, iv, encrypted


def _envelope_parts(data: bytes) -> tuple[BerReader, Tlv, Tlv]:
    """The reader, recipientInfos and encryptedContentInfo of a ContentInfo(EnvelopedData)."""
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
    return reader, rest[0], rest[1]


def _open_ec(data: bytes, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Opened:
    """An envelope whose content key reaches us by ECDH key agreement (RFC 5753)."""
    try:
        reader, infos, encrypted_info = _envelope_parts(data)
        agreement = find_key_agreement(reader, infos, certificate_issuer(certificate_der(certificate)),
                                       certificate.serial_number, _key_id(certificate))
        if agreement is None:
            raise Asn1Error("no RecipientInfo names our certificate")
        cipher, iv, encrypted = _encrypted_content(reader, encrypted_info)
    except Asn1Error as exc:
        raise EnvelopeError(f"the envelope is malformed: {exc}") from None
    try:  # one error whatever failed (the point, the unwrap, the padding): no oracle
        return Opened(_decrypt(cipher, unwrap_content_key(agreement, key), iv, encrypted), cipher)
    except ValueError:
        raise EnvelopeError("the envelope cannot be decrypted with our key") from None


def _envelope_ec(content: bytes, recipient: x509.Certificate, public_key: ec.EllipticCurvePublicKey,
                 cipher: ContentCipher) -> bytes:
    if cipher is ContentCipher.DES3:
        raise EnvelopeError("EC key agreement wraps AES content keys only; use AES")
    content_key, iv = os.urandom(16 if cipher is ContentCipher.AES128 else 32), os.urandom(16)
    padder = symmetric_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    recipient_der = certificate_der(recipient)
    sid = der(SEQUENCE, certificate_issuer(recipient_der) + integer(recipient.serial_number))
    recipient_info = key_agreement_recipient(public_key, sid, content_key)
    algorithm = der(SEQUENCE, oid(cipher) + der(OCTET_STRING, iv))
    encrypted_info = der(SEQUENCE, oid(ID_DATA) + algorithm + der(0x80, ciphertext))
    # Version 2: a kari is a version-3 RecipientInfo (RFC 5652 6.1).
    enveloped = der(SEQUENCE, integer(2) + der(SET, recipient_info) + encrypted_info)
    return der(SEQUENCE, oid(ID_ENVELOPED_DATA) + der(CONTEXT_0, enveloped))


def _decrypt(cipher: ContentCipher, content_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """CBC content decryption and PKCS#7 unpadding; ValueError for any mismatch."""
    if len(content_key) != _KEY_BYTES[cipher]:
        raise ValueError("wrong key size")
    algorithm, block = (TripleDES(content_key), 64) if cipher is ContentCipher.DES3 else (
        algorithms.AES(content_key), 128)
    if len(iv) * 8 != block or not ciphertext or len(ciphertext) * 8 % block:
        raise ValueError("wrong sizes")
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    unpadder = symmetric_padding.PKCS7(block).unpadder()
    return unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()


def _key_id(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


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
        return _decrypt(ContentCipher.DES3, key.decrypt(encrypted_key, padding.PKCS1v15()), iv, ciphertext)
    except ValueError:
        raise EnvelopeError("the envelope cannot be decrypted with our key") from None
