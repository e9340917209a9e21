"""SCEP pkiMessages (RFC 8894 section 3): PKCSReq, CertPoll and CertRep as CMS SignedData over an envelope.

Building signs the SCEP attributes here (cryptography's PKCS7SignatureBuilder cannot add them); reading
verifies with `cms.verify_embedded`. GetCACaps, GetCACert and the CSR live in `scep_operations`.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from ._cms_asn1 import (
    CONTEXT_0,
    OCTET_STRING,
    SEQUENCE,
    SET,
    Asn1Error,
    Attribute,
    BerReader,
    certificate_issuer,
    der_set,
    read_content_info,
    read_signed_data,
)
from ._cms_template import der, integer, oid
from .cms import verify_embedded
from .errors import ProtocolError, SignatureError
from .scep_envelope import (
    ID_DATA,
    RSA_ENCRYPTION,
    ContentCipher,
    EnvelopeError,
    Opened,
    certificate_der,
    envelope,
    open_envelope,
)

ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_PKI = "2.16.840.1.113733.1.9."  # id-VeriSign pki attributes (RFC 8894 section 3.2.1)
MESSAGE_TYPE, PKI_STATUS, FAIL_INFO = _PKI + "2", _PKI + "3", _PKI + "4"
SENDER_NONCE, RECIPIENT_NONCE, TRANSACTION_ID = _PKI + "5", _PKI + "6", _PKI + "7"
FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"
_CONTENT_TYPE, _MESSAGE_DIGEST = "1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4"
PRINTABLE_STRING, UTF8_STRING = 0x13, 0x0C
NONCE_SIZE = 16
MAX_MESSAGE = 64 * 1024

DIGEST_OIDS = {"sha1": "1.3.14.3.2.26", "sha256": "2.16.840.1.101.3.4.2.1", "sha512": "2.16.840.1.101.3.4.2.3"}
_ECDSA_OIDS = {"sha1": "1.2.840.10045.4.1", "sha256": "1.2.840.10045.4.3.2", "sha512": "1.2.840.10045.4.3.4"}


class MessageType(enum.StrEnum):
    CERT_REP = "3"
    RENEWAL_REQ = "17"
    PKCS_REQ = "19"
    CERT_POLL = "20"  # GetCertInitial
    GET_CERT = "21"
    GET_CRL = "22"


class PkiStatus(enum.StrEnum):
    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


class FailInfo(enum.StrEnum):
    BAD_ALG = "0"
    BAD_MESSAGE_CHECK = "1"
    BAD_REQUEST = "2"
    BAD_TIME = "3"
    BAD_CERT_ID = "4"


class ScepError(ProtocolError):
    """A pkiMessage we refuse; `fail_info` is what a CertRep FAILURE tells the requester."""

    def __init__(self, reason: str, fail_info: FailInfo = FailInfo.BAD_REQUEST) -> None:
        super().__init__(reason)
        self.fail_info = fail_info


@dataclass(frozen=True, slots=True)
class PkiMessage:
    """A verified pkiMessage: its SCEP attributes, its signer, and the pkcsPKIEnvelope (b"" when absent)."""

    message_type: MessageType
    transaction_id: str
    sender_nonce: bytes | None
    recipient_nonce: bytes | None
    pki_status: PkiStatus | None
    fail_info: FailInfo | None
    fail_info_text: str | None
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]  # the other certificates the SignedData carries
    digest_algorithm: str  # "sha256", ...
    envelope: bytes


# --- building ----------------------------------------------------------------------------------------------


def transaction_id(public_key: rsa.RSAPublicKey) -> str:
    """RFC 8894 section 3.2.1.1: a hash of the requester's public key (here SHA-256, upper-case hex)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest().upper()


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def _hash(digest: str) -> hashes.SHA1 | hashes.SHA256 | hashes.SHA512:
    if digest == "sha1":
        return hashes.SHA1()
    return hashes.SHA512() if digest == "sha512" else hashes.SHA256()


def _attribute(kind: str, tag: int, value: bytes) -> bytes:
    return der(SEQUENCE, oid(kind) + der(SET, der(tag, value)))


