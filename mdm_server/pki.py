"""PKI the server hands out: PKCS#12 identities for profiles and the TLS files the web layer serves with.

Re-exports the certificate authority from `ca` so callers import everything PKI from one place.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.serialization import pkcs12

from mdm_protocol.pkcs12_memo import load_pkcs12 as memo_load_pkcs12

from .ca import (
    CertificateAuthority,
    KeyType,
    PkiError,
    PrivateKey,
    as_utc,
    certificate_fingerprint,
    generate_key,
    private_key_pem,
    write_private_file,
)

__all__ = [
    "DEFAULT_SERVER_NAMES",
    "CertificateAuthority",
    "KeyType",
    "Pkcs12Contents",
    "Pkcs12Encryption",
    "PkiError",
    "ServerTlsFiles",
    "certificate_fingerprint",
    "export_pkcs12",
    "generate_key",
    "load_pkcs12",
    "random_password",
    "server_tls_files",
]

SERVER_CERTIFICATE_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")
# Reissue the TLS certificate this long before it expires, so a long-running server never serves a dead one.
RENEW_BEFORE = timedelta(days=30)
# What `openssl pkcs12 -export` writes (with or without -legacy); the password, not the count, defends.
PKCS12_KDF_ROUNDS = 2048
CRYPTOGRAPHY_MAC_ROUNDS = 2048  # what cryptography's export uses for the MAC key whatever kdf_rounds says
# DER of the digest OIDs (tag, length, value) a PKCS#12 MAC names, to the hashlib names for them.
_MAC_DIGESTS = {bytes.fromhex("06052b0e03021a"): "sha1", bytes.fromhex("0609608648016503040201"): "sha256"}
_SHA1_ALGORITHM = bytes.fromhex("300906052b0e03021a0500")
_OID_DATA = bytes.fromhex("06092a864886f70d010701")
_OID_ENCRYPTED_DATA = bytes.fromhex("06092a864886f70d010706")
_OID_PBE_3DES = bytes.fromhex("060a2a864886f70d010c0103")  # pbeWithSHAAnd3-KeyTripleDES-CBC
_OID_SHROUDED_KEY_BAG = bytes.fromhex("060b2a864886f70d010c0a0102")
_OID_CERT_BAG = bytes.fromhex("060b2a864886f70d010c0a0103")
_OID_X509_CERTIFICATE = bytes.fromhex("060a2a864886f70d01091601")
_OID_FRIENDLY_NAME = bytes.fromhex("06092a864886f70d010914")
_OID_LOCAL_KEY_ID = bytes.fromhex("06092a864886f70d010915")


class Pkcs12Encryption(enum.Enum):
    """How a PKCS#12 protects its contents.

    LEGACY (3DES, SHA-1 MAC) is the default because iOS has long imported only that suite in profiles
    (files from OpenSSL 3's AES default fail with "Invalid Profile" on many iOS versions), and the emulator's
    P12s must install on real devices of every version it emulates. Its weakness is password guessing, which
    `random_password`'s 144 bits defeat. MODERN (PBES2, AES-256-CBC, PBKDF2/HMAC-SHA-256) is for peers known
    to read it.
    """

    LEGACY = "pbeWithSHAAnd3-KeyTripleDES-CBC, HMAC-SHA1"
    MODERN = "PBES2 AES-256-CBC PBKDF2-HMAC-SHA256, HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class Pkcs12Contents:
    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    friendly_name: str | None


@dataclass(frozen=True, slots=True)
class ServerTlsFiles:
    """PEM material for twisted's CertificateOptions: the leaf, its key, and the CA devices must trust."""

    certificate_pem: bytes
    private_key_pem: bytes
    ca_certificate_pem: bytes

    @property
    def chain_pem(self) -> bytes:
        """Leaf then CA, the order a TLS server sends them."""
        return self.certificate_pem + self.ca_certificate_pem


def random_password(nbytes: int = 18) -> str:
    """A URL-safe random password (18 bytes: 144 bits in 24 characters) for a PKCS#12 in a profile."""
    return secrets.token_urlsafe(nbytes)


def _password_bytes(password: bytes | str) -> bytes:
    value = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    if not value:
        raise PkiError("a PKCS#12 password must not be empty (iOS asks for one and profiles carry it)")
    return value


def _password_text(password: bytes | str) -> str:
    try:
        text = _password_bytes(password).decode("utf-8")
    except UnicodeDecodeError:
        raise PkiError("a PKCS#12 password must be UTF-8 text (it is stored as BMPString)") from None
    if "\0" in text:
        raise PkiError("a PKCS#12 password must not contain NUL (it ends the password in the file)")
    return text


def export_pkcs12(
    certificate: x509.Certificate,
    private_key: PrivateKey,
    password: bytes | str,
    friendly_name: str | bytes,
    *,
    chain: Sequence[x509.Certificate] = (),
    encryption: Pkcs12Encryption = Pkcs12Encryption.LEGACY,
    kdf_rounds: int = PKCS12_KDF_ROUNDS,
) -> bytes:
    """A password-protected PKCS#12 of one identity (plus an optional CA chain), as iOS installs it.

    `kdf_rounds` applies to the key, certificate and MAC derivations alike. Keep the default wherever a person
    chose the password; fewer rounds only where the password is random and travels with the file. cryptography
    always derives the MAC key with 2,048 rounds, so other counts of the LEGACY suite are written here, and a
    MODERN file gets its MAC recomputed.
    """
    if isinstance(kdf_rounds, bool) or not isinstance(kdf_rounds, int) or kdf_rounds < 1:
        raise PkiError(f"PKCS#12 KDF rounds must be a whole number of at least 1, not {kdf_rounds!r}")
    text = _password_text(password)
    if private_key.public_key() != certificate.public_key():
        raise PkiError("the private key does not belong to the certificate")
    name = friendly_name.encode("utf-8") if isinstance(friendly_name, str) else bytes(friendly_name)
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        raise PkiError("a PKCS#12 friendly name must be UTF-8 text (it is stored as BMPString)") from None
    if encryption is Pkcs12Encryption.LEGACY and kdf_rounds != CRYPTOGRAPHY_MAC_ROUNDS:
        return _legacy_pkcs12(certificate, private_key, tuple(chain), name or None, text, kdf_rounds)
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(kdf_rounds)
    mac_hash: hashes.HashAlgorithm
    if encryption is Pkcs12Encryption.LEGACY:
        algorithm, mac_hash = pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC, hashes.SHA1()
    else:
        algorithm, mac_hash = pkcs12.PBES.PBESv2SHA256AndAES256CBC, hashes.SHA256()
    builder = builder.key_cert_algorithm(algorithm).hmac_hash(mac_hash)
    data = pkcs12.serialize_key_and_certificates(
        name or None, private_key, certificate, list(chain) or None, builder.build(text.encode("utf-8"))
    )
    return data if kdf_rounds == CRYPTOGRAPHY_MAC_ROUNDS else _with_mac_rounds(data, text, kdf_rounds)


def _with_mac_rounds(pfx: bytes, password: str, rounds: int) -> bytes:
    """`pfx` with its MAC recomputed over the same authSafe with `rounds` KDF rounds and the same salt and hash.

    cryptography derives the MAC key with 2,048 rounds whatever `kdf_rounds` says; at one round that one
    derivation was most of the export. DER leaves `iterations` out when it is 1 (its DEFAULT), as
    `openssl pkcs12 -nomaciter` does.
    """
    _, body, _ = _der_item(pfx, 0)
    _, _, version_end = _der_item(pfx, body)
    _, content_info, auth_safe_end = _der_item(pfx, version_end)
    _, _, content_type_end = _der_item(pfx, content_info)
    _, explicit, _ = _der_item(pfx, content_type_end)
    _, octets, octets_end = _der_item(pfx, explicit)
    _, mac_data, _ = _der_item(pfx, auth_safe_end)
    _, digest_info, digest_info_end = _der_item(pfx, mac_data)
    _, algorithm_start, algorithm_end = _der_item(pfx, digest_info)
    _, _, oid_end = _der_item(pfx, algorithm_start)
    algorithm = pfx[digest_info:algorithm_end]
    _, salt_start, salt_end = _der_item(pfx, digest_info_end)
    digest = _MAC_DIGESTS.get(pfx[algorithm_start:oid_end])
    if digest is None:
        raise PkiError("cannot recompute this PKCS#12 MAC: its digest is neither SHA-1 nor SHA-256")
    salt = pfx[salt_start:salt_end]
    key = _pkcs12_kdf(password, salt, 3, rounds, hashlib.new(digest).digest_size, digest)
    mac = hmac.new(key, pfx[octets:octets_end], digest).digest()
    mac_data_der = _der(0x30, _der(0x30, algorithm + _der(0x04, mac)) + _der(0x04, salt) + _der_rounds(rounds))
    return _der(0x30, pfx[body:auth_safe_end] + mac_data_der)


def _legacy_pkcs12(certificate: x509.Certificate, private_key: PrivateKey, chain: tuple[x509.Certificate, ...],
                   name: bytes | None, password: str, rounds: int) -> bytes:
    """The LEGACY suite written here, for round counts cryptography cannot do (its MAC always takes 2,048).

    The layout is cryptography's (and OpenSSL's): certificates in a 3DES-encrypted SafeContents, the key in a
    pkcs8ShroudedKeyBag, friendlyName and localKeyID (SHA-1 of the certificate) on the leaf and the key.
    """
    attributes = [_der(0x30, _OID_LOCAL_KEY_ID + _der(0x31, _der(0x04, certificate.fingerprint(hashes.SHA1()))))]
    if name:
        bmp = _der(0x1E, name.decode("utf-8").encode("utf-16-be"))
        attributes.append(_der(0x30, _OID_FRIENDLY_NAME + _der(0x31, bmp)))
    bag_attributes = _der(0x31, b"".join(sorted(attributes)))  # DER orders a SET OF by encoding
    certificates = [_cert_bag(certificate, bag_attributes), *(_cert_bag(extra, b"") for extra in chain)]
    pkcs8 = private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    algorithm, encrypted_key = _pbe_encrypt(pkcs8, password, rounds)
    key_bag = _der(0x30, _OID_SHROUDED_KEY_BAG + _der(0xA0, _der(0x30, algorithm + _der(0x04, encrypted_key)))
                   + bag_attributes)
    algorithm, encrypted = _pbe_encrypt(_der(0x30, b"".join(certificates)), password, rounds)
    encrypted_data = _der(0x30, b"\x02\x01\x00" + _der(0x30, _OID_DATA + algorithm + _der(0x80, encrypted)))
    auth_safe = _der(0x30, _der(0x30, _OID_ENCRYPTED_DATA + _der(0xA0, encrypted_data))
                     + _der(0x30, _OID_DATA + _der(0xA0, _der(0x04, _der(0x30, key_bag)))))
    salt = secrets.token_bytes(8)
    mac = hmac.new(_pkcs12_kdf(password, salt, 3, rounds, 20), auth_safe, "sha1").digest()
    mac_data = _der(0x30, _der(0x30, _SHA1_ALGORITHM + _der(0x04, mac)) + _der(0x04, salt) + _der_rounds(rounds))
    return _der(0x30, b"\x02\x01\x03" + _der(0x30, _OID_DATA + _der(0xA0, _der(0x04, auth_safe))) + mac_data)


def _cert_bag(certificate: x509.Certificate, attributes: bytes) -> bytes:
    der = certificate.public_bytes(serialization.Encoding.DER)
    value = _der(0x30, _OID_X509_CERTIFICATE + _der(0xA0, _der(0x04, der)))
    return _der(0x30, _OID_CERT_BAG + _der(0xA0, value) + attributes)


def _pbe_encrypt(plain: bytes, password: str, rounds: int) -> tuple[bytes, bytes]:
    """pbeWithSHAAnd3-KeyTripleDES-CBC: (its AlgorithmIdentifier with a fresh salt, the ciphertext)."""
    salt = secrets.token_bytes(8)
    key, iv = _pkcs12_kdf(password, salt, 1, rounds, 24), _pkcs12_kdf(password, salt, 2, rounds, 8)
    padder = padding.PKCS7(64).padder()
    encryptor = Cipher(TripleDES(key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    parameters = _der(0x30, _der(0x04, salt) + _der(0x02, rounds.to_bytes((rounds.bit_length() + 8) // 8, "big")))
    return _der(0x30, _OID_PBE_3DES + parameters), encrypted


def _der_rounds(rounds: int) -> bytes:
    """MacData's iterations: left out at 1, its DEFAULT, as DER requires (and `openssl pkcs12 -nomaciter`)."""
    return _der(0x02, rounds.to_bytes((rounds.bit_length() + 8) // 8, "big")) if rounds > 1 else b""


def _pkcs12_kdf(password: str, salt: bytes, purpose: int, rounds: int, size: int, digest: str = "sha1") -> bytes:
    """RFC 7292 appendix B.2: `size` bytes for `purpose` (1 key, 2 IV, 3 MAC key) from the password."""
    block = 64  # v, the input block size of SHA-1 and SHA-256
    secret = password.encode("utf-16-be") + b"\0\0"  # BMPString with its terminator, as OpenSSL writes it
    mixed = bytearray(_repeat_to_blocks(salt, block) + _repeat_to_blocks(secret, block))
    out = b""
    while True:
        value = hashlib.new(digest, bytes([purpose]) * block + mixed).digest()
        for _ in range(rounds - 1):
            value = hashlib.new(digest, value).digest()
        out += value
        if len(out) >= size:
            return out[:size]
        # More output wanted (a 3DES key): each block of the input plus the output repeated, plus one.
        addend = int.from_bytes(_repeat_to_blocks(value, block)[:block], "big") + 1
        for start in range(0, len(mixed), block):
            total = (int.from_bytes(mixed[start:start + block], "big") + addend) % (1 << (8 * block))
            mixed[start:start + block] = total.to_bytes(block, "big")


def _repeat_to_blocks(data: bytes, block: int) -> bytes:
    length = block * -(-len(data) // block)
    return (data * -(-length // len(data)))[:length] if data else b""


def _der_item(data: bytes, position: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER item at `position`; PkiError when it runs off the end."""
    try:
        tag, length = data[position], data[position + 1]
        start = position + 2
        if length & 0x80:
            count = length & 0x7F
            length, start = int.from_bytes(data[start:start + count], "big"), start + count
    except IndexError:
        raise PkiError("the PKCS#12 DER ends inside an item") from None
    if start + length > len(data):
        raise PkiError("a PKCS#12 DER item is longer than the data")
    return tag, start, start + length


def _der(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def load_pkcs12(data: bytes, password: bytes | str) -> Pkcs12Contents:
    """Open a PKCS#12 holding exactly one identity; a wrong password and a corrupt file read the same."""
    try:
        loaded = memo_load_pkcs12(data, _password_bytes(password))
    except (ValueError, TypeError):
        # cryptography cannot tell the two apart either (the MAC check fails first); neither can iOS (9000).
        raise PkiError("wrong password, or not a PKCS#12 file") from None
    if loaded.key is None or loaded.cert is None:
        raise PkiError("the PKCS#12 must hold a certificate and its private key")
    if not isinstance(loaded.key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"the PKCS#12 key is a {type(loaded.key).__name__}; only EC and RSA are supported")
    certificate = loaded.cert.certificate
    if loaded.key.public_key() != certificate.public_key():
        raise PkiError("the PKCS#12 private key does not belong to its certificate")
    name = loaded.cert.friendly_name
    return Pkcs12Contents(
        certificate,
        loaded.key,
        tuple(extra.certificate for extra in loaded.additional_certs),
        name.decode("utf-8", "replace") if name is not None else None,
    )


def server_tls_files(
    data_dir: Path | str,
    names: Sequence[str] = DEFAULT_SERVER_NAMES,
    *,
    now: datetime,
    key_type: KeyType | str = KeyType.EC,
) -> ServerTlsFiles:
    """The server's TLS certificate, key and CA from `data_dir`, creating or renewing what is missing.

    The CA is created once (ca.pem, ca.key); the server certificate (server.pem, server.key) is reused while
    it covers `names`, was issued by that CA and has more than RENEW_BEFORE left, and reissued otherwise.
    """
    directory = Path(data_dir)
    authority = CertificateAuthority.load_or_create(directory, now=now)
    cert_path, key_path = directory / SERVER_CERTIFICATE_FILE, directory / SERVER_KEY_FILE
    current = _read_server_files(cert_path, key_path)
    if current is not None and _still_serves(current[0], authority, names, as_utc(now)):
        certificate_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    else:
        certificate, key = authority.issue_server_certificate(names, now, key_type=key_type)
        certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
        key_pem = private_key_pem(key)
        write_private_file(key_path, key_pem)
        write_private_file(cert_path, certificate_pem)
    return ServerTlsFiles(certificate_pem, key_pem, authority.certificate_pem)


def _read_server_files(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKey] | None:
    """The stored server pair, or None when absent, unreadable or mismatched (then it is reissued)."""
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return None
    if key.public_key() != certificate.public_key():
        return None
    return certificate, key


def _still_serves(
    certificate: x509.Certificate, authority: CertificateAuthority, names: Sequence[str], now: datetime
) -> bool:
    try:
        certificate.verify_directly_issued_by(authority.certificate)
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    covered = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    covered |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    wanted = {_canonical(name) for name in names}
    in_window = certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc - RENEW_BEFORE
    return in_window and wanted <= covered


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name
