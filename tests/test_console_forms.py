"""The console's forms through the in-memory site: every form's happy path, its refusals with the admin API's own
messages (the same input sent to the API answers the same words), CSRF, escaping, invitations, device search.
"""

from __future__ import annotations

import base64
import re
from html import unescape

import pytest
from cryptography.hazmat.primitives import serialization
from kits.admin_kit import PASSWORD, authority, identity, p12_for
from kits.console_kit import PageClient
from server_kit import AdminClient, SignedDevice, make_server

from mdm_server.admin.device_search import DeviceSearch
from mdm_server.admin.settings import SettingKind, StoredSetting, setting_from_json
from mdm_server.console.setting_forms import body_from_form, default_values, form_fields, form_values

HOSTILE = '<img src=x onerror="alert(1)">"><script>alert(2)</script>'
DEVICES = ("UDID-0000-0000-0000", "UDID-0001-0000-0000")
_ALERT = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.S)
_NOTICE = re.compile(r'<p class="notice" role="status">(.*?)</p>', re.S)


@pytest.fixture
def server(tmp_path):
    server = make_server(tmp_path)
    for index, udid in enumerate(DEVICES):
        device = SignedDevice(server, udid)
        assert device.authenticate(device_name=f"Phone {index}").status == 200
        assert device.token_update().status == 200
        server.apns.register(device.token, server.state.topic)
    return server


@pytest.fixture
def client(server) -> PageClient:
    client = PageClient(server)
    client.get("/admin")
    assert client.post("/admin/login", {"username": "admin", "password": server.admin_password}).status == 303
    return client


def alert(client: PageClient) -> str:
    match = _ALERT.search(client.last.body.decode())
    assert match, f"no error shown: {client.text()[:2000]}"
    return unescape(match.group(1))


def notice(client: PageClient) -> str:
    match = _NOTICE.search(client.last.body.decode())
    assert match, f"no notice shown: {client.text()[:2000]}"
    return unescape(match.group(1))


def post(client: PageClient, path: str, fields: dict[str, str]):
    """A form's POST with the session's CSRF token (one per session, read from any page)."""
    client.get("/admin/settings")
    return client.post(path, {"csrf": client.csrf(), **fields})


def api_refusal(server, path: str, body) -> tuple[int, str]:
    status, answer = AdminClient(server).post(path, body)
    assert status >= 400, answer
    return status, answer["message"]


def pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


# Settings --------------------------------------------------------------------------------------------

EXCHANGE = {"name": "Exchange 1", "host": "mail1.example.com", "enable_mail": "on", "use_ssl": "on"}
REFUSED_SETTINGS = [
    ("exchange", {**EXCHANGE, "name": ""}, {"name": ""}),
    ("exchange", {**EXCHANGE, "past_days_to_sync": "abc"}, {"past_days_to_sync": "abc"}),
    ("exchange", {**EXCHANGE, "past_days_to_sync": "5"}, {"past_days_to_sync": 5}),
    ("exchange", {k: v for k, v in EXCHANGE.items() if k != "enable_mail"},
     {"enable_mail": False, "enable_contacts": False, "enable_calendars": False, "enable_reminders": False,
      "enable_notes": False}),
    ("exchange", {**EXCHANGE, "oauth_sign_in_url": "https://login.example.com"},
     {"oauth_sign_in_url": "https://login.example.com"}),
    ("exchange", {**EXCHANGE, "user_name": "$NOT_A_VARIABLE$"}, {"user_name": "$NOT_A_VARIABLE$"}),
    ("exchange", {**EXCHANGE, "smime.signing_identity": "s999"}, {"smime": {"signing_identity": "s999"}}),
    ("email", {"name": "Mail", "incoming.host": "imap.example.com", "incoming.port": "70000",
               "outgoing.host": "smtp.example.com"}, None),
    ("user_provided", {"name": "Signing", "purpose": "smime_signing", "delete_private_keys_after_days": "20"},
     {"purpose": "smime_signing", "delete_private_keys_after_days": 20}),
    ("user_provided", {"name": "Signing", "purpose": "wrong"}, {"purpose": "wrong"}),
]


