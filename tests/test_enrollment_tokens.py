"""Enrollment tokens end to end: the admin API, the user binding, the stranger-binding and takeover attacks."""

from __future__ import annotations

import base64
import json

import pytest
from server_kit import BACKENDS, MemoryHTTP, SignedDevice, make_server, snapshot

from mdm_protocol.profile import parse_profile
from mdm_protocol.profile_signing import unsigned
from mdm_server.enrollment_tokens import identity_token
from mdm_server.pki import load_pkcs12
from mdm_server.storage.interface import NewCommand

UDID = "a" * 40


@pytest.fixture(params=BACKENDS)
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param)


def api(server, method: str, path: str, body=None):
    auth = base64.b64encode(f"admin:{server.admin_password}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else b""
    response = MemoryHTTP(server.site).request(
        method, path, body=data, headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    return response.status, json.loads(response.body)


def new_token(server, **body) -> tuple[str, str]:
    status, answer = api(server, "POST", "/api/v2/enrollment-tokens", body)
    assert status == 201, answer
    return answer["id"], answer["token"]


def fetch(server, query: str):
    return MemoryHTTP(server.site).request("GET", f"/mdm/enroll?{query}")


def device_from(server, response, udid: str = UDID) -> SignedDevice:
    assert response.status == 200, response.body
    (p12,) = parse_profile(unsigned(response.body)).payloads_of_type("com.apple.security.pkcs12")
    contents = load_pkcs12(p12.content["PayloadContent"], p12.content["Password"])
    return SignedDevice(server, udid, certificate=contents.certificate, key=contents.private_key)


def test_tokens_are_created_listed_shown_and_revoked_through_the_v2_api(server):
    token_id, secret = new_token(server, name="wave 1", userId="alice", maxUses=2, expiresInSeconds=3600)
    status, listing = api(server, "GET", "/api/v2/enrollment-tokens")
    assert status == 200 and listing["nextCursor"] is None
    mine = next(item for item in listing["items"] if item["id"] == token_id)
    assert mine["userId"] == "alice" and mine["maxUses"] == 2 and mine["uses"] == 0 and mine["status"] == "valid"
    assert "token" not in mine and all("digest" not in item for item in listing["items"])  # shown once
    assert {"default"} <= {item["id"] for item in listing["items"]}
    assert api(server, "DELETE", f"/api/v2/enrollment-tokens/{token_id}") == (200, {"deleted": token_id,
                                                                                  "revoked": True})
    assert api(server, "GET", f"/api/v2/enrollment-tokens/{token_id}")[1]["status"] == "revoked"
    assert fetch(server, f"token={secret}").status == 401
    assert api(server, "DELETE", "/api/v2/enrollment-tokens/nope")[0] == 404
    assert api(server, "POST", "/api/v2/enrollment-tokens", {"maxUses": 0})[0] == 400
    assert api(server, "POST", "/api/v2/enrollment-tokens", {"userId": "a", "allowUserParameter": True})[0] == 400


def test_a_per_user_token_binds_its_user_and_counts_its_uses(server):
    token_id, secret = new_token(server, userId="alice", maxUses=1)
    device = device_from(server, fetch(server, f"token={secret}"))
    assert identity_token(device.certificate) == token_id
    device.enroll()
    assert server.storage.get_device(UDID).user_id == "alice"
    again = fetch(server, f"token={secret}")
    assert again.status == 401 and b"used up" in again.body


def test_an_expired_token_enrolls_nobody(server):
    _, secret = new_token(server, expiresInSeconds=60)
    server.clock.advance(61)
    response = fetch(server, f"token={secret}")
    assert response.status == 401 and b"expired" in response.body


def test_the_stranger_binding_attack_is_refused_and_spends_nothing(server):
    """?user=alice with a token not issued for alice: refused (it used to bind the stranger to alice)."""
    batch_id, batch = new_token(server, maxUses=5)
    _, bob = new_token(server, userId="bob")
    for secret in (batch, bob):
        response = fetch(server, f"token={secret}&user=alice")
        assert response.status == 403 and b"does not let the request choose the user" in response.body
    assert api(server, "GET", f"/api/v2/enrollment-tokens/{batch_id}")[1]["uses"] == 0
    # The batch token without ?user= enrolls an unbound device; bob's token binds bob whatever is asked.
    device_from(server, fetch(server, f"token={batch}")).enroll()
    assert server.storage.get_device(UDID).user_id is None
    device_from(server, fetch(server, f"token={bob}&user=bob"), "b" * 40).enroll()
    assert server.storage.get_device("b" * 40).user_id == "bob"


def enrolled_for_alice(server) -> SignedDevice:
    _, secret = new_token(server, userId="alice")
    device = device_from(server, fetch(server, f"token={secret}"))
    device.enroll()
    server.storage.enqueue([UDID], NewCommand("queued-1", "ProfileList", b"<plist/>"), now=server.clock.seconds())
    return device


def reenrollments(server) -> dict[str, int]:
    return dict(server.service.metrics.reenrollments)


def test_the_takeover_attack_is_refused_without_a_valid_token(server):
    """A fresh identity re-Authenticating alice's UDID would clear its queue and inherit alice (her S/MIME key)."""
    enrolled_for_alice(server)
    before = snapshot(server, UDID)
    batch_id, batch = new_token(server)
    revoked_id, revoked = new_token(server, userId="alice")
    revoked_identity = device_from(server, fetch(server, f"token={revoked}"))
    api(server, "DELETE", f"/api/v2/enrollment-tokens/{revoked_id}")
    attackers = [
        SignedDevice(server, UDID),  # issued by our CA through no token (as open enrollment would)
        device_from(server, fetch(server, f"token={batch}")),  # a batch token: not alice's
        revoked_identity,  # alice's token, revoked since
    ]
    for attacker in attackers:
        response = attacker.authenticate()
        assert response.status == 400 and b"needs a valid enrollment token" in response.body
        assert snapshot(server, UDID) == before
    assert reenrollments(server) == {"refused": 3}


def test_an_erased_device_re_enrolls_through_its_users_token_logged_and_counted(server, caplog):
    old = enrolled_for_alice(server)
    _, secret = new_token(server, userId="alice")
    fresh = device_from(server, fetch(server, f"token={secret}"))
    fresh.enroll()
    assert server.storage.get_device(UDID).cert_sha256 == fresh.cert_sha256
    assert server.storage.list_commands(UDID) == ()  # the erased device's queue went with its old identity
    assert old.token_update().status == 400
    assert reenrollments(server) == {"accepted": 1}
    assert any("re-enrolled with a new identity" in record.getMessage() for record in caplog.records)
    assert b'mdmsim_reenrollments_total{outcome="accepted"} 1' in MemoryHTTP(server.site).request(
        "GET", "/metrics").body


def test_open_enrollment_needs_no_token_and_lets_any_identity_re_enroll(tmp_path):
    server = make_server(tmp_path, open_enrollment=True)
    device = device_from(server, fetch(server, "user=alice"))
    device.enroll()
    assert server.storage.get_device(UDID).user_id == "alice"
    assert SignedDevice(server, UDID).authenticate().status == 200
    assert reenrollments(server) == {"accepted": 1}


def test_tokens_survive_a_restart(tmp_path):
    first = make_server(tmp_path, in_memory=False)
    token_id, secret = new_token(first, userId="carol", maxUses=3)
    fetch(first, f"token={secret}")
    first.stopService()
    second = make_server(tmp_path, in_memory=False)
    assert api(second, "GET", f"/api/v2/enrollment-tokens/{token_id}")[1]["uses"] == 1
    assert fetch(second, f"token={secret}").status == 200
