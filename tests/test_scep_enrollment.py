"""Our SCEP server and our device's SCEP client against each other, through the real twisted.web tree in memory:
enrollment to MDM, every refusal with its reason and failInfo (and no challenge spent), iOS's ErrorChains.
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from server_kit import START, make_server

from device_sim import effects as fx
from device_sim.clock import HeapClock
from device_sim.facts import DeviceKind, make_facts
from device_sim.machine import DeviceMachine, Phase
from device_sim.memory_http import MemoryHTTP
from device_sim.runner import DeviceRunner, InProcessPush
from device_sim.scep_agent import MemoryScepHttp, RSAKeyPool, ScepAgent
from device_sim.scep_client import HttpStep, ScepExchange, ScepFailed, ScepIssued, ScepSpec
from device_sim.transport import MemoryTransport
from mdm_protocol.cms import signed_content
from mdm_protocol.payloads import scep_payload
from mdm_protocol.plist import decode_plist
from mdm_protocol.scep import FailInfo, PkiStatus, read_pki_message
from mdm_server.scep_challenges import Redemption
from mdm_world.world import presented_chain

KEYS = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(6)]


@pytest.fixture
def server(tmp_path):
    return make_server(tmp_path, enrollment_identity="scep")


def _profile(server, user: str | None = None) -> bytes:
    path = "/mdm/enroll?token=" + server.state.enroll_token + (f"&user={user}" if user else "")
    response = MemoryHTTP(server.site).request("GET", path)
    assert response.status == 200, response.body
    return response.body


def _scep_content(profile: bytes) -> dict:
    plist = decode_plist(signed_content(profile) or profile)  # the server signs its profiles (SPEC 8)
    return next(p for p in plist["PayloadContent"] if p["PayloadType"] == "com.apple.security.scep")


def _spec(server, **changes) -> ScepSpec:
    payload = dict(_scep_content(_profile(server)))
    payload["PayloadContent"] = {**payload["PayloadContent"], **changes}
    spec = ScepSpec.from_payload(payload)
    assert isinstance(spec, ScepSpec)
    return spec


def _run(server, spec: ScepSpec, key=None, answer=None):
    """Drive one exchange against the server's Site; `answer` may rewrite an HTTP answer on its way back."""
    http = MemoryScepHttp(server.site)
    exchange = ScepExchange(spec, key or KEYS[0], server.clock.seconds())
    step = exchange.start()
    while isinstance(step, HttpStep):
        got = http.request(step).result
        status, kind, body = answer(step, got) if answer else (got.status, got.content_type, got.body)
        step = exchange.answered(status, kind, body)
    return step


def test_a_device_enrolls_by_scep_and_checks_in_signed_with_its_new_rsa_identity(server):
    profile = _profile(server, user="alice")
    clock = HeapClock(START)
    machine = DeviceMachine(make_facts(1, 0, "17.5", DeviceKind.IPHONE), seed=1)
    transport = MemoryTransport(server.http, clock, presented_chain(server.tls))
    agent = ScepAgent(MemoryScepHttp(server.site), clock, RSAKeyPool(KEYS[1:2]))
    seen: list[fx.Effect] = []
    runner = DeviceRunner(machine, clock=clock, transport=transport, push=InProcessPush(server.apns), scep=agent)
    original = runner.perform
    runner.perform = lambda effects: (seen.extend(effects), original(effects))[1]
    runner.install_enrollment(profile)
    clock.advance(1)
    assert machine.phase is Phase.ENROLLED, [e for e in seen if isinstance(e, fx.EnrollmentFailed | fx.Log)]
    assert isinstance(seen[0], fx.ScepEnroll) and agent.keys.made == 0
    uuid = _scep_content(profile)["PayloadUUID"]
    identity = machine.profiles.keychain.identity(uuid)
    assert identity.private_key.public_key() == KEYS[1].public_key()
    assert identity.certificate.issuer == server.ca.certificate.subject
    # The user comes from the challenge the server issued for ?user=alice, not from anything the device said.
    assert identity.certificate.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value == "alice"
    assert server.scep.outcomes == {"issued": 1}
    device = server.storage.device_for_certificate(identity.certificate.fingerprint(hashes.SHA256()).hex())
    assert device is not None and device.user_id == "alice"


def test_the_challenge_is_spent_once(server):
    spec = _spec(server)
    assert isinstance(_run(server, spec, KEYS[0]), ScepIssued)
    again = _run(server, spec, KEYS[2])
    assert isinstance(again, ScepFailed) and again.cause.code == 22013
    assert "CertRep FAILURE (BAD_REQUEST): challenge used up" in again.reason
    assert server.scep.outcomes == {"issued": 1, "BAD_REQUEST": 1}


def test_an_unknown_challenge_is_refused_and_nothing_is_spent(server):
    spec = _spec(server, Challenge="not-a-challenge-we-issued")
    failed = _run(server, spec)
    assert isinstance(failed, ScepFailed) and "challenge unknown" in failed.reason


def test_an_expired_challenge_is_bad_time_and_stays_unspent(server):
    spec = _spec(server)
    server.clock.advance(server.scep.challenge_lifetime + 1)
    failed = _run(server, spec)
    assert isinstance(failed, ScepFailed) and "(BAD_TIME): challenge expired" in failed.reason
    assert server.scep.challenges.check(spec.challenge, server.clock.seconds())[0] is Redemption.EXPIRED
    assert server.scep.challenges.check(spec.challenge, START)[1].uses_left == 1


