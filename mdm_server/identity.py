"""Device identity on every request: verify `Mdm-Signature` over the exact body and the signer's chain.

Chain results are cached per certificate (validity is still checked each time); signatures never are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography import x509

from mdm_protocol.cms import SignatureError, verify_chain, verify_mdm_signature

from .enrollment import identity_user
from .service import DeviceIdentity

MAX_CACHED_CHAINS = 200_000


class IdentityVerifier:
    """Turns a request's `Mdm-Signature` header and body into a `DeviceIdentity`, or a SignatureError."""

    def __init__(self, roots: Sequence[x509.Certificate], *, now: Callable[[], datetime]) -> None:
        self.roots = list(roots)
        self._now = now
        self._chained: set[str] = set()  # fingerprints of certificates already chained to our CA

    def verify(self, header: str | bytes | None, body: bytes) -> DeviceIdentity:
        if header is None:
            raise SignatureError("request has no Mdm-Signature header (the enrollment sets SignMessage)")
        info = verify_mdm_signature(header, body)
        fingerprint = info.signer_fingerprint
        moment = self._now()
        if fingerprint in self._chained:
            _check_validity(info.signer, moment)
        else:
            verify_chain(info.signer, self.roots, intermediates=info.certificates, now=moment)
            if len(self._chained) >= MAX_CACHED_CHAINS:
                self._chained.clear()
            self._chained.add(fingerprint)
        return DeviceIdentity(fingerprint, info.signer.subject.rfc4514_string(), identity_user(info.signer))


def _check_validity(certificate: x509.Certificate, moment: datetime) -> None:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise SignatureError(
            f"identity certificate {certificate.subject.rfc4514_string()} "
            f"is not valid at {moment.isoformat()}"
        )
