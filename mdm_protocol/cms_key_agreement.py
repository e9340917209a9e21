"""CMS key agreement recipients (RFC 5652 6.2.2, RFC 5753): ECDH with the recipient's EC key, the X9.63 KDF over
ECC-CMS-SharedInfo, AES key wrap: what `openssl cms -encrypt` makes for an EC certificate. scep_envelope uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from ._cms_asn1 import (
    CONTEXT_0,
    CONTEXT_1,
    INTEGER,
    OBJECT_IDENTIFIER,
    OCTET_STRING,
    SEQUENCE,
    Asn1Error,
    BerReader,
    Tlv,
    oid_text,
)
from ._cms_template import der, integer, oid

KARI = CONTEXT_1  # RecipientInfo ::= CHOICE { ktri, kari [1], ... }
BIT_STRING = 0x03
ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
# dhSinglePass-stdDH-* and -cofactorDH-* with each KDF hash (SEC 1, RFC 5753): the same on prime curves, whose
# cofactor is 1. OpenSSL sends the SHA-1 one by default; we send SHA-256.
KDF_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.133.16.840.63.0.2": hashes.SHA1, "1.3.132.1.11.0": hashes.SHA224, "1.3.132.1.11.1": hashes.SHA256,
    "1.3.132.1.11.2": hashes.SHA384, "1.3.132.1.11.3": hashes.SHA512, "1.3.133.16.840.63.0.3": hashes.SHA1,
    "1.3.132.1.14.0": hashes.SHA224, "1.3.132.1.14.1": hashes.SHA256, "1.3.132.1.14.2": hashes.SHA384,
    "1.3.132.1.14.3": hashes.SHA512,
}
STD_DH_SHA256_KDF = "1.3.132.1.11.1"
AES_WRAP = {"2.16.840.1.101.3.4.1.5": 16, "2.16.840.1.101.3.4.1.25": 24, "2.16.840.1.101.3.4.1.45": 32}
_WRAP_FOR = {length: dotted for dotted, length in AES_WRAP.items()}


@dataclass(frozen=True, slots=True)
class KeyAgreement:
    """Our KeyAgreeRecipientInfo, read: what it takes to unwrap the content-encryption key."""

    originator: bytes  # the sender's ephemeral public key, an encoded point on our curve
    ukm: bytes | None  # user keying material, when the sender added some
    kdf: type[hashes.HashAlgorithm]
    wrap: bytes  # DER of the key-wrap AlgorithmIdentifier: it enters the KDF's SharedInfo as sent
    wrap_length: int  # bytes of the key-encryption key
    encrypted_key: bytes


def find_key_agreement(reader: BerReader, infos: Tlv, issuer: bytes, serial: int,
                       key_id: bytes | None) -> KeyAgreement | None:
    """The key agreement addressed to us (by issuer and serial, or by subject key identifier), if any."""
    for info in reader.children(infos, "the recipientInfos"):
        if info[0] == KARI:
            found = _read_kari(reader, info, issuer, serial, key_id)
            if found is not None:
                return found
    return None


def unwrap_content_key(agreement: KeyAgreement, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The content-encryption key; ValueError (InvalidUnwrap included) when our key does not open it."""
    peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, agreement.originator)
    shared = key.exchange(ec.ECDH(), peer)
    info = shared_info(agreement.wrap, agreement.ukm, agreement.wrap_length)
    kek = X963KDF(agreement.kdf(), agreement.wrap_length, info).derive(shared)
    return aes_key_unwrap(kek, agreement.encrypted_key)


def key_agreement_recipient(public_key: ec.EllipticCurvePublicKey, recipient_id: bytes, content_key: bytes) -> bytes:
    """A [1] KeyAgreeRecipientInfo giving `content_key` to the holder of `public_key` (named by the DER
    issuerAndSerialNumber `recipient_id`): an ephemeral key on its curve, SHA-256 KDF, AES wrap of the key's size."""
    if len(content_key) not in _WRAP_FOR:
        raise ValueError(f"no AES key wrap for a {len(content_key)}-byte content key")
    ephemeral = ec.generate_private_key(public_key.curve)
    wrap = der(SEQUENCE, oid(_WRAP_FOR[len(content_key)]))
    kek = X963KDF(hashes.SHA256(), len(content_key), shared_info(wrap, None, len(content_key))).derive(
        ephemeral.exchange(ec.ECDH(), public_key))
    point = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)
    # RFC 5753 3.1.1: the originator is its public key, id-ecPublicKey with the parameters absent.
    originator = der(CONTEXT_0, der(CONTEXT_1, der(SEQUENCE, oid(ID_EC_PUBLIC_KEY)) + der(BIT_STRING, b"\0" + point)))
    algorithm = der(SEQUENCE, oid(STD_DH_SHA256_KDF) + wrap)
    encrypted_key = der(SEQUENCE, recipient_id + der(OCTET_STRING, aes_key_wrap(kek, content_key)))
    return der(KARI, integer(3) + originator + algorithm + der(SEQUENCE, encrypted_key))


