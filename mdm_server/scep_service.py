"""The SCEP server's decisions (RFC 8894): capabilities, the RA and CA certificates, PKCSReq → CertRep.

Pure but for the clock passed in: the web resource hands it bodies, it answers bytes. Every refusal is a
CertRep FAILURE with a failInfo and a logged reason, and spends nothing (the challenge is used last).
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mdm_protocol.scep import (
    FailInfo,
    MessageType,
    PkiMessage,
    ScepError,
    cert_rep_failure,
    cert_rep_success,
    open_request,
    read_pki_message,
    read_unverified,
)
from mdm_protocol.scep_envelope import ContentCipher
from mdm_protocol.scep_operations import DEFAULT_CAPS, encode_ca_certificates, encode_caps, read_csr

from .ca import CertificateAuthority, private_key_pem, write_private_file
from .enrollment_tokens import ENROLLMENT_TOKEN_OID
from .scep_challenges import Challenge, ChallengeStore, Redemption

log = logging.getLogger("mdmsim.scep")

RA_CERTIFICATE_FILE, RA_KEY_FILE = "scep-ra.pem", "scep-ra.key"
CHALLENGE_LIFETIME = 3600.0  # seconds a profile's challenge stays good: an enrollment is minutes, not days
CHALLENGE_USES = 1
MIN_RSA_BITS = 1024  # what Apple's Keysize allows; the default profile asks 2048
_REFUSALS = {Redemption.UNKNOWN: FailInfo.BAD_REQUEST, Redemption.EXPIRED: FailInfo.BAD_TIME,
             Redemption.USED_UP: FailInfo.BAD_REQUEST}


class UnreadableRequest(Exception):
    """A PKIOperation body that is not a pkiMessage at all: no CertRep can be addressed, so HTTP 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RegistrationAuthority:
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @classmethod
    def load_or_create(cls, data_dir: Path | str, authority: CertificateAuthority, *, now: datetime
                       ) -> RegistrationAuthority:
        """The RA kept in `data_dir` (scep-ra.pem, scep-ra.key 0600), issued by `authority` on first use."""
        directory = Path(data_dir)
        cert_path, key_path = directory / RA_CERTIFICATE_FILE, directory / RA_KEY_FILE
        if cert_path.exists() and key_path.exists():
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            fits = certificate.issuer == authority.certificate.subject and certificate.not_valid_after_utc > now
            if isinstance(key, rsa.RSAPrivateKey) and key.public_key() == certificate.public_key() and fits:
                return cls(certificate, key)
            log.warning("the SCEP RA in %s does not fit the CA or has expired; issuing a new one", directory)
        certificate, key = authority.issue_registration_authority("mdmsim SCEP RA", now)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(key_path, private_key_pem(key))
        write_private_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
        return cls(certificate, key)