def build_pki_message(
    content: bytes, signer: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *,
    message_type: MessageType,
    transaction: str, sender_nonce: bytes | None = None, recipient_nonce: bytes | None = None,
    pki_status: PkiStatus | None = None, fail_info: FailInfo | None = None, fail_info_text: str | None = None,
    digest: str = "sha256", extra_certificates: Sequence[x509.Certificate] = (),
) -> bytes:
    """DER ContentInfo(SignedData) over `content` (b"": no eContent) with the SCEP signed attributes."""
    if digest not in DIGEST_OIDS:
        raise ScepError(f"unsupported digest {digest!r}", FailInfo.BAD_ALG)
    attributes = [
        _attribute(_CONTENT_TYPE, 0x06, oid(ID_DATA)[2:]),
        _attribute(_MESSAGE_DIGEST, OCTET_STRING, hashlib.new(digest, content).digest()),
        _attribute(MESSAGE_TYPE, PRINTABLE_STRING, message_type.value.encode()),
        _attribute(TRANSACTION_ID, PRINTABLE_STRING, transaction.encode("ascii")),
    ]
    optional: list[tuple[str, int, bytes | None]] = [
        (SENDER_NONCE, OCTET_STRING, sender_nonce), (RECIPIENT_NONCE, OCTET_STRING, recipient_nonce),
        (PKI_STATUS, PRINTABLE_STRING, None if pki_status is None else pki_status.value.encode()),
        (FAIL_INFO, PRINTABLE_STRING, None if fail_info is None else fail_info.value.encode()),
        (FAIL_INFO_TEXT, UTF8_STRING, None if fail_info_text is None else fail_info_text.encode()),
    ]
    attributes += [_attribute(kind, tag, value) for kind, tag, value in optional if value is not None]
    signed_set = der_set(attributes)
    chosen = _hash(digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):  # not iOS's; lets tests (and peers) send EC requests
        signature, algorithm = key.sign(signed_set, ec.ECDSA(chosen)), _ECDSA_OIDS[digest]
    else:
        signature, algorithm = key.sign(signed_set, padding.PKCS1v15(), chosen), RSA_ENCRYPTION
    algorithm_id = der(SEQUENCE, oid(algorithm) + (b"\x05\x00" if algorithm == RSA_ENCRYPTION else b""))
    signer_der = certificate_der(signer)
    digest_algorithm = der(SEQUENCE, oid(DIGEST_OIDS[digest]) + b"\x05\x00")
    signer_info = der(SEQUENCE, integer(1)
                      + der(SEQUENCE, certificate_issuer(signer_der) + integer(signer.serial_number))
                      + digest_algorithm + der(CONTEXT_0, signed_set[2 + _length_octets(signed_set):])
                      + algorithm_id + der(OCTET_STRING, signature))
    encapsulated = oid(ID_DATA) + (der(CONTEXT_0, der(OCTET_STRING, content)) if content else b"")
    certificates = signer_der + b"".join(certificate_der(c) for c in extra_certificates)
    signed = der(SEQUENCE, integer(1) + der(SET, digest_algorithm) + der(SEQUENCE, encapsulated)
                 + der(CONTEXT_0, certificates) + der(SET, signer_info))
    return der(SEQUENCE, oid(ID_SIGNED_DATA) + der(CONTEXT_0, signed))


def _length_octets(tlv: bytes) -> int:
    """How many length octets follow the first length byte of a DER TLV."""
    return tlv[1] - 0x80 if tlv[1] & 0x80 else 0


def pkcs_req(csr: x509.CertificateSigningRequest, signer: x509.Certificate, key: rsa.RSAPrivateKey,
             recipient: x509.Certificate, *, sender_nonce: bytes, cipher: ContentCipher = ContentCipher.AES128,
             digest: str = "sha256") -> bytes:
    """PKCSReq: the CSR enveloped to the CA/RA, signed by the requester's self-signed certificate."""
    enveloped = envelope(csr.public_bytes(serialization.Encoding.DER), recipient, cipher)
    return build_pki_message(enveloped, signer, key, message_type=MessageType.PKCS_REQ,
                             transaction=transaction_id(key.public_key()), sender_nonce=sender_nonce,
                             digest=digest)