def shared_info(wrap: bytes, ukm: bytes | None, length: int) -> bytes:
    """ECC-CMS-SharedInfo (RFC 5753 7.2): keyInfo, entityUInfo [0] (the ukm), suppPubInfo [2] (KEK bits)."""
    entity = b"" if ukm is None else der(CONTEXT_0, der(OCTET_STRING, ukm))
    return der(SEQUENCE, wrap + entity + der(0xA2, der(OCTET_STRING, (8 * length).to_bytes(4, "big"))))


def _read_kari(reader: BerReader, info: Tlv, issuer: bytes, serial: int, key_id: bytes | None) -> KeyAgreement | None:
    parts = reader.children(info, "a KeyAgreeRecipientInfo")
    if len(parts) < 4 or parts[0][0] != INTEGER or parts[1][0] != CONTEXT_0:
        raise Asn1Error("the KeyAgreeRecipientInfo lacks its version or originator")
    rest, ukm = parts[2:], None
    if rest[0][0] == CONTEXT_1:
        inner = reader.children(rest[0], "the ukm")
        if len(inner) != 1 or inner[0][0] != OCTET_STRING:
            raise Asn1Error("the ukm is not an OCTET STRING")
        rest, ukm = rest[1:], reader.content(inner[0])
    if len(rest) != 2 or rest[0][0] != SEQUENCE or rest[1][0] != SEQUENCE:
        raise Asn1Error("the KeyAgreeRecipientInfo lacks its algorithm or recipientEncryptedKeys")
    encrypted_key = _our_encrypted_key(reader, rest[1], issuer, serial, key_id)
    if encrypted_key is None:
        return None
    kdf, wrap, length = _algorithms(reader, rest[0])
    return KeyAgreement(_originator_point(reader, parts[1]), ukm, kdf, wrap, length, encrypted_key)


def _originator_point(reader: BerReader, originator: Tlv) -> bytes:
    inner = reader.children(originator, "the originator")
    if len(inner) != 1 or inner[0][0] != CONTEXT_1:
        raise Asn1Error("the originator is not an originatorKey (an ephemeral public key)")
    fields = reader.children(inner[0], "the originatorKey")
    if len(fields) != 2 or fields[0][0] != SEQUENCE or fields[1][0] != BIT_STRING:
        raise Asn1Error("the originatorKey is not an algorithm and a BIT STRING")
    bits = reader.content(fields[1])
    if not bits or bits[0] != 0:
        raise Asn1Error("the originatorKey's BIT STRING is empty or not whole octets")
    return bits[1:]


def _our_encrypted_key(reader: BerReader, keys: Tlv, issuer: bytes, serial: int, key_id: bytes | None) -> bytes | None:
    for item in reader.children(keys, "the recipientEncryptedKeys"):
        fields = reader.children(item, "a RecipientEncryptedKey") if item[0] == SEQUENCE else []
        if len(fields) != 2 or fields[1][0] != OCTET_STRING:
            raise Asn1Error("a RecipientEncryptedKey is not a rid and an OCTET STRING")
        rid = fields[0]
        if rid[0] == SEQUENCE:  # issuerAndSerialNumber
            sid = reader.children(rid, "the issuerAndSerialNumber")
            if len(sid) == 2 and reader.whole(sid[0]) == issuer and sid[1][0] == INTEGER and \
                    int.from_bytes(reader.content(sid[1]), "big", signed=True) == serial:
                return reader.content(fields[1])
        elif rid[0] == CONTEXT_0 and key_id is not None:  # rKeyId: RecipientKeyIdentifier, IMPLICIT
            inner = reader.children(rid, "the rKeyId")
            if inner and inner[0][0] == OCTET_STRING and reader.content(inner[0]) == key_id:
                return reader.content(fields[1])
    return None


def _algorithms(reader: BerReader, item: Tlv) -> tuple[type[hashes.HashAlgorithm], bytes, int]:
    fields = reader.children(item, "the keyEncryptionAlgorithm")
    if len(fields) != 2 or fields[0][0] != OBJECT_IDENTIFIER or fields[1][0] != SEQUENCE:
        raise Asn1Error("the keyEncryptionAlgorithm has no scheme and key-wrap algorithm")
    scheme = oid_text(reader.content(fields[0]))
    kdf = KDF_HASHES.get(scheme)
    if kdf is None:
        raise Asn1Error(f"unsupported key agreement scheme {scheme}")
    wrap = reader.children(fields[1], "the key-wrap algorithm")
    dotted = oid_text(reader.content(wrap[0])) if wrap and wrap[0][0] == OBJECT_IDENTIFIER else ""
    if dotted not in AES_WRAP:
        raise Asn1Error(f"unsupported key wrap {dotted or '(none)'}")
    return kdf, reader.whole(fields[1]), AES_WRAP[dotted]
