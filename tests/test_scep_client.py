"""The device's SCEP client against a CA built here from the codec: a single RSA CA certificate (no RA),
PENDING answered by CertPoll after RetryDelay, Retries honoured, and iOS's error for each kind of bad answer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.internet import defer

from device_sim.clock import HeapClock
from device_sim.scep_agent import HttpAnswer, RSAKeyPool, ScepAgent
from device_sim.scep_client import ScepFailed, ScepIssued, ScepSpec
from mdm_protocol.scep import (
    MessageType,
    cert_rep_pending,
    cert_rep_success,
    open_request,
    read_pki_message,
)
from mdm_protocol.scep_operations import encode_ca_certificates, encode_caps, read_csr
from mdm_server.ca import CertificateAuthority

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC).timestamp()
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CA = CertificateAuthority.create("client test CA", key_type="rsa", now=datetime.fromtimestamp(START, UTC))


class PendingCA:
    """Answers `pending` PENDINGs before issuing; records each PKIOperation's message type and time."""

    def __init__(self, clock, pending: int) -> None:
        self.clock, self.pending = clock, pending
        self.seen: list[tuple[MessageType, float]] = []

    def request(self, step):
        if "GetCACert" in step.url:
            return defer.succeed(HttpAnswer(200, *encode_ca_certificates([CA.certificate])))
        if "GetCACaps" in step.url:
            return defer.succeed(HttpAnswer(200, "text/plain", encode_caps()))
        message = read_pki_message(step.body)
        self.seen.append((message.message_type, self.clock.seconds()))
        if self.pending:
            self.pending -= 1
            return defer.succeed(HttpAnswer(200, "application/x-pki-message",
                                            cert_rep_pending(message, CA.certificate, CA.private_key)))
        opened = open_request(message, CA.certificate, CA.private_key)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "polled")])
        issued = CA.issue_for_key(subject, message.signer.public_key(), datetime.fromtimestamp(START, UTC))
        if message.message_type is MessageType.PKCS_REQ:
            assert read_csr(opened.content)[1] == "pass"
        reply = cert_rep_success([issued], message, CA.certificate, CA.private_key, cipher=opened.cipher)
        return defer.succeed(HttpAnswer(200, "application/x-pki-message", reply))


def _spec(**content) -> ScepSpec:
    payload = {"PayloadUUID": "SCEP-UUID", "PayloadIdentifier": "t.scep", "PayloadContent": {
        "URL": "https://ca.example/cgi-bin/pkiclient.exe", "Challenge": "pass", "Keysize": 2048,
        "Subject": [[["CN", "polled"]]], "Retries": 2, "RetryDelay": 30, **content}}
    spec = ScepSpec.from_payload(payload)
    assert isinstance(spec, ScepSpec)
    return spec


def _enroll(pending: int, **content):
    clock = HeapClock(START)
    ca = PendingCA(clock, pending)
    outcome = ScepAgent(ca, clock, RSAKeyPool([KEY])).enroll(_spec(**content))
    clock.advance(1000)
    return outcome.result, ca


def test_pending_is_polled_with_cert_poll_after_retry_delay():
    outcome, ca = _enroll(pending=2)
    assert isinstance(outcome, ScepIssued) and outcome.certificate.public_key() == KEY.public_key()
    assert outcome.chain == (CA.certificate,)
    assert ca.seen == [(MessageType.PKCS_REQ, START), (MessageType.CERT_POLL, START + 30),
                       (MessageType.CERT_POLL, START + 60)]


def test_retries_run_out_with_22013():
    outcome, ca = _enroll(pending=5)
    assert isinstance(outcome, ScepFailed) and outcome.cause.code == 22013
    assert "still PENDING after 2 polls" in outcome.reason and len(ca.seen) == 3


def test_a_matching_sha1_fingerprint_of_a_lone_ca_certificate_is_accepted():
    from cryptography.hazmat.primitives import hashes

    outcome, _ = _enroll(pending=0, CAFingerprint=CA.certificate.fingerprint(hashes.SHA1()))
    assert isinstance(outcome, ScepIssued)
    outcome, _ = _enroll(pending=0, CAFingerprint=b"\x00" * 20)
    assert isinstance(outcome, ScepFailed) and outcome.cause.code == 22002


@pytest.mark.parametrize(("answer", "code"), [
    (HttpAnswer(200, "text/html", b"<html>"), 22004),
    (HttpAnswer(200, "application/x-x509-ca-cert", b"not DER"), 22002),
    (HttpAnswer(200, "application/x-x509-ca-ra-cert", b"not PKCS#7"), 22003),
])
def test_bad_get_ca_cert_answers(answer, code):
    clock = HeapClock(START)

    class Broken:
        def request(self, step):
            return defer.succeed(answer)

    outcome = ScepAgent(Broken(), clock, RSAKeyPool([KEY])).enroll(_spec()).result
    assert isinstance(outcome, ScepFailed) and outcome.cause.code == code


def test_a_refused_connection_is_a_network_error():
    class Down:
        def request(self, step):
            return defer.fail(ConnectionRefusedError("connection refused"))

    outcome = ScepAgent(Down(), HeapClock(START), RSAKeyPool([KEY])).enroll(_spec()).result
    assert isinstance(outcome, ScepFailed) and outcome.cause.code == 22005
    assert "GetCACert: connection refused" in outcome.reason