def cert_poll(issuer: x509.Name, subject: x509.Name, signer: x509.Certificate, key: rsa.RSAPrivateKey,
              recipient: x509.Certificate, *, sender_nonce: bytes, cipher: ContentCipher = ContentCipher.AES128,
              digest: str = "sha256") -> bytes:
    """CertPoll (GetCertInitial) after PENDING: IssuerAndSubject enveloped, same transactionID."""
    body = der(SEQUENCE, issuer.public_bytes() + subject.public_bytes())
    return build_pki_message(envelope(body, recipient, cipher), signer, key, message_type=MessageType.CERT_POLL,
                             transaction=transaction_id(key.public_key()), sender_nonce=sender_nonce,
                             digest=digest)


def cert_rep_success(issued: Sequence[x509.Certificate], request: PkiMessage, signer: x509.Certificate,
                     key: rsa.RSAPrivateKey, *, cipher: ContentCipher, digest: str = "sha256") -> bytes:
    """CertRep SUCCESS: the issued certificate (first) in a degenerate certs-only SignedData, enveloped to the
    requester's signing certificate."""
    degenerate = pkcs7.serialize_certificates(list(issued), serialization.Encoding.DER)
    return _reply(envelope(degenerate, request.signer, cipher), request, signer, key, PkiStatus.SUCCESS,
                  digest=digest)


def cert_rep_failure(request: PkiMessage, signer: x509.Certificate, key: rsa.RSAPrivateKey, fail_info: FailInfo,
                     text: str | None = None, *, digest: str = "sha256") -> bytes:
    """CertRep FAILURE with failInfo (and RFC 8894's failInfoText); no envelope."""
    return _reply(b"", request, signer, key, PkiStatus.FAILURE, fail_info=fail_info, text=text, digest=digest)


def cert_rep_pending(request: PkiMessage, signer: x509.Certificate, key: rsa.RSAPrivateKey, *,
                     digest: str = "sha256") -> bytes:
    return _reply(b"", request, signer, key, PkiStatus.PENDING, digest=digest)


def _reply(content: bytes, request: PkiMessage, signer: x509.Certificate, key: rsa.RSAPrivateKey,
           status: PkiStatus, *, digest: str, fail_info: FailInfo | None = None, text: str | None = None) -> bytes:
    """A CertRep to `request`: its transactionID, our fresh senderNonce, its senderNonce echoed."""
    return build_pki_message(content, signer, key, message_type=MessageType.CERT_REP,
                             transaction=request.transaction_id, sender_nonce=new_nonce(),
                             recipient_nonce=request.sender_nonce, pki_status=status, fail_info=fail_info,
                             fail_info_text=text, digest=digest)


# --- reading -------------------------------------------------------------------------------------------------


def read_pki_message(data: bytes, *, allow_sha1: bool = False) -> PkiMessage:
    """Verify a pkiMessage's signature (by the certificate it names) and read its SCEP attributes.

    ScepError: badAlg for a refused digest, badMessageCheck for a signature that does not verify, badRequest
    for anything malformed. Who the signer is (self-signed requester, our RA) is the caller's question.
    """
    if len(data) > MAX_MESSAGE:
        raise ScepError(f"the pkiMessage is {len(data)} bytes, over {MAX_MESSAGE}")
    try:
        verified = verify_embedded(bytes(data), allow_sha1=allow_sha1)
    except SignatureError as exc:
        raise ScepError(f"the pkiMessage signature: {exc.reason}", _fail_info_for(exc.reason)) from None
    values = _scep_values(verified.attributes)
    try:
        message_type = MessageType(_text(values, MESSAGE_TYPE, required=True) or "")
        status_text = _text(values, PKI_STATUS)
        fail_text = _text(values, FAIL_INFO)
        pki_status = PkiStatus(status_text) if status_text is not None else None
        fail_info = FailInfo(fail_text) if fail_text is not None else None
    except ValueError as exc:
        raise ScepError(f"the pkiMessage has an unknown attribute value: {exc}") from None
    transaction = _text(values, TRANSACTION_ID, required=True) or ""
    return PkiMessage(
        message_type, transaction, _octets(values, SENDER_NONCE), _octets(values, RECIPIENT_NONCE), pki_status,
        fail_info, _text(values, FAIL_INFO_TEXT), verified.info.signer, verified.info.certificates,
        verified.info.digest_algorithm, verified.content,
    )


