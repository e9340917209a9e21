"""Counts the private keys a PKCS#12 file holds, which cryptography's loader cannot tell us.

OpenSSL's PKCS12_parse keeps the first private key and silently drops the rest, yet an upload must hold one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.decrepit.ciphers.algorithms import RC2, TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pyasn1.codec.ber import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import base, univ
from pyasn1_modules import rfc5652, rfc7292, rfc8018

_KEY_BAGS = (rfc7292.id_keyBag, rfc7292.id_pkcs8ShroudedKeyBag)
# PKCS#12 PBE (RFC 7292 appendix C): OID -> (cipher factory, key length). RC2-40 and RC4 are not
# offered by cryptography; containers using them count as unreadable (OpenSSL put only certificates there).
_PKCS12_PBE = {
    rfc7292.pbeWithSHAAnd3_KeyTripleDES_CBC: (TripleDES, 24),
    rfc7292.pbeWithSHAAnd2_KeyTripleDES_CBC: (TripleDES, 16),
    rfc7292.pbeWithSHAAnd128BitRC2_CBC: (RC2, 16),
}
_PBES2_CIPHERS = {rfc8018.aes128_CBC_PAD: 16, rfc8018.aes192_CBC_PAD: 24, rfc8018.aes256_CBC_PAD: 32}
_PRF = {rfc8018.id_hmacWithSHA1: hashes.SHA1, rfc8018.id_hmacWithSHA256: hashes.SHA256,
        rfc8018.id_hmacWithSHA384: hashes.SHA384, rfc8018.id_hmacWithSHA512: hashes.SHA512}
MAX_ITERATIONS = 1_000_000  # a hostile file must not make the server hash forever


class Pkcs12FormatError(Exception):
    """The data is not a PKCS#12 (PFX) structure."""


@dataclass(frozen=True, slots=True)
class BagCount:
    private_keys: int
    certificates: int
    unreadable_containers: int  # encrypted parts we could not open (unknown cipher, public-key encrypted)


def count_bags(data: bytes, password: str | None) -> BagCount:
    """Keys and certificates in every part of the file; Pkcs12FormatError if it is not a PFX at all."""
    keys = certificates = unreadable = 0
    for content_info in _authenticated_safe(data):
        bags = _safe_contents(content_info, password)
        if bags is None:
            unreadable += 1
            continue
        counted = _count(bags)
        keys, certificates = keys + counted[0], certificates + counted[1]
    return BagCount(keys, certificates, unreadable)


def is_pkcs12(data: bytes) -> bool:
    try:
        _authenticated_safe(data)
    except Pkcs12FormatError:
        return False
    return True


def _decode(substrate: bytes, spec: base.Asn1Item) -> base.Asn1Item:
    value, rest = decoder.decode(substrate, asn1Spec=spec)
    if rest:
        raise PyAsn1Error("trailing data")
    return value


def _authenticated_safe(data: bytes) -> rfc7292.AuthenticatedSafe:
    try:
        pfx = _decode(bytes(data), rfc7292.PFX())
        if pfx["version"] != 3 or pfx["authSafe"]["contentType"] != rfc5652.id_data:
            raise Pkcs12FormatError("not a password-integrity PKCS#12 (version 3, data content)")
        octets = _decode(bytes(pfx["authSafe"]["content"]), univ.OctetString())
        return _decode(bytes(octets), rfc7292.AuthenticatedSafe())
    except PyAsn1Error as exc:
        raise Pkcs12FormatError(f"not a PKCS#12 file ({exc.__class__.__name__})") from None


def _safe_contents(content_info: rfc5652.ContentInfo, password: str | None) -> rfc7292.SafeContents | None:
    try:
        if content_info["contentType"] == rfc5652.id_data:
            octets = _decode(bytes(content_info["content"]), univ.OctetString())
            return _decode(bytes(octets), rfc7292.SafeContents())
        if content_info["contentType"] != rfc5652.id_encryptedData:
            return None  # envelopedData: encrypted to a public key we do not hold
        encrypted = _decode(bytes(content_info["content"]), rfc5652.EncryptedData())
        plaintext = _decrypt(encrypted["encryptedContentInfo"], password)
        return None if plaintext is None else _decode(plaintext, rfc7292.SafeContents())
    except PyAsn1Error:
        return None


