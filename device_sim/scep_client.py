"""A device's SCEP enrollment for one `com.apple.security.scep` payload, sans-IO, in iOS's order and errors.

GetCACert (CAFingerprint check, RA or CA as recipient) → GetCACaps (AES else 3DES; SHA-512, SHA-256, SHA-1)
→ PKCSReq by POST or GET → CertRep; PENDING waits RetryDelay and polls, Retries times. The runner performs
each `HttpStep`/`WaitStep` and feeds the answer back; the exchange ends in `ScepIssued` or `ScepFailed`.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from mdm_protocol.errors import SCEP, KnownError
from mdm_protocol.scep import (
    MessageType,
    PkiMessage,
    PkiStatus,
    ScepError,
    cert_poll,
    issued_certificates,
    new_nonce,
    pkcs_req,
    read_pki_message,
    transaction_id,
)
from mdm_protocol.scep_envelope import ContentCipher
from mdm_protocol.scep_operations import (
    PKI_MESSAGE_TYPE,
    build_csr,
    certificate_fingerprint_matches,
    parse_ca_certificates,
    parse_caps,
    requester_certificate,
    subject_from_payload,
)

DEFAULT_KEY_SIZE = 1024  # Apple's default for Keysize; our server's profiles ask 2048
KEY_SIZES = (1024, 2048, 4096)


class _State(enum.Enum):
    CA_CERT = "GetCACert"  # asked for the CA (and RA) certificates
    CAPS = "GetCACaps"  # asked for the capabilities
    PKI = "PKIOperation"  # sent the PKCSReq or a CertPoll
    WAITING = "waiting"  # PENDING: polling again after RetryDelay
    DONE = "done"


@dataclass(frozen=True, slots=True)
class ScepSpec:
    """What the payload asks for; `from_payload` refuses what iOS refuses before any network."""

    payload_uuid: str
    name: str
    url: str
    ca_name: str | None  # `Name`: sent as GetCACert's and GetCACaps's message= (a CA instance)
    challenge: str | None
    key_size: int
    subject: x509.Name
    ca_fingerprint: bytes | None
    retries: int
    retry_delay: float

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ScepSpec | ScepFailed:
        content = payload.get("PayloadContent") or {}
        uuid = payload["PayloadUUID"]
        name = payload.get("PayloadDisplayName") or payload.get("PayloadIdentifier") or "SCEP"
        usage = content.get("Key Usage", 0)
        if not isinstance(usage, int) or usage & ~5:
            return ScepFailed(uuid, SCEP[22000], f"Key Usage {usage!r} is not a combination of 1 and 4")
        size = content.get("Keysize", DEFAULT_KEY_SIZE)
        if size not in KEY_SIZES or content.get("Key Type", "RSA") != "RSA":
            return ScepFailed(uuid, SCEP[22001], f"cannot make a {content.get('Key Type', 'RSA')} key of {size}")
        try:
            subject = subject_from_payload(content.get("Subject"))
        except ValueError as exc:
            return ScepFailed(uuid, SCEP[22011], f"the Subject cannot be a CSR subject: {exc}")
        fingerprint = content.get("CAFingerprint")
        return cls(uuid, name, content["URL"], content.get("Name"), content.get("Challenge"), size, subject,
                   bytes(fingerprint) if fingerprint else None, int(content.get("Retries", 3)),
                   float(content.get("RetryDelay", 10)))


@dataclass(frozen=True, slots=True)
class HttpStep:
    """Perform this request; answer with `answered(status, content_type, body)` or `failed(reason)`."""

    method: str
    url: str
    body: bytes | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class WaitStep:
    """Wait `seconds`, then call `waited()`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ScepIssued:
    payload_uuid: str
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class ScepFailed:
    payload_uuid: str
    cause: KnownError
    reason: str  # for logs and the fleet's failure list; the device reports `cause`


Step = HttpStep | WaitStep | ScepIssued | ScepFailed


