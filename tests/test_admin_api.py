"""The admin JSON API: credentials, devices with their queues and pushes, batch enqueue, deletes, pushes.

Every failure must be a 4xx with a JSON reason; the APNs simulation shows what was really pushed.
"""

from __future__ import annotations

import base64

import pytest
from server_kit import BACKENDS, AdminClient, MemoryHTTP, SignedDevice, make_server

from mdm_protocol.checkin import TokenUpdate, encode_checkin
from mdm_protocol.profile_signing import open_signed_profile
from mdm_protocol.report import Status, decode_server_response
from mdm_server.user_channel import SHARED_IPAD_USER_ID

A = "a" * 40
B = "b" * 40
GONE = "c" * 40
UNKNOWN = "d" * 40


@pytest.fixture(params=BACKENDS)
def server(tmp_path, request):
    return make_server(tmp_path, backend=request.param)


@pytest.fixture
def admin(server):
    return AdminClient(server)


@pytest.fixture
def fleet(server):
    """A enrolled and online, B only authenticated, GONE checked out."""
    devices = {udid: SignedDevice(server, udid) for udid in (A, B, GONE)}
    devices[A].enroll()
    devices[A].inbox = devices[A].online()
    assert devices[B].authenticate().status == 200
    devices[GONE].enroll()
    assert devices[GONE].check_out().status == 200
    return devices


# Credentials ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [
    None,
    "Basic " + base64.b64encode(b"admin:wrong").decode(),
    "Basic " + base64.b64encode(b"root:{password}").decode(),
    "Basic " + base64.b64encode(b"admin").decode(),
    "Bearer {password}",
])
def test_requests_without_the_right_credentials_are_401(server, authorization):
    headers = {} if authorization is None else {
        "Authorization": authorization.replace("{password}", server.admin_password)
    }
    for method, path in (("GET", "/api/v1/devices"), ("POST", "/api/v1/commands"), ("GET", "/api/v1/ping")):
        response = MemoryHTTP(server.site).request(method, path, b"{}", headers)
        assert response.status == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Basic")
        assert b"admin credentials required" in response.body


def test_a_password_given_in_the_config_replaces_the_generated_one(tmp_path):
    server = make_server(tmp_path, admin_password="s3cret")
    assert AdminClient(server, password="s3cret").get("/api/v1/ping")[0] == 200
    assert AdminClient(server, password=server.state.admin_password).get("/api/v1/ping")[0] == 401


def test_ping_counts_devices_by_state(admin, fleet):
    assert admin.get("/api/v1/ping") == (200, {
        "status": "ok", "devices": {"authenticated": 1, "enrolled": 1, "unenrolled": 1},
    })


# Devices ------------------------------------------------------------------------------------------


def test_list_devices_filters_by_state_and_pages(admin, fleet):
    status, body = admin.get("/api/v1/devices")
    assert status == 200
    assert [d["deviceId"] for d in body["items"]] == [A, B, GONE]
    assert body["nextCursor"] is None
    assert [d["state"] for d in body["items"]] == ["enrolled", "authenticated", "unenrolled"]
    status, body = admin.get("/api/v1/devices?state=enrolled&state=authenticated")
    assert [d["deviceId"] for d in body["items"]] == [A, B]
    status, page = admin.get("/api/v1/devices?limit=2")
    assert ([d["deviceId"] for d in page["items"]], page["nextCursor"]) == ([A, B], B)
    status, rest = admin.get(f"/api/v1/devices?limit=2&cursor={page['nextCursor']}")
    assert ([d["deviceId"] for d in rest["items"]], rest["nextCursor"]) == ([GONE], None)


def test_show_device_has_facts_queue_and_push_info(server, admin, fleet):
    server.clock.advance(10)
    uuid = admin.enqueue([A], "ProfileList", push=True)[A]
    status, body = admin.get(f"/api/v1/devices/{A}")
    assert status == 200
    assert body["deviceId"] == A and body["state"] == "enrolled"
    assert body["facts"]["OSVersion"] == "17.5"
    assert body["pushToken"] == {"$data": base64.b64encode(fleet[A].token).decode()}
    assert [(c["commandUuid"], c["requestType"], c["status"]) for c in body["commands"]] == [
        (uuid, "ProfileList", "Queued")
    ]
    assert "payload" not in body["commands"][0]
    assert body["push"]["pushed"] is True and body["push"]["outcome"] == "accepted"
    assert body["checkedInSincePush"] is False
    status, listed = admin.get(f"/api/v1/devices/{A}/commands")
    assert listed["items"] == body["commands"]