class ScepService:
    """GetCACaps, GetCACert and PKIOperation for one CA and its RA, with challenges from `challenges`."""

    def __init__(self, authority: CertificateAuthority, ra: RegistrationAuthority, challenges: ChallengeStore, *,
                 now: Callable[[], float], allow_sha1: bool = False, challenge_lifetime: float = CHALLENGE_LIFETIME,
                 challenge_uses: int = CHALLENGE_USES, token_refusal: Callable[[str], str | None] | None = None,
                 ) -> None:
        self.authority, self.ra, self.challenges, self.now = authority, ra, challenges, now
        # Why the enrollment token a challenge came through may no longer issue (revoked, expired); None: it may.
        self.token_refusal = token_refusal or (lambda token_id: None)
        self.allow_sha1 = allow_sha1
        self.challenge_lifetime, self.challenge_uses = challenge_lifetime, challenge_uses
        caps = list(DEFAULT_CAPS)
        if allow_sha1:
            caps.insert(1, "SHA-1")
        self._caps = encode_caps(caps)
        self._ca_certificates = encode_ca_certificates([ra.certificate, authority.certificate])
        self.outcomes: Counter[str] = Counter()  # "issued", and each refusal's failInfo name

    def caps(self) -> bytes:
        return self._caps

    def ca_certificates(self) -> tuple[str, bytes]:
        """(Content-Type, body) of GetCACert: the RA and the CA in a degenerate PKCS#7."""
        return self._ca_certificates

    def new_challenge(self, user_id: str | None = None, token_id: str | None = None) -> str:
        """A fresh challenge for one enrollment profile, fetched through enrollment token `token_id` (None: open
        enrollment): the user it binds and the token go into the issued identity."""
        challenge = secrets.token_urlsafe(24)
        self.challenges.add(challenge, expires_at=self.now() + self.challenge_lifetime, uses=self.challenge_uses,
                            user_id=user_id, token_id=token_id)
        return challenge

    def pki_operation(self, body: bytes) -> bytes:
        """The CertRep for a pkiMessage; UnreadableRequest when nobody can be answered."""
        try:
            request = read_pki_message(body, allow_sha1=self.allow_sha1)
        except ScepError as exc:
            unverified = read_unverified(body)
            if unverified is None:
                self.outcomes["unreadable"] += 1
                log.info("SCEP PKIOperation refused (HTTP 400): %s", exc.reason)
                raise UnreadableRequest(exc.reason) from None
            return self._refuse(unverified, exc)
        try:
            certificate, cipher, found = self._issue(request)
        except ScepError as exc:
            return self._refuse(request, exc)
        self.outcomes["issued"] += 1
        # The binding, for the record: which user and which enrollment token this identity speaks for.
        log.info("SCEP issued %s (serial %x, SHA-256 %s) for user %s through enrollment token %s, transaction %s",
                 certificate.subject.rfc4514_string(), certificate.serial_number,
                 certificate.fingerprint(hashes.SHA256()).hex(), found.user_id, found.token_id,
                 request.transaction_id)
        # The reply uses the request's cipher and digest: what the requester showed it can read.
        return cert_rep_success([certificate], request, self.ra.certificate, self.ra.private_key,
                                cipher=cipher, digest=request.digest_algorithm)

    def _issue(self, request: PkiMessage) -> tuple[x509.Certificate, ContentCipher, Challenge]:
        if request.message_type is not MessageType.PKCS_REQ:
            kind = request.message_type.name
            raise ScepError(f"{kind} is not served here (no request is ever pending)", FailInfo.BAD_REQUEST)
        if request.sender_nonce is None:
            raise ScepError("the PKCSReq has no senderNonce", FailInfo.BAD_REQUEST)
        opened = open_request(request, self.ra.certificate, self.ra.private_key)
        csr, challenge = read_csr(opened.content)
        key = csr.public_key()
        if key != request.signer.public_key():
            raise ScepError("the CSR's key is not the key that signed the request", FailInfo.BAD_MESSAGE_CHECK)
        if not isinstance(key, rsa.RSAPublicKey):
            # The CertRep is enveloped to the requester's key: SCEP (and iOS) needs RSA there.
            raise ScepError(f"a {type(key).__name__} cannot receive a SCEP reply; use RSA", FailInfo.BAD_ALG)
        if key.key_size < MIN_RSA_BITS:
            raise ScepError(f"a {key.key_size}-bit RSA key is too small", FailInfo.BAD_REQUEST)
        if challenge is None:
            raise ScepError("the CSR has no challengePassword", FailInfo.BAD_REQUEST)
        now = self.now()
        verdict, found = self.challenges.check(challenge, now)
        if verdict is not Redemption.VALID or found is None:
            raise ScepError(f"challenge {verdict.value}", _REFUSALS[verdict])
        token_refusal = None if found.token_id is None else self.token_refusal(found.token_id)
        if token_refusal is not None:
            raise ScepError(f"the enrollment token this challenge was issued through is {token_refusal}",
                            FailInfo.BAD_REQUEST)
        subject = _identity_subject(csr.subject, found.user_id, found.token_id)
        certificate = self.authority.issue_for_key(subject, key, datetime.fromtimestamp(now, UTC))
        verdict, _ = self.challenges.redeem(challenge, now)  # last: any refusal above left the challenge whole
        if verdict is not Redemption.VALID:
            raise ScepError(f"challenge {verdict.value}", _REFUSALS[verdict])
        return certificate, opened.cipher, found

    def _refuse(self, request: PkiMessage, error: ScepError) -> bytes:
        self.outcomes[error.fail_info.name] += 1
        log.info("SCEP request %s refused (%s): %s", request.transaction_id, error.fail_info.name, error.reason)
        digest = request.digest_algorithm if request.digest_algorithm in ("sha256", "sha512") else "sha256"
        return cert_rep_failure(request, self.ra.certificate, self.ra.private_key, error.fail_info, error.reason,
                                digest=digest)


def _identity_subject(requested: x509.Name, user_id: str | None, token_id: str | None) -> x509.Name:
    """The CSR's subject without any UID or token it claims; the user and the token come from the challenge,
    never from the device (as a PKCS#12 enrollment identity carries them: enrollment.build_enrollment)."""
    # Neither the user nor the enrollment token (which judges a re-enrollment) may be the device's own claim.
    kept = [attribute for attribute in requested if attribute.oid not in (NameOID.USER_ID, ENROLLMENT_TOKEN_OID)]
    if not any(attribute.oid == NameOID.COMMON_NAME for attribute in kept):
        kept.append(x509.NameAttribute(NameOID.COMMON_NAME, "mdmsim SCEP identity"))
    if user_id is not None:
        kept.append(x509.NameAttribute(NameOID.USER_ID, user_id))
    if token_id is not None:
        kept.append(x509.NameAttribute(ENROLLMENT_TOKEN_OID, token_id))
    return x509.Name(kept)