@pytest.mark.parametrize(("kind", "form", "api_changes"), REFUSED_SETTINGS)
def test_setting_forms_refuse_with_the_api_message(server, client, kind, form, api_changes):
    response = post(client, f"/admin/settings/new/{kind}", form)
    if api_changes is None:  # the email case: its body is nested (incoming/outgoing), spelt out here
        body = {"name": "Mail", "incoming": {"host": "imap.example.com", "port": 70000},
                "outgoing": {"host": "smtp.example.com"}}
    elif kind == "exchange":
        body = {"name": "Exchange 1", "host": "mail1.example.com", **api_changes}
    else:
        body = {"name": "Signing", **api_changes}
    status, message = api_refusal(server, "/api/v2/settings", {"kind": kind, **body})
    assert (response.status, alert(client)) == (status, message)
    assert server.admin.settings.list() == []  # nothing stored
    assert 'value="mail1.example.com"' in client.text() or kind != "exchange"  # the form keeps what was typed


def test_a_non_ca_certificate_is_refused_with_the_api_message(server, client):
    leaf, _ = identity("alice")
    client.get("/admin/settings/new/certificate")
    response = client.post_multipart("/admin/settings/new/certificate",
                                     {"csrf": client.csrf(), "name": "Not a CA"}, {"certificate": pem(leaf)})
    status, message = api_refusal(server, "/api/v2/settings", {
        "kind": "certificate", "name": "Not a CA", "certificate": base64.b64encode(pem(leaf)).decode()})
    assert (response.status, alert(client)) == (status, message) and "not a CA" in message


def test_the_procedure_settings_are_made_and_edited_in_the_console(server, client):
    ca = authority().certificate
    client.get("/admin/settings/new/certificate")
    response = client.post_multipart("/admin/settings/new/certificate", {"csrf": client.csrf(), "name": "Mail CA",
                                     "description": "signs mail"}, {"certificate": pem(ca)})
    assert response.status == 303
    root = server.admin.settings.get(response.headers["location"].split("/")[-1].split("?")[0])
    assert root.setting.certificate == ca.public_bytes(serialization.Encoding.DER)
    signing = post(client, "/admin/settings/new/user_provided", {"name": "Signing", "purpose": "smime_signing",
                                                                 "require_password": "on"})
    encryption = post(client, "/admin/settings/new/user_provided", {
        "name": "Encryption", "purpose": "smime_encryption", "display_name": "Mail encryption",
        "delete_private_keys_after_days": "7"})
    assert signing.status == encryption.status == 303
    smime = {"smime.enable_for_ios_9_3_3": "on", "smime.signing_enabled": "on", "smime.signing_identity": "s2",
             "smime.encryption_by_default": "on", "smime.encryption_identity": "s3",
             "smime.encryption_identity_user_overrideable": "on", "smime.per_message_switch": "on"}
    assert post(client, "/admin/settings/new/exchange", {**EXCHANGE, **smime, "past_days_to_sync": "7",
                                                         "user_name": "corp\\$USERID$",
                                                         "delivery": "auto"}).status == 303
    exchange = server.admin.settings.get("s4").setting
    assert exchange.smime.signing_identity == "s2" and exchange.smime.encryption_identity == "s3"
    assert exchange.smime.per_message_switch and exchange.smime.encryption_identity_user_overrideable
    assert not exchange.smime.signing_user_overrideable and exchange.past_days_to_sync == 7
    assert exchange.user_name == "corp\\$USERID$" and not exchange.enable_contacts
    assert exchange.delivery.value == "auto"  # DDM from iOS 17, the profile below
    assert server.admin.settings.get("s3").setting.delete_private_keys_after_days == 7
    # Edit: the certificate is kept when no file is chosen; the version goes up.
    client.get(f"/admin/settings/{root.setting_id}")
    assert 'value="Mail CA"' in client.text()
    response = client.post_multipart(f"/admin/settings/{root.setting_id}", {"csrf": client.csrf(),
                                     "name": "Mail CA 2"}, {})
    assert response.status == 200 and "version 2" in notice(client)
    edited = server.admin.settings.get(root.setting_id)
    assert edited.setting.name == "Mail CA 2" and edited.setting.certificate == root.setting.certificate
    # A refused edit changes nothing and shows the API's message.
    response = post(client, "/admin/settings/s4", {**EXCHANGE, **smime, "smime.encryption_identity": "s2"})
    assert response.status == 400 and "need two user-provided settings" in alert(client)
    assert server.admin.settings.get("s4").version == 1