def test_a_shared_ipad_shows_its_user_channels_apart_from_the_device(server, admin, fleet):
    message = TokenUpdate(topic=server.state.topic, udid=A, token=b"alice-token", push_magic="alice-magic",
                          user_id=SHARED_IPAD_USER_ID, user_short_name="alice@school.example")
    assert fleet[A].put(encode_checkin(message), "application/x-apple-aspen-mdm-checkin").status == 200
    status, body = admin.get(f"/api/v1/devices/{A}")
    assert status == 200 and body["pushMagic"] == fleet[A].push_magic  # the device's own, kept
    assert body["facts"]["IsMultiUser"] is True  # recognised from the user's TokenUpdate
    channel = {"deviceId": A, "userId": "alice@school.example", "userShortName": "alice@school.example",
               "pushToken": {"$data": base64.b64encode(b"alice-token").decode()}, "pushMagic": "alice-magic",
               "tokenUpdatedAt": body["userChannels"][0]["tokenUpdatedAt"]}
    assert body["userChannels"] == [channel]
    status, listed = admin.get(f"/api/v1/devices/{A}/user-channels")
    assert status == 200 and listed == {"items": [channel], "nextCursor": None}
    status, listed = admin.get(f"/api/v1/devices/{B}/user-channels")
    assert status == 200 and listed["items"] == []
    assert admin.get(f"/api/v1/devices/{UNKNOWN}/user-channels")[0] == 404


def test_unknown_device_is_404(admin, fleet):
    for path in (f"/api/v1/devices/{UNKNOWN}", f"/api/v1/devices/{UNKNOWN}/commands"):
        status, body = admin.get(path)
        assert status == 404 and UNKNOWN in body["message"]


def test_unknown_route_is_404_and_wrong_method_405(admin):
    assert admin.get("/api/v1/nothing-here")[0] == 404
    status, body = admin.delete("/api/v1/devices")
    assert status == 405 and "no route for DELETE" in body["message"]


# Commands -----------------------------------------------------------------------------------------


def test_enqueue_for_everyone_is_201(server, admin, fleet):
    status, body = admin.post("/api/v1/commands", {
        "deviceIds": [A, B],
        "command": {"RequestType": "DeviceInformation", "Queries": ["UDID", "OSVersion"]},
    })
    assert status == 201
    assert {d: r["status"] for d, r in body["results"].items()} == {A: 201, B: 201}
    assert body["results"][A]["push"]["pushed"] is True
    assert body["results"][B]["push"] == {"pushed": False, "reason": body["results"][B]["push"]["reason"]}
    assert "not pushable" in body["results"][B]["push"]["reason"]
    # One command, one CommandUUID for all its devices (as nanomdm does).
    assert body["results"][A]["commandUuid"] == body["results"][B]["commandUuid"]


def test_enqueue_with_unknown_and_checked_out_devices_is_207_per_device(server, admin, fleet):
    status, body = admin.post("/api/v1/commands", {
        "deviceIds": [A, UNKNOWN, GONE, A], "command": {"RequestType": "ProfileList"}, "push": False,
    })
    assert status == 207
    results = body["results"]
    assert set(results) == {A, UNKNOWN, GONE}
    assert results[A]["status"] == 201
    assert results[UNKNOWN] == {"status": 404, "error": "unknown device"}
    assert results[GONE] == {"status": 409, "error": "device checked out"}
    assert [c.command_uuid for c in server.storage.list_commands(A)] == [results[A]["commandUuid"]]
    assert server.storage.list_commands(GONE) == ()
    assert server.apns.stats.accepted == 0  # push: false


def test_data_values_reach_the_device_as_bytes(server, admin, fleet):
    payload = b"<?xml version='1.0'?><plist version='1.0'><dict/></plist>"
    uuid = admin.enqueue([A], "InstallProfile", Payload={"$data": base64.b64encode(payload).decode()})[A]
    command = decode_server_response(fleet[A].report(Status.IDLE).body)
    # The server signs InstallProfile payloads (SPEC 8): the bytes arrive inside its CMS signature.
    signed = open_signed_profile(command.keys["Payload"], roots=[server.ca.certificate], now=server.now())
    assert (command.command_uuid, command.request_type, signed.content) == (
        uuid, "InstallProfile", payload
    )
    assert signed.verified and signed.signer == server.profile_signer.certificate


def test_without_profile_signing_payloads_reach_the_device_as_given(tmp_path):
    server = make_server(tmp_path, sign_profiles=False)  # serve --no-sign-profiles
    device = SignedDevice(server, A)
    device.enroll()
    device.online()
    payload = b"<?xml version='1.0'?><plist version='1.0'><dict/></plist>"
    AdminClient(server).enqueue([A], "InstallProfile", Payload={"$data": base64.b64encode(payload).decode()})
    command = decode_server_response(device.report(Status.IDLE).body)
    assert command.keys["Payload"] == payload and server.profile_signer is None
    assert not (tmp_path / "data" / "profile-signing.key").exists()


def test_delete_a_queued_command(server, admin, fleet):
    keep = admin.enqueue([A], "ProfileList")[A]
    drop = admin.enqueue([A], "CertificateList")[A]
    assert admin.delete(f"/api/v1/devices/{A}/commands/{drop}") == (200, {"deleted": drop})
    status, body = admin.delete(f"/api/v1/devices/{A}/commands/{drop}")
    assert status == 404 and drop in body["message"]
    assert [c.command_uuid for c in server.storage.list_commands(A)] == [keep]
    assert decode_server_response(fleet[A].report(Status.IDLE).body).command_uuid == keep
    assert admin.delete(f"/api/v1/devices/{UNKNOWN}/commands/{keep}")[0] == 404


