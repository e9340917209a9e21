"""SCEP's plain operations (RFC 8894 sections 3.5, 4.2, 4.3) and the CSR: GetCACaps text, GetCACert bodies,
the PKCS#10 request with its challengePassword, and the requester's throwaway self-signed certificate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID, NameOID

from .scep import ScepError

CA_CERT_TYPE = "application/x-x509-ca-cert"
CA_RA_CERT_TYPE = "application/x-x509-ca-ra-cert"
PKI_MESSAGE_TYPE = "application/x-pki-message"
CAPS_TYPE = "text/plain"
# What iOS looks for (POSTPKIOperation, AES, DES3, SHA-512, SHA-256, SHA-1) plus RFC 8894's SCEPStandard.
DEFAULT_CAPS = ("POSTPKIOperation", "SHA-256", "SHA-512", "AES", "SCEPStandard", "Renewal")
REQUESTER_VALIDITY = timedelta(days=1)

# Short names in Apple's SCEP Subject arrays ([["CN", "name"]], or an OID in dotted form).
_SUBJECT_NAMES = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
                  "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
                  "CN": NameOID.COMMON_NAME, "UID": NameOID.USER_ID, "E": NameOID.EMAIL_ADDRESS,
                  "EMAIL": NameOID.EMAIL_ADDRESS, "DC": NameOID.DOMAIN_COMPONENT}


def encode_caps(caps: Iterable[str] = DEFAULT_CAPS) -> bytes:
    return "\n".join(caps).encode("ascii") + b"\n"


def parse_caps(body: bytes) -> frozenset[str]:
    """The capabilities a GetCACaps answer lists; RFC 8894 says they are case-insensitive, iOS compares them
    as written, so both the exact word and its upper case are kept."""
    words = [line.strip() for line in body.decode("ascii", "replace").splitlines() if line.strip()]
    return frozenset(words) | frozenset(word.upper() for word in words)


def encode_ca_certificates(certificates: Sequence[x509.Certificate]) -> tuple[str, bytes]:
    """GetCACert's (Content-Type, body): one DER CA certificate, or a degenerate PKCS#7 of the RA and CA."""
    if len(certificates) == 1:
        return CA_CERT_TYPE, certificates[0].public_bytes(serialization.Encoding.DER)
    return CA_RA_CERT_TYPE, pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)


def parse_ca_certificates(content_type: str | None, body: bytes) -> tuple[x509.Certificate, ...]:
    """The certificates of a GetCACert answer; ValueError when the body is not what its type says."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == CA_CERT_TYPE:
        return (x509.load_der_x509_certificate(body),)
    if kind == CA_RA_CERT_TYPE:
        certificates = tuple(pkcs7.load_der_pkcs7_certificates(body))
        if not certificates:
            raise ValueError("the degenerate PKCS#7 holds no certificate")
        return certificates
    raise ValueError(f"unsupported GetCACert Content-Type {content_type!r}")


def certificate_fingerprint_matches(certificate: x509.Certificate, fingerprint: bytes) -> bool:
    """CAFingerprint is a hash of the CA certificate's DER: MD5 (16 bytes), SHA-1 (20) or SHA-256 (32)."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    algorithm = {16: "md5", 20: "sha1", 32: "sha256"}.get(len(fingerprint))
    return algorithm is not None and hashlib.new(algorithm, der).digest() == fingerprint


def subject_from_payload(subject: object) -> x509.Name:
    """Apple's `Subject` ([[["O", "Example"]], [["CN", "x"]]]) as an x509 Name; ValueError when malformed."""
    if subject is None:
        return x509.Name([])
    if not isinstance(subject, list):
        raise ValueError("Subject must be an array of RDNs")
    rdns = []
    for rdn in subject:
        if not isinstance(rdn, list) or not rdn:
            raise ValueError("each Subject entry must be a non-empty array of [type, value] pairs")
        attributes = []
        for pair in rdn:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise ValueError("a Subject pair must be [type, value] strings")
            name = pair[0].strip()
            kind = _SUBJECT_NAMES.get(name.upper()) or x509.ObjectIdentifier(name)
            attributes.append(x509.NameAttribute(kind, pair[1]))
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)


def build_csr(key: rsa.RSAPrivateKey, subject: x509.Name, challenge: str | None, *,
              san: x509.SubjectAlternativeName | None = None, digest: str = "sha256"
              ) -> x509.CertificateSigningRequest:
    """The PKCS#10 request: `subject`, the challengePassword attribute (a PrintableString when it can be)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if challenge is not None:
        printable = all(c.isalnum() or c in " '()+,-./:=?" for c in challenge)
        tag = _ASN1Type.PrintableString if printable else _ASN1Type.UTF8String
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode("utf-8"), _tag=tag)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, _hash(digest))


def read_csr(der: bytes) -> tuple[x509.CertificateSigningRequest, str | None]:
    """A CSR whose self-signature verifies, and its challengePassword; ScepError otherwise."""
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise ScepError(f"the envelope does not hold a PKCS#10 request: {exc}") from None
    if not csr.is_signature_valid:
        raise ScepError("the CSR's signature does not verify")
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    except x509.AttributeNotFound:
        return csr, None
    try:
        return csr, value.decode("utf-8")
    except UnicodeDecodeError:
        raise ScepError("the challengePassword is not text") from None


def requester_certificate(key: rsa.RSAPrivateKey, subject: x509.Name, now: datetime, *,
                          digest: str = "sha256") -> x509.Certificate:
    """The self-signed certificate a requester signs its pkiMessages with (RFC 8894 section 2.3)."""
    name = subject if len(subject) else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SCEP requester")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + REQUESTER_VALIDITY).sign(key, _hash(digest)))


def _hash(digest: str) -> hashes.SHA256 | hashes.SHA512:
    """X.509 signatures: SHA-256 or SHA-512 (cryptography no longer signs certificates with SHA-1)."""
    if digest == "sha256":
        return hashes.SHA256()
    if digest == "sha512":
        return hashes.SHA512()
    raise ScepError(f"unsupported digest {digest!r} for a CSR or certificate")