def test_delete_of_a_referenced_setting_is_refused_like_the_api(server, client):
    post(client, "/admin/settings/new/user_provided", {"name": "Signing", "purpose": "smime_signing"})
    post(client, "/admin/settings/new/exchange", {**EXCHANGE, "smime.signing_identity": "s1"})
    response = post(client, "/admin/settings/s1/delete", {})
    status, answer = AdminClient(server).delete("/api/v2/settings/s1")
    assert (response.status, alert(client)) == (status, answer["message"]) == (409, answer["message"])
    assert post(client, "/admin/settings/s2/delete", {}).status == 200 and "s2 deleted" in notice(client)
    assert [s.setting_id for s in server.admin.settings.list()] == ["s1"]


@pytest.mark.parametrize("kind", list(SettingKind))
def test_a_setting_survives_its_form_unchanged(kind):
    """Stored -> the form's values -> posted as a browser would -> the same setting (every field kept)."""
    bodies = {
        SettingKind.CERTIFICATE: {"name": "CA", "certificate": base64.b64encode(pem(authority().certificate))
                                  .decode(), "file_name": "ca.pem", "description": "d"},
        SettingKind.USER_PROVIDED: {"name": "S", "purpose": "vpn", "require_password": False,
                                    "delete_private_keys_after_days": 3, "display_name": "Shown"},
        SettingKind.EMAIL: {"name": "M", "incoming": {"host": "i", "port": 993, "authentication": "crammd5"},
                            "outgoing": {"host": "o", "use_ssl": False, "username": None},
                            "account_type": "pop", "allow_mail_drop": True, "email_address": None,
                            "smime": {"encryption_by_default": True, "per_message_switch": True}},
        SettingKind.EXCHANGE: {"name": "X", "use_oauth": True, "enable_notes": False, "audio_call_app": "app",
                               "past_days_to_sync": 0, "smime": {"signing_enabled": True}, "delivery": "auto"},
    }
    stored = StoredSetting("s1", 1, setting_from_json(kind, bodies[kind]))
    values = form_values(stored)
    posted = {f.name: ("on" if values.get(f.name) is True else "" if values.get(f.name) is False
                       else values.get(f.name, "")) for f in form_fields(kind) if f.widget != "file"}
    assert setting_from_json(kind, body_from_form(kind, posted, {}, stored)) == stored.setting


MINIMAL = {SettingKind.CERTIFICATE: {"name": "CA"}, SettingKind.USER_PROVIDED: {"name": "S", "purpose": "vpn"},
           SettingKind.EMAIL: {"name": "M", "incoming.host": "i", "outgoing.host": "o"},
           SettingKind.EXCHANGE: {"name": "X", "host": "h"}}


@pytest.mark.parametrize("kind", list(SettingKind))
def test_a_new_settings_form_starts_from_the_models_defaults(kind):
    """A blank form posted as the browser shows it (only the required fields typed) is the model's defaults."""
    ca = pem(authority().certificate)
    posted = {name: ("on" if value is True else "" if value is False else value)
              for name, value in default_values(kind).items()} | MINIMAL[kind]
    files = {"certificate": ca} if kind is SettingKind.CERTIFICATE else {}
    body = {name.split(".")[0]: {} for name in MINIMAL[kind] if "." in name}
    for name, value in MINIMAL[kind].items():
        _, _, inner = name.partition(".")
        body[name.split(".")[0]] = {**body[name.split(".")[0]], inner: value} if inner else value
    if files:
        body["certificate"] = base64.b64encode(ca).decode()
    assert setting_from_json(kind, body_from_form(kind, posted, files)) == setting_from_json(kind, body)