def test_a_tampered_request_is_bad_message_check_and_the_challenge_survives(server):
    spec = _spec(server)
    http = MemoryScepHttp(server.site)
    exchange = ScepExchange(spec, KEYS[0], server.clock.seconds())
    step = exchange.answered(*_answer(http, exchange.start()))  # GetCACert
    step = exchange.answered(*_answer(http, step))  # GetCACaps: now the PKCSReq
    assert step.method == "POST"
    body = bytearray(step.body)
    body[-5] ^= 0xFF  # inside the signature
    answer = http.request(HttpStep(step.method, step.url, bytes(body), step.content_type)).result
    reply = read_pki_message(answer.body)
    assert reply.pki_status is PkiStatus.FAILURE and reply.fail_info is FailInfo.BAD_MESSAGE_CHECK
    assert "bad signature" in reply.fail_info_text
    assert reply.recipient_nonce == read_pki_message(step.body).sender_nonce  # still addressed to the sender
    assert isinstance(_run(server, spec, KEYS[3]), ScepIssued)  # the challenge was still whole


def _answer(http, step):
    got = http.request(step).result
    return got.status, got.content_type, got.body


def test_a_wrong_ca_fingerprint_fails_with_22003_before_any_request_is_signed(server):
    spec = _spec(server, CAFingerprint=b"\x00" * 32)
    failed = _run(server, spec)
    assert isinstance(failed, ScepFailed) and failed.cause.code == 22003
    assert failed.cause.description == "The Registration Authority’s response is invalid."
    assert server.scep.outcomes == {}


def test_a_refusal_is_a_real_ios_error_chain_and_nothing_installs(server):
    machine = DeviceMachine(make_facts(1, 3, "17.5", DeviceKind.IPHONE), seed=1)
    (enroll,) = machine.install_enrollment(_profile(server), START)
    outcome = _run(server, _with(enroll.spec, ca_fingerprint=b"\1" * 20))
    assert isinstance(outcome, ScepFailed)
    (effect,) = machine.scep_finished(enroll.request_id, outcome, START)
    assert isinstance(effect, fx.EnrollmentFailed) and machine.phase is Phase.FAILED
    assert [(i.code, i.domain) for i in effect.error_chain] == [
        (4001, "MCInstallationErrorDomain"), (4001, "MCInstallationErrorDomain"), (1009, "MCProfileErrorDomain"),
        (22003, "MCSCEPErrorDomain")]
    assert effect.error_chain[1].localized_description == "Profile Failed to Install"
    assert effect.error_chain[3].localized_description == "The Registration Authority’s response is invalid."
    assert len(machine.profiles) == 0 and machine.profiles.keychain.identity(enroll.spec.payload_uuid) is None


def _with(spec: ScepSpec, **changes) -> ScepSpec:
    return dataclasses.replace(spec, **changes)


def test_without_a_scep_client_the_device_reports_a_network_error(server):
    clock = HeapClock(START)
    machine = DeviceMachine(make_facts(1, 4, "17.5", DeviceKind.IPHONE), seed=1)
    transport = MemoryTransport(server.http, clock, presented_chain(server.tls))
    runner = DeviceRunner(machine, clock=clock, transport=transport, push=InProcessPush(server.apns))
    runner.install_enrollment(_profile(server))
    assert machine.phase is Phase.FAILED


def test_get_pki_operation_and_3des_when_the_ca_advertises_neither_post_nor_aes(server):
    spec = _spec(server)

    def plain_caps(step, got):
        if "GetCACaps" in step.url:
            return 200, "text/plain", b"SHA-256\n"
        return got.status, got.content_type, got.body

    methods = []

    def spy(step, got):
        methods.append(step.method)
        return plain_caps(step, got)

    issued = _run(server, spec, KEYS[4], spy)
    assert isinstance(issued, ScepIssued) and methods == ["GET", "GET", "GET"]


def _sha1_only(step, got):
    if "GetCACaps" in step.url:
        return 200, "text/plain", b"SHA-1\nAES\n"
    return got.status, got.content_type, got.body


def test_sha1_is_refused_unless_the_server_allows_it(server, tmp_path):
    failed = _run(server, _spec(server), KEYS[0], _sha1_only)
    assert isinstance(failed, ScepFailed) and "(BAD_ALG)" in failed.reason and "sha1" in failed.reason
    lenient = make_server(tmp_path / "lenient", enrollment_identity="scep", allow_sha1_signatures=True)
    assert b"SHA-1" in lenient.scep.caps()
    assert isinstance(_run(lenient, _spec(lenient), KEYS[5], _sha1_only), ScepIssued)


def test_operations_and_refusals_of_the_endpoint(server):
    http = MemoryHTTP(server.site)
    caps = http.request("GET", "/scep?operation=GetCACaps")
    assert caps.body.split() == [b"POSTPKIOperation", b"SHA-256", b"SHA-512", b"AES", b"SCEPStandard", b"Renewal"]
    cert = http.request("GET", "/scep?operation=GetCACert")
    assert cert.headers["content-type"] == "application/x-x509-ca-ra-cert"
    assert http.request("GET", "/scep?operation=Nope").status == 400
    junk = http.request("POST", "/scep?operation=PKIOperation", b"\x30\x03\x02\x01\x00")
    assert junk.status == 400 and b"not a SCEP pkiMessage" in junk.body
    assert http.request("GET", "/scep?operation=PKIOperation&message=%%%").status == 400


def test_key_usage_and_key_size_are_checked_before_any_network():
    payload = scep_payload("https://ca.example/scep", identifier="x.scep", key_usage=2).to_plist()
    assert ScepSpec.from_payload(payload).cause.code == 22000
    payload = scep_payload("https://ca.example/scep", identifier="x.scep").to_plist()
    payload["PayloadContent"]["Keysize"] = 3000  # past the schema: what a device meets from a sloppy server
    assert ScepSpec.from_payload(payload).cause.code == 22001
