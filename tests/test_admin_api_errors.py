"""The admin API as a product: every failure a JSON {"code", "message"}, strict input, login throttling.

Each test here was a 500 HTML page, an unreadable answer or a silently accepted request before.
"""

from __future__ import annotations

import base64
import json
import plistlib
import re

import pytest
from server_kit import CHECKIN, AdminClient, MemoryHTTP, SignedDevice, make_server
from twisted.web.server import Request

from mdm_protocol.checkin import Authenticate, encode_checkin
from mdm_protocol.report import Status
from mdm_server.web.json_api import JsonAPI
from mdm_server.web.json_io import MAX_DEPTH
from mdm_server.web.site import make_site

A = "a" * 40


@pytest.fixture
def server(tmp_path):
    return make_server(tmp_path)


@pytest.fixture
def admin(server):
    return AdminClient(server)


def _is_error(body, code):
    assert set(body) == {"code", "message"} and body["code"] == code and body["message"], body


def test_routing_failures_are_json_with_codes(server, admin):
    status, body = admin.get("/api/v1/nothing-here")
    assert status == 404
    _is_error(body, "not_found")
    status, body = admin.delete("/api/v1/devices")
    assert status == 405
    _is_error(body, "method_not_allowed")
    response = MemoryHTTP(server.http).request("GET", "/api/v1/devices", b"", {})
    assert response.status == 401 and response.headers["content-type"] == "application/json"
    _is_error(json.loads(response.body), "unauthorized")


def test_a_bug_in_a_handler_is_a_json_500_not_an_html_page():
    def broken(request: Request):
        raise KeyError("oops")

    http = MemoryHTTP(make_site(JsonAPI([(b"GET", re.compile("/boom"), broken)])))
    response = http.request("GET", "/boom", b"", {})
    assert response.status == 500 and response.headers["content-type"] == "application/json"
    _is_error(json.loads(response.body), "internal_error")
    assert b"oops" not in response.body and b"<html" not in response.body


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deeply_nested_json_is_400(server, admin, depth):
    raw = b'{"deviceIds": ["x"], "command": ' + b"[" * depth + b"]" * depth + b"}"
    for path in ("/api/v1/commands", "/api/v2/labels", "/api/v2/users", "/api/v2/settings"):
        status, body = admin.post(path, raw=raw)
        assert status == 400, path
        _is_error(body, "json_too_deep")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused(server, admin, literal):
    raw = b'{"deviceIds": ["%s"], "command": {"RequestType": "ProfileList"}, "timeout": %s}' % (A.encode(), literal)
    status, body = admin.post("/api/v1/commands", raw=raw)
    assert status == 400
    _is_error(body, "invalid_json")


@pytest.mark.parametrize("query", ["cursor=%ff", "cursor=%zz", "cursor=%", "state=%c3%28"])
def test_bad_percent_encoding_is_400(admin, query):
    status, body = admin.get(f"/api/v1/devices?{query}")
    assert status == 400
    _is_error(body, "bad_encoding")


def test_bad_percent_encoding_in_the_path_is_400(admin):
    status, body = admin.get("/api/v1/devices/%ff")
    assert status == 400
    _is_error(body, "bad_encoding")


def test_unknown_filters_and_states_are_refused_with_the_valid_values(admin):
    status, body = admin.get("/api/v1/devices?stat=enrolled")
    assert status == 400 and "'stat'" in body["message"] and "state" in body["message"]
    _is_error(body, "unknown_parameter")
    status, body = admin.get("/api/v1/devices?state=enroled")
    assert status == 400 and "authenticated, enrolled, unenrolled" in body["message"]
    _is_error(body, "invalid_parameter")
    status, body = admin.get("/api/v2/devices?label=sales")
    assert status == 400 and "labelId" in body["message"]


