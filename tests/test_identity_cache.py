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


def test_a_device_keeps_its_re_sent_pair_and_only_its_newest_other_one():
    """Reports are signed once and never re-sent: each drops the device's previous one, while the Idle the device
    re-sends stays cached, so the cache is bounded by the fleet and not by how long the server runs."""
    authority = CertificateAuthority.create("cache CA", now=NOW)
    certificate, key = authority.issue_device_identity("dev", NOW, validity=timedelta(days=2))
    verifier = IdentityVerifier([authority.certificate], now=lambda: NOW)
    idle = b"<plist>idle</plist>"
    idle_header = mdm_signature(idle, certificate, key)
    verifier.verify(idle_header, idle)
    verifier.verify(idle_header, idle)  # re-sent: proven worth keeping
    for n in range(5):
        report = b"<plist>report %d</plist>" % n
        verifier.verify(mdm_signature(report, certificate, key), report)
    assert len(verifier._verified) == 2  # the Idle and the newest report, not all six
    calls = []
    real = verifier._verify
    verifier._verify = lambda header, body: calls.append(body) or real(header, body)
    verifier.verify(idle_header, idle)
    assert calls == []  # still answered from the cache


def test_a_device_presenting_its_certificate_and_signing_is_chained_once(monkeypatch):
    """Mutual TLS beside Mdm-Signature (SignMessage true, a client certificate asked for): one chain check for
    the one certificate, and a certificate of another CA is still refused both ways."""
    from cryptography.hazmat.primitives import serialization

    import mdm_server.identity as identity

    authority = CertificateAuthority.create("cache CA", now=NOW)
    certificate, key = authority.issue_device_identity("dev", NOW, validity=timedelta(days=2))
    verifier = IdentityVerifier([authority.certificate], now=lambda: NOW)
    chained = []
    real = identity.verify_chain
    monkeypatch.setattr(identity, "verify_chain", lambda cert, *a, **k: chained.append(cert) or real(cert, *a, **k))
    der = certificate.public_bytes(serialization.Encoding.DER)
    body = b"<plist>authenticate</plist>"
    both = verifier.identify(mdm_signature(body, certificate, key), body, der)
    assert verifier.identify(mdm_signature(b"x", certificate, key), b"x", None) == both
    assert chained == [certificate]
    other = CertificateAuthority.create("other CA", now=NOW)
    stranger, stranger_key = other.issue_device_identity("dev", NOW, validity=timedelta(days=2))
    with pytest.raises(SignatureError, match="does not chain"):
        verifier.verify_certificate(stranger.public_bytes(serialization.Encoding.DER))
    with pytest.raises(SignatureError, match="does not chain"):
        verifier.verify(mdm_signature(body, stranger, stranger_key), body)