BAD_BODIES = {
    "not JSON": (b"{deviceIds: [", "not valid JSON"),
    "empty body": (b"", "must be a JSON document"),
    "JSON array": (b"[1, 2]", "deviceIds must be a non-empty list"),
    "no deviceIds": (b'{"command": {"RequestType": "ProfileList"}}', "deviceIds must be a non-empty list"),
    "empty deviceIds": (b'{"deviceIds": [], "command": {"RequestType": "ProfileList"}}', "non-empty list"),
    "device id not a string": (b'{"deviceIds": [7], "command": {"RequestType": "ProfileList"}}',
                               "non-empty list of device ids"),
    "no command": (b'{"deviceIds": ["%s"]}' % A.encode(), 'string "RequestType"'),
    "RequestType not a string": (b'{"deviceIds": ["%s"], "command": {"RequestType": 3}}' % A.encode(),
                                 'string "RequestType"'),
    "null key": (b'{"deviceIds": ["%s"], "command": {"RequestType": "ProfileList", "ManagedOnly": null}}'
                 % A.encode(), "plists have no null"),
    "bad $data": (b'{"deviceIds": ["%s"], "command": {"RequestType": "InstallProfile", '
                  b'"Payload": {"$data": "***"}}}' % A.encode(), "$data is not base64"),
    "priority not an integer": (b'{"deviceIds": ["%s"], "command": {"RequestType": "ProfileList"}, '
                                b'"priority": "high"}' % A.encode(), "priority must be an integer"),
    "negative timeout": (b'{"deviceIds": ["%s"], "command": {"RequestType": "ProfileList"}, '
                         b'"timeout": -5}' % A.encode(), "timeout must be a positive number"),
    "boolean timeout": (b'{"deviceIds": ["%s"], "command": {"RequestType": "ProfileList"}, '
                        b'"timeout": true}' % A.encode(), "timeout must be a positive number"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_malformed_requests_are_400_with_a_reason_and_queue_nothing(server, admin, fleet, case):
    raw, reason = BAD_BODIES[case]
    status, body = admin.post("/api/v1/commands", raw=raw)
    assert status == 400
    assert reason in body["message"]
    assert server.storage.list_commands(A) == ()
    assert server.apns.stats.accepted == 0


def test_malformed_push_requests_are_400(admin, fleet):
    status, body = admin.post("/api/v1/push", {"deviceIds": "all"})
    assert status == 400 and "deviceIds" in body["message"]
    assert admin.get("/api/v1/devices?limit=many")[0] == 400


# Pushes and force check-in ---------------------------------------------------------------------------------


def test_force_check_in_reports_pushed_then_checked_in(server, admin, fleet):
    server.clock.advance(10)
    status, body = admin.post("/api/v1/push", {"deviceIds": [A, B, UNKNOWN]})
    assert status == 200
    results = body["results"]
    assert results[A]["pushed"] is True and results[A]["pushedAt"] == server.clock.seconds()
    assert results[B]["pushed"] is False and "not pushable" in results[B]["reason"]
    assert results[UNKNOWN] == {"pushed": False, "reason": "unknown device"}
    server.clock.advance(0)
    assert fleet[A].inbox == [{"mdm": fleet[A].push_magic}]
    assert admin.get(f"/api/v1/devices/{A}")[1]["checkedInSincePush"] is False
    server.clock.advance(5)
    assert fleet[A].report(Status.IDLE).status == 200
    status, shown = admin.get(f"/api/v1/devices/{A}")
    assert shown["checkedInSincePush"] is True
    assert shown["lastSeenAt"] > shown["push"]["pushedAt"]


def test_an_invalid_token_stops_pushes_until_the_next_token_update(server, admin, fleet):
    device = fleet[A]
    server.apns.invalidate(device.token)
    status, body = admin.post("/api/v1/push", {"deviceIds": [A]})
    assert body["results"][A]["pushed"] is False
    assert (body["results"][A]["reason"], body["results"][A]["tokenInvalid"]) == ("Unregistered", True)
    assert server.apns.stats.rejected == 1
    for _ in range(3):
        status, body = admin.post("/api/v1/push", {"deviceIds": [A]})
        assert body["results"][A]["pushed"] is False
        assert "waiting for a new TokenUpdate" in body["results"][A]["reason"]
    assert server.apns.stats.rejected == 1  # the provider was not asked again
    admin.enqueue([A], "ProfileList", push=True)
    assert server.apns.stats.rejected == 1
    # The device reinstalls and reports a new token: pushes flow again.
    device.token = b"\x42" * 32
    inbox = device.online()
    assert device.token_update().status == 200
    server.clock.advance(0)  # the queued command is pushed right after the TokenUpdate
    assert inbox == [{"mdm": device.push_magic}]
    status, body = admin.post("/api/v1/push", {"deviceIds": [A]})
    assert body["results"][A]["pushed"] is True
    assert server.apns.stats.accepted == 2