def test_plist_only_fact_types_render_safely(server, admin):
    """A binary-plist UID or a NaN in a device's facts used to break GET /api/v1/devices with a 500."""
    device = SignedDevice(server, A)
    message = Authenticate(topic=server.state.topic, udid=A, os_version="17.5", product_name="iPhone15,2",
                           extra={"Archived": plistlib.UID(7), "Ratio": float("nan"), "Big": float("inf")})
    assert device.put(encode_checkin(message, binary=True), CHECKIN).status == 200
    response = MemoryHTTP(server.http).request("GET", "/api/v1/devices", b"", {"Authorization": admin.authorization})
    assert response.status == 200
    facts = json.loads(response.body, parse_constant=lambda name: pytest.fail(f"{name} in the answer"))
    facts = facts["items"][0]["facts"]
    assert (facts["Archived"], facts["Ratio"], facts["Big"]) == ({"$uid": 7}, None, None)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_writes_need_a_json_content_type(server, admin, content_type):
    """A cross-site form (text/plain, no preflight) with cached Basic credentials must not queue a command."""
    device = SignedDevice(server, A)
    device.enroll()
    headers = {"Authorization": admin.authorization}
    if content_type:
        headers["Content-Type"] = content_type
    raw = json.dumps({"deviceIds": [A], "command": {"RequestType": "ProfileList"}}).encode()
    response = MemoryHTTP(server.http).request("POST", "/api/v1/commands", raw, headers)
    assert response.status == 415
    _is_error(json.loads(response.body), "unsupported_media_type")
    assert server.storage.list_commands(A) == ()
    headers["Content-Type"] = "application/json; charset=utf-8"
    assert MemoryHTTP(server.http).request("POST", "/api/v1/commands", raw, headers).status == 201


def test_failed_logins_are_throttled_per_address_on_the_clock(server, admin):
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:guess").decode()}
    http = MemoryHTTP(server.http)
    for _ in range(10):
        assert http.request("GET", "/api/v1/ping", b"", wrong).status == 401
    response = http.request("GET", "/api/v1/ping", b"", wrong)
    assert response.status == 429
    _is_error(json.loads(response.body), "too_many_requests")
    assert 1 <= int(response.headers["retry-after"]) <= 60
    # Locked out even with the right password, so guessing cannot go on; free again after the window.
    assert admin.get("/api/v1/ping")[0] == 429
    server.clock.advance(int(response.headers["retry-after"]))
    assert admin.get("/api/v1/ping")[0] == 200
    assert http.request("GET", "/api/v1/ping", b"", wrong).status == 401


def test_the_openapi_document_is_public(server):
    response = MemoryHTTP(server.http).request("GET", "/api/openapi.json", b"", {})
    assert response.status == 200
    assert json.loads(response.body)["openapi"] == "3.1.0"


# The label and force check-in report bugs -----------------------------------------------------------------


def test_a_user_attribute_label_includes_users_created_after_it(server, admin):
    device = SignedDevice(server, A)
    device.enroll()
    server.storage.bind_user(A, "jane")  # enrolled for jane before the admin created jane
    server.admin.labels.on_device_changed(A)
    label = {"name": "Sales", "type": "filter", "criteria": {"userAttributes": {"email": "*@sales.example.com"}}}
    status, created = admin.post("/api/v2/labels", label)
    assert status == 201 and created["memberCount"] == 0
    assert admin.post("/api/v2/users", {"userId": "jane", "email": "jane@sales.example.com"})[0] == 201
    assert admin.get(f"/api/v2/labels/{created['id']}")[1]["memberCount"] == 1


def test_the_force_check_in_report_counts_only_pushed_devices_as_checked_in(server, admin):
    device = SignedDevice(server, A)
    device.enroll()
    server.apns.invalidate(device.token)
    status, body = admin.call("PUT", "/api/v2/devices/wakeup", {"deviceUuids": [A]})
    assert (status, body["pushed"]) == (200, 0)
    server.clock.advance(30)
    assert device.report(Status.IDLE).status == 200  # the device checks in on its own
    status, report = admin.get(f"/api/v2/devices/wakeup?deviceUuids={A}")
    assert (report["pushed"], report["checkedIn"]) == (0, 0)
    assert report["results"][0]["checkedInSincePush"] is False
    assert admin.get(f"/api/v1/devices/{A}")[1]["checkedInSincePush"] is False
