"""The admin console's pages through the in-memory site: sign-in, CSRF, devices, settings, Apply to Label."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from kits.admin_kit import authority
from kits.console_kit import PageClient
from server_kit import AdminClient, SignedDevice, make_server

from mdm_server.admin.contracts import AdminError

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path)
    for index in range(3):
        device = SignedDevice(server, f"UDID-{index:04d}-0000-0000")
        name = HOSTILE if index == 0 else f"Phone {index}"
        assert device.authenticate(device_name=name).status == 200
        assert device.token_update().status == 200
        server.apns.register(device.token, server.state.topic)
        server.test_devices = [*getattr(server, "test_devices", []), device]
    return server


def signed_in(server) -> PageClient:
    client = PageClient(server)
    assert "mdmsim console" in client.get("/admin").body.decode()
    response = client.post("/admin/login", {"username": "admin", "password": server.admin_password})
    assert response.status == 303 and response.headers["location"] == "/admin/devices"
    return client


def test_wrong_admin_password_is_refused_and_pages_need_a_session(server):
    client = PageClient(server)
    assert client.post("/admin/login", {"username": "admin", "password": "nope"}).status == 401
    assert "wrong user name or password" in client.text()
    assert client.get("/admin/devices").status == 303
    assert client.get("/admin/devices/UDID-0000-0000-0000").status == 303


def test_the_admin_cookie_is_scoped_to_the_console(server):
    client = PageClient(server)
    cookie = client.post("/admin/login", {"username": "admin", "password": server.admin_password})
    cookie = cookie.headers["set-cookie"].lower()
    assert cookie.startswith("mdmsim_admin=") and "path=/admin" in cookie and "samesite=strict" in cookie
    assert "httponly" in cookie and "secure" in cookie


def test_device_list_searches_and_escapes(server):
    client = signed_in(server)
    page = client.get("/admin/devices").body.decode()
    assert "UDID-0001-0000-0000" in page and "Phone 2" in page
    assert HOSTILE not in page and "&lt;script&gt;" in page
    found = client.get("/admin/devices?q=phone+2").body.decode()
    assert "UDID-0002-0000-0000" in found and "UDID-0001-0000-0000" not in found


def test_device_list_pages(server, monkeypatch):
    monkeypatch.setattr("mdm_server.console.admin_console.PAGE_SIZE", 2)
    client = signed_in(server)
    first = client.get("/admin/devices").body.decode()
    assert "UDID-0001-0000-0000" in first and "UDID-0002-0000-0000" not in first
    assert "cursor=UDID-0001-0000-0000" in first
    second = client.get("/admin/devices?q=&cursor=UDID-0001-0000-0000").body.decode()
    assert "UDID-0002-0000-0000" in second and "UDID-0001-0000-0000</a>" not in second
    assert 'rel="next"' not in second


def test_device_page_shows_facts_queue_and_force_checkin(server):
    client = signed_in(server)
    page = client.get("/admin/devices/UDID-0001-0000-0000")
    assert page.status == 200 and "Phone 1" in client.text() and "S/MIME readiness" in client.text()
    assert "Not pushed." in client.text()
    server.clock.advance(5)  # pushed after the device was last seen
    response = client.post("/admin/devices/UDID-0001-0000-0000/checkin", {"csrf": client.csrf()})
    assert response.status == 200 and "pushed; the device checks in" in client.text()
    assert "not checked in since." in client.text()
    server.clock.advance(5)
    server.test_devices[1].session()
    client.get("/admin/devices/UDID-0001-0000-0000")
    assert "checked in since." in client.text() and "not checked in since." not in client.text()
    assert client.get("/admin/devices/ghost").status == 404 and "unknown device" in client.text()


def test_console_posts_need_the_csrf_token(server):
    client = signed_in(server)
    client.get("/admin/devices/UDID-0001-0000-0000")
    assert client.post("/admin/devices/UDID-0001-0000-0000/checkin", {"csrf": "forged"}).status == 403
    assert client.post("/admin/devices/UDID-0001-0000-0000/checkin", {}).status == 403
    assert server.storage.get_push("UDID-0001-0000-0000") is None


def test_apply_to_label_from_the_console_uses_the_models_rules(server):
    api = AdminClient(server)
    ca = base64.b64encode(authority().certificate.public_bytes(serialization.Encoding.PEM)).decode()
    status, root = api.post("/api/v2/settings", {"kind": "certificate", "name": "Mail CA", "certificate": ca})
    assert status == 201, root
    status, user_provided = api.post("/api/v2/settings", {"kind": "user_provided", "name": "signing",
                                                           "purpose": "smime_signing"})
    assert status == 201
    status, label = api.post("/api/v2/labels", {"name": "Pilots", "type": "manual",
                                                 "deviceUuids": ["UDID-0001-0000-0000"]})
    assert status == 201, label
    client = signed_in(server)
    assert "Mail CA" in client.get("/admin/settings").body.decode()
    client.get("/admin/labels")
    response = client.post(f"/admin/labels/{label['id']}/apply", {"csrf": client.csrf(), "setting": root["id"]})
    assert response.status == 200 and "1 installs" in client.text(), client.text()
    assert [c.request_type for c in server.storage.list_commands("UDID-0001-0000-0000")] == ["InstallProfile"]
    response = client.post(f"/admin/labels/{label['id']}/apply", {"csrf": client.csrf(),
                                                                  "setting": user_provided["id"]})
    assert response.status == 400
    with pytest.raises(AdminError) as refused:  # the same message the API gives
        server.admin.labels.apply(label["id"], user_provided["id"])
    assert str(refused.value.reason) in client.text()


def test_sign_out(server):
    client = signed_in(server)
    client.get("/admin/devices")
    assert client.post("/admin/logout", {"csrf": client.csrf()}).status == 303
    assert client.get("/admin/devices").status == 303
