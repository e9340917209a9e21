"""The user portal's pages through the in-memory site: sign-in, CSRF, uploads with the API's checks, isolation."""

from __future__ import annotations

import pytest
from kits.admin_kit import PASSWORD, p12_for, two_key_p12
from kits.console_kit import PageClient
from server_kit import AdminClient, make_server

USER_PASSWORD = "alice's portal pass"


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path)
    admin = AdminClient(server)
    for user in ("alice", "bob"):
        assert admin.post("/api/v2/users", {"userId": user, "email": f"{user}@example.com"})[0] == 201
        status, body = admin.call("PUT", f"/api/v2/users/{user}/password", {"password": USER_PASSWORD})
        assert (status, body) == (200, {"userId": user, "hasPassword": True})
    status, body = admin.post("/api/v2/settings", {"kind": "user_provided", "name": "signing",
                                                    "purpose": "smime_signing", "displayName": "Mail signing"})
    assert status == 201, body
    server.test_setting = body["id"]
    return server


def signed_in(server, user: str = "alice") -> PageClient:
    client = PageClient(server)
    assert client.get("/user").status == 200
    response = client.post("/user/login", {"username": user, "password": USER_PASSWORD})
    assert response.status == 303, response.body
    assert client.get("/user").status == 200
    return client


def upload(client: PageClient, server, p12: bytes, password: str = PASSWORD, path: str = "/user/certificates"):
    return client.post_multipart(path, {"csrf": client.csrf(), "setting": server.test_setting,
                                        "password": password}, {"p12": p12})


def test_the_password_is_stored_only_as_a_hash(server):
    stored = server.admin.docs.get("user_password", "alice")
    assert stored["scheme"] == "scrypt" and USER_PASSWORD not in repr(stored)
    assert server.admin.passwords.verify("alice", USER_PASSWORD)
    assert not server.admin.passwords.verify("alice", "wrong password")
    assert not server.admin.passwords.verify("nobody", USER_PASSWORD)


def test_a_short_password_is_refused_with_the_reason(server):
    status, body = AdminClient(server).call("PUT", "/api/v2/users/alice/password", {"password": "short"})
    assert status == 400 and "8 to 1024 characters" in body["message"]
    assert AdminClient(server).call("PUT", "/api/v2/users/nobody/password", {"password": "long enough"})[0] == 404


def test_the_session_cookie_is_httponly_samesite_strict_and_secure(server):
    client = PageClient(server)
    response = client.post("/user/login", {"username": "alice", "password": USER_PASSWORD})
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("mdmsim_user=")
    for flag in ("httponly", "secure", "samesite=strict", "path=/user"):
        assert flag in cookie


def test_a_wrong_password_is_refused_and_throttled(server):
    client = PageClient(server)
    for _ in range(10):
        assert client.post("/user/login", {"username": "alice", "password": "nope"}).status == 401
    assert "wrong user name or password" in client.text()
    response = client.post("/user/login", {"username": "alice", "password": USER_PASSWORD})
    assert response.status == 429 and "retry-after" in response.headers
    assert "mdmsim_user" not in client.cookies


def test_upload_replace_delete(server):
    client = signed_in(server)
    assert "Mail signing" in client.text() and "No certificates uploaded." in client.text()
    response = upload(client, server, p12_for("alice"))
    assert response.status == 201, client.text()
    assert "certificate uploaded" in client.text() and "CN=alice" in client.text()
    first = server.admin.identities.certificates("alice")[server.test_setting]["current"]["fingerprint"]
    assert first in client.text()
    response = upload(client, server, p12_for("alice-2"), path=f"/user/certificates/{server.test_setting}/replace")
    assert response.status == 200 and "certificate replaced" in client.text()
    slots = server.admin.identities.certificates("alice")[server.test_setting]
    assert slots["history"][0]["fingerprint"] == first and slots["current"]["fingerprint"] != first
    response = client.post(f"/user/certificates/{server.test_setting}/delete", {"csrf": client.csrf()})
    assert response.status == 200 and "certificate deleted" in client.text()
    assert server.admin.identities.certificates("alice")[server.test_setting]["current"] is None


@pytest.mark.parametrize(("p12", "password", "message"), [
    (p12_for("alice"), "not the password", "wrong password for this P12 file"),
    (two_key_p12(), PASSWORD, "the P12 holds 2 private keys"),
    (b"not a p12 at all", PASSWORD, "the file is not a PKCS#12"),
    (p12_for("alice"), "", "requires a password-protected P12"),
])
def test_uploads_are_refused_with_the_api_messages(server, p12, password, message):
    client = signed_in(server)
    response = upload(client, server, p12, password)
    assert response.status == 400 and message in client.text()
    assert server.admin.identities.certificates("alice") == {}


def test_a_second_upload_for_the_same_configuration_is_refused(server):
    client = signed_in(server)
    assert upload(client, server, p12_for("alice")).status == 201
    assert upload(client, server, p12_for("alice-2")).status == 409
    assert "replace it instead" in client.text()


def test_a_post_without_the_csrf_token_changes_nothing(server):
    client = signed_in(server)
    files = {"p12": p12_for("alice")}
    fields = {"setting": server.test_setting, "password": PASSWORD}
    assert client.post_multipart("/user/certificates", fields, files).status == 403
    assert client.post_multipart("/user/certificates", {**fields, "csrf": "forged"}, files).status == 403
    assert server.admin.identities.certificates("alice") == {}
    other = signed_in(server, "bob")  # bob's token does not work in alice's session either
    bobs_token = other.csrf()
    assert client.post_multipart("/user/certificates", {**fields, "csrf": bobs_token}, files).status == 403


def test_a_user_never_sees_another_users_certificates(server):
    alice = signed_in(server)
    assert upload(alice, server, p12_for("alice")).status == 201
    fingerprint = server.admin.identities.certificates("alice")[server.test_setting]["current"]["fingerprint"]
    bob = signed_in(server, "bob")
    assert fingerprint not in bob.text() and "CN=alice" not in bob.text()
    # Bob deleting "the" certificate of the configuration deletes only his own (he has none).
    assert bob.post(f"/user/certificates/{server.test_setting}/delete", {"csrf": bob.csrf()}).status == 404
    assert server.admin.identities.certificates("alice")[server.test_setting]["current"] is not None


def test_without_a_session_the_portal_is_the_login_page(server):
    client = PageClient(server)
    assert client.get("/user").status == 200 and "Sign in" in client.text()
    assert client.post("/user/certificates/x/delete", {"csrf": "anything"}).status == 403


def test_without_user_provided_settings_upload_is_disabled(server):
    AdminClient(server).delete(f"/api/v2/settings/{server.test_setting}")
    client = signed_in(server)
    assert "has not created a user-provided certificate setting" in client.text()
    assert 'type="file"' not in client.text()


def test_sign_out_ends_the_session(server):
    client = signed_in(server)
    assert client.post("/user/logout", {"csrf": client.csrf()}).status == 303
    assert "Sign in" in client.get("/user").body.decode()


def test_pages_escape_hostile_user_attributes(server):
    hostile = "<script>alert(1)</script>"
    AdminClient(server).call("PUT", f"/api/v2/settings/{server.test_setting}", {
        "kind": "user_provided", "name": "signing", "purpose": "smime_signing", "displayName": hostile})
    client = signed_in(server)
    assert hostile not in client.last.body.decode() and "&lt;script&gt;" in client.last.body.decode()
    assert "script-src 'none'" in client.last.headers["content-security-policy"]
