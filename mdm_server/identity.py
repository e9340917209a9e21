"""Device identity on every request: verify `Mdm-Signature` over the exact body and the signer's chain.

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

    def verify(self, header: str | bytes | None, body: bytes) -> DeviceIdentity:
        if header is None:
            raise SignatureError("request has no Mdm-Signature header (the enrollment sets SignMessage)")
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
        moment = self._now()
        if fingerprint in self._chained:
            _check_validity(info.signer, moment)
        else:
            verify_chain(info.signer, self.roots, intermediates=info.certificates, now=moment)
            if len(self._chained) >= MAX_CACHED_CHAINS:
                self._chained.clear()
            self._chained.add(fingerprint)
        subject = info.signer.subject.rfc4514_string()
        identity = DeviceIdentity(fingerprint, subject, identity_user(info.signer), identity_token(info.signer))
        return identity, info.signer


def _check_validity(certificate: x509.Certificate, moment: datetime) -> None:
    _check_window(certificate.subject.rfc4514_string(), certificate.not_valid_before_utc,
                  certificate.not_valid_after_utc, moment)


def _check_window(subject: str, not_before: datetime, not_after: datetime, moment: datetime) -> None:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not not_before <= moment <= not_after:
        raise SignatureError(f"identity certificate {subject} is not valid at {moment.isoformat()}")
