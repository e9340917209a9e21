"""The verified-request cache: a re-sent signed body is accepted without re-verifying, never past expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mdm_protocol.cms import SignatureError, mdm_signature
from mdm_server.ca import CertificateAuthority
from mdm_server.identity import IdentityVerifier

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def test_cached_pair_is_accepted_and_still_expires():
    authority = CertificateAuthority.create("cache CA", now=NOW)
    certificate, key = authority.issue_device_identity("dev", NOW, validity=timedelta(days=2))
    clock = {"now": NOW}
    verifier = IdentityVerifier([authority.certificate], now=lambda: clock["now"])
    body = b"<plist>idle</plist>"
    header = mdm_signature(body, certificate, key)
    first = verifier.verify(header, body)
    assert verifier.verify(header, body) == first
    assert len(verifier._verified) == 1
    with pytest.raises(SignatureError, match="different body|digest"):
        verifier.verify(header, body + b" ")
    clock["now"] = NOW + timedelta(days=3)
    with pytest.raises(SignatureError, match="not valid"):
        verifier.verify(header, body)