# Users, portal passwords and invitations -------------------------------------------------------------

def test_users_are_made_and_edited_with_the_api_messages(server, client):
    response = post(client, "/admin/users", {"user_id": "alice", "email": "not an address"})
    status, message = api_refusal(server, "/api/v2/users", {"userId": "alice", "email": "not an address"})
    assert (response.status, alert(client)) == (status, message)
    assert 'value="not an address"' in client.text()  # the form keeps what was typed
    response = post(client, "/admin/users", {"user_id": "alice", "email": "alice@example.com",
                                             "display_name": HOSTILE, "USER_CUSTOM1": "Sales"})
    assert response.status == 303 and response.headers["location"] == "/admin/users/alice"
    assert server.admin.users.get("alice").custom == {"USER_CUSTOM1": "Sales"}
    response = post(client, "/admin/users", {"user_id": "alice"})
    assert (response.status, alert(client)) == (409, "user 'alice' already exists")
    AdminClient(server).call("PUT", "/api/v2/users/alice", {"email": "alice@example.com",
                                                            "custom": {"MANAGED_APPLE_ID": "a@appleid"}})
    assert post(client, "/admin/users/alice", {"email": "alice@example.org", "USER_CUSTOM2": "x"}).status == 200
    user = server.admin.users.get("alice")
    assert user.email == "alice@example.org"
    assert user.custom == {"MANAGED_APPLE_ID": "a@appleid", "USER_CUSTOM2": "x"}  # the API's attribute is kept


def test_portal_password_and_certificates_per_setting(server, client):
    api = AdminClient(server)
    api.post("/api/v2/users", {"userId": "bob"})
    api.post("/api/v2/settings", {"kind": "user_provided", "name": HOSTILE, "purpose": "smime_signing"})
    response = post(client, "/admin/users/bob/password", {"password": "short"})
    status, answer = api.call("PUT", "/api/v2/users/bob/password", {"password": "short"})
    assert (response.status, alert(client)) == (status, answer["message"])
    assert post(client, "/admin/users/bob/password", {"password": "bob's portal pw"}).status == 200
    assert "portal password set" in notice(client) and "Portal password: set." in client.text()
    p12 = base64.b64encode(p12_for("bob")).decode()
    assert api.post("/api/v2/users/bob/certificates", {"settingId": "s1", "p12": p12,
                                                       "password": PASSWORD})[0] == 201
    page = client.get("/admin/users/bob").body.decode()
    assert 'data-setting="s1"' in page and "CN=bob" in page and HOSTILE not in page
    portal = PageClient(server)
    assert portal.post("/user/login", {"username": "bob", "password": "bob's portal pw"}).status == 303


def invite(client: PageClient, user_id: str, hours: str = "1") -> str:
    response = post(client, f"/admin/users/{user_id}/invitations", {"hours": hours})
    assert response.status == 201, client.text()
    return re.search(r'id="invitation-link">https://[^/]+(/user/invite/[^<]+)<', client.text()).group(1)