def _count(bags: rfc7292.SafeContents) -> tuple[int, int]:
    keys = certificates = 0
    for bag in bags:
        bag_id = bag["bagId"]
        if bag_id in _KEY_BAGS:
            keys += 1
        elif bag_id == rfc7292.id_certBag:
            certificates += 1
        elif bag_id == rfc7292.id_safeContentsBag:
            nested = _count(_decode(bytes(bag["bagValue"]), rfc7292.SafeContents()))
            keys, certificates = keys + nested[0], certificates + nested[1]
    return keys, certificates


def _decrypt(info: rfc5652.EncryptedContentInfo, password: str | None) -> bytes | None:
    algorithm = info["contentEncryptionAlgorithm"]
    if not info["encryptedContent"].isValue:
        return None
    ciphertext = bytes(info["encryptedContent"])
    oid, parameters = algorithm["algorithm"], bytes(algorithm["parameters"])
    if oid in _PKCS12_PBE:
        cipher, iv = _pkcs12_cipher(oid, parameters, password)
    elif oid == rfc8018.id_PBES2:
        cipher, iv = _pbes2_cipher(parameters, password)
    else:
        return None
    if cipher is None:
        return None
    decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(cipher.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        return None


_CipherAndIV = tuple[Any, bytes]  # (a cryptography block cipher or None, the IV)


def _pkcs12_cipher(oid: univ.ObjectIdentifier, parameters: bytes, password: str | None) -> _CipherAndIV:
    pbe = _decode(parameters, rfc7292.Pkcs_12PbeParams())
    salt, rounds = bytes(pbe["salt"]), int(pbe["iterations"])
    if not 0 < rounds <= MAX_ITERATIONS:
        return None, b""
    factory, key_length = _PKCS12_PBE[oid]
    secret = _bmp(password)
    key = pkcs12_kdf(secret, salt, 1, rounds, key_length)
    iv = pkcs12_kdf(secret, salt, 2, rounds, 8)
    return factory(key), iv


def _pbes2_cipher(parameters: bytes, password: str | None) -> _CipherAndIV:
    pbes2 = _decode(parameters, rfc8018.PBES2_params())
    kdf, scheme = pbes2["keyDerivationFunc"], pbes2["encryptionScheme"]
    key_length = _PBES2_CIPHERS.get(scheme["algorithm"])
    if kdf["algorithm"] != rfc8018.id_PBKDF2 or key_length is None:
        return None, b""
    params = _decode(bytes(kdf["parameters"]), rfc8018.PBKDF2_params())
    prf = _PRF.get(params["prf"]["algorithm"]) if params["prf"].isValue else hashes.SHA1
    rounds = int(params["iterationCount"])
    if prf is None or not 0 < rounds <= MAX_ITERATIONS:
        return None, b""
    salt = bytes(params["salt"]["specified"])
    key = PBKDF2HMAC(prf(), key_length, salt, rounds).derive((password or "").encode("utf-8"))
    iv = bytes(_decode(bytes(scheme["parameters"]), univ.OctetString()))
    return algorithms.AES(key), iv


def _bmp(password: str | None) -> bytes:
    """RFC 7292 B.1: the password as big-endian UTF-16 with a two-byte terminator; no password is empty."""
    return b"" if password is None else password.encode("utf-16-be") + b"\x00\x00"


def pkcs12_kdf(password: bytes, salt: bytes, purpose: int, rounds: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 with SHA-1; `purpose` 1 = key, 2 = IV, 3 = MAC key."""
    u, v = 20, 64

    def stretch(value: bytes) -> bytes:  # repeat to a whole number of v-byte blocks
        if not value:
            return b""
        length = v * -(-len(value) // v)
        return (value * (length // len(value) + 1))[:length]

    block = bytearray(stretch(salt) + stretch(password))
    diversifier = bytes([purpose]) * v
    out = b""
    while len(out) < size:
        digest = hashlib.sha1(diversifier + bytes(block)).digest()
        for _ in range(rounds - 1):
            digest = hashlib.sha1(digest).digest()
        out += digest
        addend = int.from_bytes((digest * (v // u + 1))[:v], "big") + 1
        for start in range(0, len(block), v):
            total = (int.from_bytes(block[start:start + v], "big") + addend) % (1 << (8 * v))
            block[start:start + v] = total.to_bytes(v, "big")
    return out[:size]