class ScepExchange:
    """One enrollment; `key` is the RSA key of the payload's Keysize (made, or taken from a pool, by the caller)."""

    def __init__(self, spec: ScepSpec, key: rsa.RSAPrivateKey, now: float) -> None:
        self.spec, self.key = spec, key
        self._state = _State.CA_CERT
        self._now = datetime.fromtimestamp(now, UTC)
        self._ca_certificates: tuple[x509.Certificate, ...] = ()
        self._recipient: x509.Certificate | None = None
        self._signer: x509.Certificate | None = None
        self._cipher, self._digest, self._post = ContentCipher.DES3, "sha1", False
        self._nonce = b""
        self._attempts_left = spec.retries + 1

    def start(self) -> Step:
        return HttpStep("GET", self._operation_url("GetCACert", self.spec.ca_name))

    def failed(self, reason: str) -> ScepFailed:
        """The request could not be made (refused, reset, timed out): iOS gives up with 22005."""
        return self._fail(SCEP[22005], f"{self._state.value}: {reason}")

    def answered(self, status: int, content_type: str | None, body: bytes) -> Step:
        if self._state is _State.CA_CERT:
            return self._ca_answered(content_type, body)
        if self._state is _State.CAPS:
            return self._caps_answered(status, body)
        if self._state is _State.PKI:
            return self._reply_answered(status, body)
        return self._fail(SCEP[22013], f"an answer in state {self._state.value}")

    def waited(self) -> Step:
        self._state = _State.PKI
        assert self._signer is not None and self._recipient is not None
        self._nonce = new_nonce()
        issuer = self._ca_certificates[-1].subject if self._ca_certificates else self._recipient.subject
        message = cert_poll(issuer, self.spec.subject, self._signer, self.key, self._recipient,
                            sender_nonce=self._nonce, cipher=self._cipher, digest=self._digest)
        return self._pki_request(message)

    # --- steps -------------------------------------------------------------------------------------------

    def _ca_answered(self, content_type: str | None, body: bytes) -> Step:
        kind = (content_type or "").split(";")[0].strip().lower()
        ra_mode = kind == "application/x-x509-ca-ra-cert"
        if kind not in ("application/x-x509-ca-cert", "application/x-x509-ca-ra-cert"):
            return self._fail(SCEP[22004], f"GetCACert answered {content_type!r}")
        invalid = SCEP[22003] if ra_mode else SCEP[22002]
        try:
            certificates = parse_ca_certificates(kind, body)
        except ValueError as exc:
            return self._fail(invalid, f"GetCACert: {exc}")
        fingerprint = self.spec.ca_fingerprint
        if fingerprint is not None and not any(certificate_fingerprint_matches(c, fingerprint)
                                               for c in certificates):
            return self._fail(invalid, "no certificate of GetCACert matches the CAFingerprint")
        recipient = self._pick_recipient(certificates)
        if recipient is None:
            return self._fail(SCEP[22004], "GetCACert holds no RSA certificate to encrypt the request to")
        self._ca_certificates, self._recipient = certificates, recipient
        self._state = _State.CAPS
        return HttpStep("GET", self._operation_url("GetCACaps", self.spec.ca_name))

    @staticmethod
    def _pick_recipient(certificates: tuple[x509.Certificate, ...]) -> x509.Certificate | None:
        """The RA (an RSA certificate that is not a CA) when there is one, else the RSA CA."""
        rsa_certificates = [c for c in certificates if isinstance(c.public_key(), rsa.RSAPublicKey)]

        def is_ca(certificate: x509.Certificate) -> bool:
            try:
                return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                return certificate.issuer == certificate.subject

        leaves = [c for c in rsa_certificates if not is_ca(c)]
        candidates = leaves or rsa_certificates
        return candidates[0] if candidates else None

    def _caps_answered(self, status: int, body: bytes) -> Step:
        caps = parse_caps(body) if 200 <= status < 300 else frozenset()  # none: "assume SHA-1 only", as iOS
        self._post = "POSTPKIOPERATION" in caps
        self._cipher = ContentCipher.AES128 if "AES" in caps else ContentCipher.DES3
        if "SHA-512" in caps:
            self._digest = "sha512"
        elif "SHA-256" in caps:
            self._digest = "sha256"
        elif caps and "SHA-1" not in caps:
            return self._fail(SCEP[22006], "the CA supports none of SHA-512, SHA-256 and SHA-1")
        try:
            # The CSR and the throwaway certificate stay SHA-256 (cryptography signs no SHA-1 X.509 any more);
            # the pkiMessage's own digest is the one chosen above.
            csr = build_csr(self.key, self.spec.subject, self.spec.challenge)
            self._signer = requester_certificate(self.key, self.spec.subject, self._now)
        except ValueError as exc:
            return self._fail(SCEP[22011], f"cannot build the CSR: {exc}")
        self._nonce = new_nonce()
        assert self._recipient is not None
        message = pkcs_req(csr, self._signer, self.key, self._recipient, sender_nonce=self._nonce,
                           cipher=self._cipher, digest=self._digest)
        self._state = _State.PKI
        return self._pki_request(message)

    def _pki_request(self, message: bytes) -> HttpStep:
        self._attempts_left -= 1
        if self._post:
            return HttpStep("POST", self._operation_url("PKIOperation"), message, PKI_MESSAGE_TYPE)
        return HttpStep("GET", self._operation_url("PKIOperation", base64.b64encode(message).decode("ascii")))

    def _reply_answered(self, status: int, body: bytes) -> Step:
        try:
            reply = self._verified_reply(body)
        except ScepError as exc:
            return self._fail(SCEP[22013], f"PKIOperation (HTTP {status}): {exc.reason}")
        if reply.pki_status is PkiStatus.PENDING:
            if self._attempts_left <= 0:
                return self._fail(SCEP[22013], f"still PENDING after {self.spec.retries} polls")
            self._state = _State.WAITING
            return WaitStep(self.spec.retry_delay)
        if reply.pki_status is PkiStatus.FAILURE:
            info = reply.fail_info.name if reply.fail_info else "no failInfo"
            text = f": {reply.fail_info_text}" if reply.fail_info_text else ""
            return self._fail(SCEP[22013], f"CertRep FAILURE ({info}){text}")
        assert self._signer is not None
        try:
            certificates = issued_certificates(reply, self._signer, self.key)
        except ScepError as exc:
            return self._fail(SCEP[22013], exc.reason)
        mine = [c for c in certificates if c.public_key() == self.key.public_key()]
        if not certificates:
            return self._fail(SCEP[22007], "the CertRep holds no certificate")
        if not mine:
            return self._fail(SCEP[22008], "no certificate of the CertRep is for our key")
        self._state = _State.DONE
        chain = tuple(c for c in (*certificates, *self._ca_certificates) if c is not mine[0])
        return ScepIssued(self.spec.payload_uuid, mine[0], self.key, chain)

    def _verified_reply(self, body: bytes) -> PkiMessage:
        # The device accepts what it offered: SHA-1 when the CA advertised nothing better.
        reply = read_pki_message(body, allow_sha1=True)
        if reply.message_type is not MessageType.CERT_REP:
            raise ScepError(f"a {reply.message_type.name}, not a CertRep")
        if reply.signer not in self._ca_certificates:
            raise ScepError("the CertRep is not signed by the CA or RA of GetCACert")
        if reply.transaction_id != transaction_id(self.key.public_key()):
            raise ScepError("the CertRep's transactionID is not ours")
        if reply.recipient_nonce != self._nonce:
            raise ScepError("the CertRep's recipientNonce is not our senderNonce")
        return reply

    def _operation_url(self, operation: str, message: str | None = None) -> str:
        separator = "&" if "?" in self.spec.url else "?"
        url = f"{self.spec.url}{separator}operation={operation}"
        return url if message is None else f"{url}&message={quote(message, safe='')}"

    def _fail(self, cause: KnownError, reason: str) -> ScepFailed:
        self._state = _State.DONE
        return ScepFailed(self.spec.payload_uuid, cause, f"SCEP {self.spec.name}: {reason}")