def test_an_invitation_sets_the_password_once(server, client):
    AdminClient(server).post("/api/v2/users", {"userId": "carol"})
    path = invite(client, "carol")
    secret = path.rsplit("/", 1)[1]
    assert all(secret not in str(body) for _, body in server.admin.docs.list("invitation"))  # digest only
    user = PageClient(server)
    assert user.get(path).status == 200 and "carol" in user.text()
    response = user.post(path, {"password": "short", "confirm": "short"})
    assert (response.status, alert(user)) == (400, "password must be text of 8 to 1024 characters")
    response = user.post(path, {"password": "carol's pw 1", "confirm": "carol's pw 2"})
    assert response.status == 400 and "differ" in alert(user)  # neither refusal spent the invitation
    response = user.post(path, {"password": "carol's pw 1", "confirm": "carol's pw 1"})
    assert response.status == 200 and "password set" in notice(user)
    assert server.admin.passwords.verify("carol", "carol's pw 1")
    assert user.post(path, {"password": "someone else", "confirm": "someone else"}).status == 404
    assert "not valid" in alert(user) and server.admin.passwords.verify("carol", "carol's pw 1")
    assert user.get(path).status == 404 and "not valid" in alert(user)
    client.get("/admin/users/carol")
    assert "<td>used</td>" in client.text()


def test_an_expired_unknown_or_orphaned_invitation_is_refused(server, client):
    api = AdminClient(server)
    api.post("/api/v2/users", {"userId": "dave"})
    api.post("/api/v2/users", {"userId": "erin"})
    refused = post(client, "/admin/users/dave/invitations", {"hours": "0"})
    assert refused.status == 400 and "1 minute to 90 days" in alert(client)
    orphaned = invite(client, "erin")
    assert post(client, "/admin/users/erin/delete", {}).status == 200
    api.post("/api/v2/users", {"userId": "erin"})  # the same id again: the old link stays dead
    user = PageClient(server)
    assert user.get(orphaned).status == 404
    assert user.get("/user/invite/not-a-secret").status == 404
    path = invite(client, "dave", hours="1")
    server.clock.advance(3601)
    assert user.get(path).status == 410 and "expired" in alert(user)
    assert user.post(path, {"password": "dave's password", "confirm": "dave's password"}).status == 410
    assert not server.admin.passwords.has_password("dave")


# Labels, sync policies, conflicts -------------------------------------------------------------------

def test_labels_are_made_with_the_api_messages(server, client):
    response = post(client, "/admin/labels", {"name": " ", "type": "manual"})
    status, message = api_refusal(server, "/api/v2/labels", {"name": " ", "type": "manual"})
    assert (response.status, alert(client)) == (status, message)
    response = post(client, "/admin/labels", {"name": "Pilots", "type": "manual", "deviceUuids": DEVICES[0]})
    assert response.status == 201 and "1 devices" in notice(client)
    response = post(client, "/admin/labels", {"name": "Modern", "type": "filter", "platforms": "iOS",
                                              "osVersionMin": "17.0", "osVersionBelow": "16"})
    status, message = api_refusal(server, "/api/v2/labels", {"name": "Modern", "type": "filter", "criteria": {
        "platforms": ["iOS"], "ownership": [], "osVersionMin": "17.0", "osVersionBelow": "16"}})
    assert (response.status, alert(client)) == (status, message)
    response = post(client, "/admin/labels", {"name": "Company iOS", "type": "filter", "platforms": "iOS",
                                              "ownership": "unknown"})
    assert response.status == 201 and "2 devices" in notice(client)
    label_id = next(label.label_id for label in server.admin.labels.labels.all() if label.name == "Pilots")
    assert post(client, f"/admin/labels/{label_id}/delete", {}).status == 200
    assert sorted(label.name for label in server.admin.labels.labels.all()) == ["Company iOS"]