def read_unverified(data: bytes) -> PkiMessage | None:
    """The attributes and first certificate of a pkiMessage whose signature did not verify, so that a refusal
    can still be addressed to its sender (transactionID, recipientNonce); None when even that is unreadable."""
    try:
        reader = BerReader(bytes(data[:MAX_MESSAGE]))
        signed = read_signed_data(reader, read_content_info(reader)[1])
        values = _scep_values(signed.signer_infos[0].signed_attributes or ())
        signer = x509.load_der_x509_certificate(signed.certificates[0])
        transaction = _text(values, TRANSACTION_ID, required=True) or ""
        return PkiMessage(MessageType.PKCS_REQ, transaction, _octets(values, SENDER_NONCE), None, None, None,
                          None, signer, (), "sha256", b"")
    except (Asn1Error, ScepError, IndexError, ValueError):
        return None


def _fail_info_for(reason: str) -> FailInfo:
    if "unsupported" in reason:
        return FailInfo.BAD_ALG
    if "bad signature" in reason or "messageDigest" in reason or "does not fit" in reason:
        return FailInfo.BAD_MESSAGE_CHECK
    return FailInfo.BAD_REQUEST


_SCEP_ATTRIBUTES = {MESSAGE_TYPE, PKI_STATUS, FAIL_INFO, SENDER_NONCE, RECIPIENT_NONCE, TRANSACTION_ID,
                    FAIL_INFO_TEXT}


def _scep_values(attributes: Sequence[Attribute]) -> dict[str, tuple[int, bytes]]:
    values: dict[str, tuple[int, bytes]] = {}
    for attribute in attributes:
        if attribute.oid not in _SCEP_ATTRIBUTES:
            continue
        if len(attribute.values) != 1 or attribute.oid in values:
            raise ScepError(f"SCEP attribute {attribute.oid} must appear once with exactly one value")
        values[attribute.oid] = attribute.values[0]
    return values


def _text(values: dict[str, tuple[int, bytes]], kind: str, *, required: bool = False) -> str | None:
    if kind not in values:
        if required:
            raise ScepError(f"the pkiMessage lacks the SCEP attribute {kind}")
        return None
    tag, content = values[kind]
    if tag not in (PRINTABLE_STRING, UTF8_STRING, 0x16):  # IA5String too: some clients write it
        raise ScepError(f"SCEP attribute {kind} is not a string (tag {tag:#04x})")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise ScepError(f"SCEP attribute {kind} is not valid text") from None


def _octets(values: dict[str, tuple[int, bytes]], kind: str) -> bytes | None:
    if kind not in values:
        return None
    tag, content = values[kind]
    if tag != OCTET_STRING:
        raise ScepError(f"SCEP attribute {kind} is not an OCTET STRING (tag {tag:#04x})")
    return content


def open_request(message: PkiMessage, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> Opened:
    """The decrypted content of a request's pkcsPKIEnvelope (the DER CSR of a PKCSReq)."""
    if not message.envelope:
        raise ScepError("the request has no pkcsPKIEnvelope")
    try:
        return open_envelope(message.envelope, certificate, key)
    except EnvelopeError as exc:
        raise ScepError(exc.reason, FailInfo.BAD_MESSAGE_CHECK) from None


def issued_certificates(reply: PkiMessage, certificate: x509.Certificate, key: rsa.RSAPrivateKey
                        ) -> tuple[x509.Certificate, ...]:
    """The certificates of a CertRep SUCCESS, opened with the requester's key (the issued one first)."""
    if reply.message_type is not MessageType.CERT_REP or reply.pki_status is not PkiStatus.SUCCESS:
        raise ScepError("not a CertRep SUCCESS")
    try:
        degenerate = open_envelope(reply.envelope, certificate, key).content
        return tuple(pkcs7.load_der_pkcs7_certificates(degenerate))
    except (EnvelopeError, ValueError) as exc:
        raise ScepError(f"the CertRep envelope: {getattr(exc, 'reason', exc)}", FailInfo.BAD_MESSAGE_CHECK) from None


__all__ = [
    "ContentCipher", "FailInfo", "MessageType", "PkiMessage", "PkiStatus", "ScepError", "build_pki_message",
    "cert_poll", "cert_rep_failure", "cert_rep_pending", "cert_rep_success", "issued_certificates", "new_nonce",
    "open_request", "pkcs_req", "read_pki_message", "read_unverified", "transaction_id",
]
