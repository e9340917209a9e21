"""SCEP identities and enrollment tokens (`--enrollment-identity scep`): the user an identity binds comes from the
token the profile was fetched with, through the challenge, into the certificate, and so to Authenticate.

Every refusal says why and changes nothing: no use of the token spent, no challenge spent, no device changed.
"""

from __future__ import annotations

import logging

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from server_kit import SignedDevice, make_server, snapshot
from test_enrollment_tokens import api, fetch, new_token, reenrollments
from test_scep_enrollment import _run, _scep_content

from device_sim.scep_client import ScepFailed, ScepIssued, ScepSpec
from mdm_server.enrollment_tokens import ENROLLMENT_TOKEN_OID, identity_token
from mdm_server.scep_challenges import Redemption

UDID = "5cef" * 10
KEYS = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(4)]


@pytest.fixture(params=["memory", "sqlite"])
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param, in_memory=request.param == "memory",
                       enrollment_identity="scep")


def spec_from(response, **changes) -> ScepSpec:
    assert response.status == 200, response.body
    payload = dict(_scep_content(response.body))
    payload["PayloadContent"] = {**payload["PayloadContent"], **changes}
    return ScepSpec.from_payload(payload)


def scep_device(server, spec: ScepSpec, key=KEYS[0], udid: str = UDID) -> SignedDevice:
    issued = _run(server, spec, key)
    assert isinstance(issued, ScepIssued), issued
    return SignedDevice(server, udid, certificate=issued.certificate, key=issued.private_key)


def user_of(certificate: x509.Certificate) -> str | None:
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(values[0].value) if values else None


def uses(server, token_id: str) -> int:
    return api(server, "GET", f"/api/v2/enrollment-tokens/{token_id}")[1]["uses"]


def test_the_challenge_carries_the_token_and_its_user_into_the_identity_and_authenticate(server, caplog):
    token_id, secret = new_token(server, userId="alice", maxUses=2)
    spec = spec_from(fetch(server, f"token={secret}"))
    assert uses(server, token_id) == 1  # the profile spent the use, the challenge is the profile's
    _, challenge = server.scep.challenges.check(spec.challenge, server.clock.seconds())
    assert (challenge.user_id, challenge.token_id) == ("alice", token_id)
    with caplog.at_level(logging.INFO, logger="mdmsim.scep"):
        device = scep_device(server, spec)
    assert (user_of(device.certificate), identity_token(device.certificate)) == ("alice", token_id)
    fingerprint = device.certificate.fingerprint(hashes.SHA256()).hex()
    issued = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SCEP issued")]
    assert len(issued) == 1 and fingerprint in issued[0] and f"user alice through enrollment token {token_id}" in (
        issued[0])  # the binding, recorded
    device.enroll()
    assert server.storage.get_device(UDID).user_id == "alice"
    assert uses(server, token_id) == 1  # SCEP spent the challenge, never a second use of the token


def test_the_device_cannot_claim_a_user_or_token_in_its_csr(server):
    token_id, secret = new_token(server, userId="alice")
    _, other = new_token(server, userId="bob")
    spec = spec_from(fetch(server, f"token={secret}"),
                     Subject=[[["CN", "phone"]], [["UID", "bob"]], [[ENROLLMENT_TOKEN_OID.dotted_string, other]]])
    device = scep_device(server, spec)
    assert (user_of(device.certificate), identity_token(device.certificate)) == ("alice", token_id)
    assert device.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "phone"


def test_a_per_user_token_cannot_fetch_a_challenge_for_another_user(server):
    token_id, secret = new_token(server, userId="alice")
    before = server.scep.outcomes.copy()
    response = fetch(server, f"token={secret}&user=bob")
    assert response.status == 403 and b"does not let the request choose the user" in response.body
    assert uses(server, token_id) == 0 and server.scep.outcomes == before


@pytest.mark.parametrize("change", ["revoke", "expire"])
def test_a_challenge_whose_token_was_revoked_or_expired_since_issues_nothing(server, change):
    token_id, secret = new_token(server, userId="alice", expiresInSeconds=600)
    spec = spec_from(fetch(server, f"token={secret}"))
    if change == "revoke":
        assert api(server, "DELETE", f"/api/v2/enrollment-tokens/{token_id}")[0] == 200
    else:
        server.clock.advance(601)  # the challenge (an hour) outlives the token
    failed = _run(server, spec, KEYS[1])
    reason = "revoked" if change == "revoke" else "expired"
    assert isinstance(failed, ScepFailed)
    assert f"(BAD_REQUEST): the enrollment token this challenge was issued through is {reason}" in failed.reason
    assert server.scep.outcomes == {"BAD_REQUEST": 1}
    assert server.scep.challenges.check(spec.challenge, server.clock.seconds())[0] is Redemption.VALID  # unspent


def test_a_used_up_token_hands_out_no_further_challenge(server):
    token_id, secret = new_token(server, userId="alice", maxUses=1)
    first = spec_from(fetch(server, f"token={secret}"))
    again = fetch(server, f"token={secret}")
    assert again.status == 401 and b"enrollment token used up" in again.body
    assert isinstance(_run(server, first), ScepIssued)  # the profile fetched within the limit still enrolls
    assert uses(server, token_id) == 1


def test_re_authenticate_with_a_new_scep_identity_only_through_a_valid_token_of_the_same_user(server, caplog):
    _, alice = new_token(server, userId="alice")
    enrolled = scep_device(server, spec_from(fetch(server, f"token={alice}")))
    enrolled.enroll()
    before = snapshot(server, UDID)
    _, bob = new_token(server, userId="bob")
    revoked_id, revoked = new_token(server, userId="alice")
    stale = scep_device(server, spec_from(fetch(server, f"token={revoked}")), KEYS[1])
    assert api(server, "DELETE", f"/api/v2/enrollment-tokens/{revoked_id}")[0] == 200
    attackers = {"another user's token": scep_device(server, spec_from(fetch(server, f"token={bob}")), KEYS[2]),
                 "a revoked token": stale}
    for why, attacker in attackers.items():
        response = attacker.authenticate()
        assert response.status == 400 and b"identity certificate refused" in response.body, why
        assert snapshot(server, UDID) == before, why
    assert reenrollments(server) == {"refused": 2}
    _, again = new_token(server, userId="alice")
    fresh = scep_device(server, spec_from(fetch(server, f"token={again}")), KEYS[3])
    with caplog.at_level(logging.WARNING):
        fresh.enroll()
    device = server.storage.get_device(UDID)
    assert (device.cert_sha256, device.user_id) == (fresh.cert_sha256, "alice")
    assert reenrollments(server) == {"refused": 2, "accepted": 1}
    assert any("re-enrolled with a new identity" in r.getMessage() for r in caplog.records)
    assert enrolled.token_update().status == 400  # the old identity is no longer the device's