def test_sync_policies_are_made_with_the_api_messages(server, client):
    label = AdminClient(server).post("/api/v2/labels", {"name": "Pilots", "type": "manual",
                                                        "deviceUuids": [DEVICES[0]]})[1]
    response = post(client, "/admin/policies", {"name": "Fast", "syncIntervalMinutes": "0.5"})
    status, message = api_refusal(server, "/api/v2/sync-policies", {"name": "Fast", "syncIntervalMinutes": 0.5})
    assert (response.status, alert(client)) == (status, message)
    response = post(client, "/admin/policies", {"name": "Fast", "syncIntervalMinutes": "soon"})
    status, message = api_refusal(server, "/api/v2/sync-policies", {"name": "Fast", "syncIntervalMinutes": "soon"})
    assert (response.status, alert(client)) == (status, message)
    response = post(client, "/admin/policies", {"name": "Fast", "status": "active", "priority": "5",
                                                "syncIntervalMinutes": "15", "labelIds": label["id"]})
    assert response.status == 201 and "every 15 minutes" in notice(client)
    assert server.admin.labels.effective_policy(DEVICES[0]).interval == 900
    assert server.admin.labels.effective_policy(DEVICES[1]).interval == 4 * 3600
    response = post(client, "/admin/policies", {"name": "fast", "syncIntervalMinutes": "30"})
    status, message = api_refusal(server, "/api/v2/sync-policies", {"name": "fast", "syncIntervalMinutes": 30})
    assert (response.status, alert(client)) == (status, message) == (409, message)
    policy_id = next(p.policy_id for p in server.admin.labels.policies.all() if p.name == "Fast")
    assert post(client, f"/admin/policies/{policy_id}", {"name": "Fast", "priority": "5",
                                                         "syncIntervalMinutes": "20"}).status == 200
    assert server.admin.labels.effective_policy(DEVICES[0]).interval == 4 * 3600  # no label any more
    assert post(client, "/admin/policies/default/delete", {}).status == 409
    assert "cannot be deleted" in alert(client)
    assert post(client, "/admin/policies/default", {"name": "Default Sync Policy",
                                                    "syncIntervalMinutes": "120"}).status == 200
    assert server.admin.labels.effective_policy(DEVICES[1]).interval == 7200


def test_conflicts_view_shows_sentry_with_smime_encryption(server, client):
    api = AdminClient(server)
    api.post("/api/v2/settings", {"kind": "exchange", "name": "Encrypting", "host": "mail.example.com",
                                  "smime": {"encryption_by_default": True}})
    post(client, "/admin/labels", {"name": "Sentry", "type": "manual", "deviceUuids": DEVICES[0],
                                   "sentryAttachmentEncryption": "on"})
    label_id = server.admin.labels.labels.all()[0].label_id
    response = post(client, f"/admin/labels/{label_id}/apply", {"setting": "s1"})
    assert response.status == 200 and "enable one or the other" in client.text()
    page = client.get("/admin/conflicts").body.decode()
    assert "sentry-attachment-encryption-with-smime-encryption" in page and DEVICES[0] in page
    assert client.get(f"/admin/conflicts?label={label_id}").status == 200
    assert client.get("/admin/conflicts?label=ghost").status == 404


# Enrollment tokens ------------------------------------------------------------------------------------

def test_tokens_are_made_shown_once_and_revoked(server, client):
    for form, body in (({"maxUses": "0"}, {"maxUses": 0}), ({"expiresInSeconds": "soon"},
                                                           {"expiresInSeconds": "soon"})):
        response = post(client, "/admin/tokens", form)
        status, message = api_refusal(server, "/api/v2/enrollment-tokens", body)
        assert (response.status, alert(client)) == (status, message)
    response = post(client, "/admin/tokens", {"name": HOSTILE, "userId": "erin", "maxUses": "1",
                                              "expiresInSeconds": "3600"})
    assert response.status == 201
    secret = re.search(r'id="token-secret">([^<]+)<', client.text()).group(1)
    assert HOSTILE not in client.last.body.decode()
    enroll = PageClient(server).get(f"/mdm/enroll?token={secret}")
    assert enroll.status == 200
    page = client.get("/admin/tokens").body.decode()
    assert secret not in page and "used up" in page  # shown once; one use of one
    token_id = next(t.token_id for t in server.tokens.all() if t.user_id == "erin")
    assert post(client, f"/admin/tokens/{token_id}/revoke", {}).status == 200 and "revoked" in notice(client)
    assert server.tokens.get(token_id).revoked
    assert post(client, "/admin/tokens/ghost/revoke", {}).status == 404


