"""Device identity on every request: `Mdm-Signature` over the exact body, or the TLS client certificate (mutual
TLS, directly or through a trusted proxy), each chained to our CA.

Chain results are cached per certificate, verified (header, body) pairs per digest; validity is checked
every time. A cached pair is exactly as valid as it was: the protocol has no nonce to replay against. A device
keeps at most two pairs: one it has re-sent (its Idle, when it reuses that signature) and its newest.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography import x509

from mdm_protocol.certificate_chain import verify_chain
from mdm_protocol.cms import SignatureError, verify_mdm_signature

from .enrollment import identity_user
from .enrollment_tokens import identity_token
from .service import DeviceIdentity

MAX_CACHED_CHAINS = 200_000
MAX_CACHED_REQUESTS = 100_000  # about 300 bytes each
MAX_CACHED_CLIENTS = 100_000  # TLS client certificates (DER digest → identity and validity window)


class IdentityVerifier:
    """Turns a request's `Mdm-Signature` header and body into a `DeviceIdentity`, or a SignatureError."""

    def __init__(self, roots: Sequence[x509.Certificate], *, now: Callable[[], datetime],
                 allow_sha1: bool = False) -> None:
        self.roots = list(roots)
        self.allow_sha1 = allow_sha1  # mdmb signs with SHA-1 digests by default (SPEC 8); refused unless asked
        self._now = now
        self._chained: set[str] = set()  # fingerprints of certificates already chained to our CA
        # digest of (header, body) → (identity, validity window): a device re-sending a body it signed before.
        # The window, not the certificate: 100,000 parsed certificates would hold ~160 MB.
        self._verified: OrderedDict[bytes, tuple[DeviceIdentity, datetime, datetime]] = OrderedDict()
        # certificate fingerprint → its newest pair not yet re-sent. Most signed bodies (reports, fresh Idles)
        # never come again; dropping each when its device signs the next bounds the cache by the fleet, not by
        # the hours a server has run (a soak grew ~2 MB a minute until the 100,000 cap).
        self._unproven: dict[str, bytes] = {}
        self._clients: OrderedDict[bytes, tuple[DeviceIdentity, datetime, datetime]] = OrderedDict()

    def identify(self, header: str | bytes | None, body: bytes, client_certificate: bytes | None) -> DeviceIdentity:
        """The identity a request proves: its `Mdm-Signature`, else its TLS client certificate (DER). Both
        present must be the same identity: a device does not sign with one and connect with another."""
        if client_certificate is None:
            return self.verify(header, body)
        presented = self.verify_certificate(client_certificate)
        if header is None:
            return presented
        signed = self.verify(header, body)
        if signed.cert_sha256 != presented.cert_sha256:
            raise SignatureError(f"the TLS client certificate ({presented.subject}) is not the Mdm-Signature's "
                                 f"signer ({signed.subject})")
        return signed

    def verify_certificate(self, der: bytes) -> DeviceIdentity:
        """The identity in a TLS client certificate (DER), chained to our CA and valid now."""
        digest = hashlib.sha256(der).digest()
        cached = self._clients.get(digest)
        if cached is None:
            try:
                certificate = x509.load_der_x509_certificate(der)
            except ValueError as exc:
                raise SignatureError(f"unreadable client certificate: {exc}") from None
            self._chain_once(digest.hex(), certificate, ())
            identity = DeviceIdentity(digest.hex(), certificate.subject.rfc4514_string(), identity_user(certificate),
                                      identity_token(certificate))
            cached = (identity, certificate.not_valid_before_utc, certificate.not_valid_after_utc)
            self._clients[digest] = cached
            if len(self._clients) > MAX_CACHED_CLIENTS:
                self._clients.popitem(last=False)
        identity, not_before, not_after = cached
        _check_window(identity.subject, not_before, not_after, self._now())
        return identity

    def verify(self, header: str | bytes | None, body: bytes) -> DeviceIdentity:
        if header is None:
            raise SignatureError("request has no Mdm-Signature header and no TLS client certificate")
        raw = header.encode("latin-1") if isinstance(header, str) else header
        digest = hashlib.sha256(len(raw).to_bytes(4, "big") + raw + body).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            identity, not_before, not_after = cached
            _check_window(identity.subject, not_before, not_after, self._now())
            self._verified.move_to_end(digest)
            if self._unproven.get(identity.cert_sha256) == digest:
                del self._unproven[identity.cert_sha256]  # re-sent: it is the one worth keeping
            return identity
        identity, signer = self._verify(raw, body)
        older = self._unproven.get(identity.cert_sha256)
        if older is not None:
            self._verified.pop(older, None)
        self._unproven[identity.cert_sha256] = digest
        self._verified[digest] = (identity, signer.not_valid_before_utc, signer.not_valid_after_utc)
        if len(self._verified) > MAX_CACHED_REQUESTS:
            self._verified.popitem(last=False)
        if len(self._unproven) > MAX_CACHED_REQUESTS:
            self._unproven.clear()
        return identity

    def _verify(self, header: bytes, body: bytes) -> tuple[DeviceIdentity, x509.Certificate]:
        info = verify_mdm_signature(header, body, allow_sha1=self.allow_sha1)
        fingerprint = info.signer_fingerprint
        self._chain_once(fingerprint, info.signer, info.certificates)
        subject = info.signer.subject.rfc4514_string()
        identity = DeviceIdentity(fingerprint, subject, identity_user(info.signer), identity_token(info.signer))
        return identity, info.signer

    def _chain_once(self, fingerprint: str, certificate: x509.Certificate,
                    intermediates: Sequence[x509.Certificate]) -> None:
        """Chain `certificate` to our CA once; later only its validity is checked. One cache for the TLS client
        certificate and the Mdm-Signature signer: a device presenting both is chained once, not twice."""
        moment = self._now()
        if fingerprint in self._chained:
            _check_validity(certificate, moment)
            return
        verify_chain(certificate, self.roots, intermediates=intermediates, now=moment)
        if len(self._chained) >= MAX_CACHED_CHAINS:
            self._chained.clear()
        self._chained.add(fingerprint)


def _check_validity(certificate: x509.Certificate, moment: datetime) -> None:
    _check_window(certificate.subject.rfc4514_string(), certificate.not_valid_before_utc,
                  certificate.not_valid_after_utc, moment)


def _check_window(subject: str, not_before: datetime, not_after: datetime, moment: datetime) -> None:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not not_before <= moment <= not_after:
        raise SignatureError(f"identity certificate {subject} is not valid at {moment.isoformat()}")