# Every page and form: a session, and the CSRF token ----------------------------------------------------

PAGES = ["/admin/settings", "/admin/settings/new/exchange", "/admin/users", "/admin/policies", "/admin/tokens",
         "/admin/conflicts", "/admin/labels"]
FORMS = ["/admin/settings/new/exchange", "/admin/settings/s1", "/admin/settings/s1/delete", "/admin/users",
         "/admin/users/alice", "/admin/users/alice/password", "/admin/users/alice/invitations",
         "/admin/users/alice/delete", "/admin/labels", "/admin/policies", "/admin/policies/default",
         "/admin/tokens", "/admin/tokens/default/revoke"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_session(server, path):
    assert PageClient(server).get(path).status == 303


@pytest.mark.parametrize("path", FORMS)
def test_forms_refuse_a_post_without_the_csrf_token(server, client, path):
    api = AdminClient(server)
    api.post("/api/v2/users", {"userId": "alice"})
    api.post("/api/v2/settings", {"kind": "user_provided", "name": "Signing", "purpose": "smime_signing"})
    before = (server.admin.docs.list("user"), server.admin.docs.list("setting"), server.tokens.all())
    fields = {"name": "x", "user_id": "zed", "password": "long enough", "syncIntervalMinutes": "5",
              "type": "manual", "purpose": "vpn"}
    for forged in ({"csrf": "forged", **fields}, fields):
        response = client.post(path, forged)
        assert response.status == 403 and "nothing was changed" in client.text()
    after = (server.admin.docs.list("user"), server.admin.docs.list("setting"), server.tokens.all())
    assert after == before and not server.admin.passwords.has_password("alice")
    assert server.admin.docs.list("invitation") == []


def test_hostile_names_are_escaped_on_every_page(server, client):
    api = AdminClient(server)
    api.post("/api/v2/users", {"userId": "mallory", "displayName": HOSTILE, "custom": {"USER_CUSTOM1": HOSTILE}})
    api.post("/api/v2/settings", {"kind": "exchange", "name": HOSTILE, "description": HOSTILE,
                                  "host": "mail.example.com"})
    api.post("/api/v2/labels", {"name": HOSTILE, "type": "manual", "deviceUuids": list(DEVICES)})
    api.post("/api/v2/sync-policies", {"name": HOSTILE, "syncIntervalMinutes": 30})
    api.post("/api/v2/enrollment-tokens", {"name": HOSTILE})
    for path in (*PAGES, "/admin/users/mallory", "/admin/settings/s1"):
        body = client.get(path).body.decode()
        assert client.last.status == 200, path
        assert "<script>alert" not in body and "<img src=x" not in body, path


# Device search -----------------------------------------------------------------------------------------

def test_device_search_index_follows_inventory(server, client):
    search = server.admin.labels.search
    assert len(search) == 2 and search.candidates("phone", after=None, limit=5) == list(DEVICES)
    assert search.candidates("phone", after=DEVICES[0], limit=5) == [DEVICES[1]]
    assert search.candidates("phone\n", after=None, limit=5) == []
    device = SignedDevice(server, "UDID-0002-0000-0000")
    device.authenticate(device_name="Kiosk")
    assert "UDID-0002-0000-0000" in client.get("/admin/devices?q=kiosk").body.decode()
    device.authenticate(device_name="Lobby")  # renamed: the old name finds nothing
    assert "UDID-0002-0000-0000" not in client.get("/admin/devices?q=kiosk").body.decode()
    assert "UDID-0002-0000-0000" in client.get("/admin/devices?q=lobby").body.decode()


def test_device_search_forgets_and_orders():
    from kits.admin_kit import device

    search = DeviceSearch()
    search.load([device("B"), device("A"), device("C")])
    assert search.candidates("iphone", after=None, limit=2) == ["A", "B"]
    search.forget("B")
    search.forget("B")  # twice: no error
    assert search.candidates("iphone", after="A", limit=5) == ["C"]
