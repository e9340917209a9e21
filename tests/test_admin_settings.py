"""Settings and users through the V2 admin JSON API: CRUD, validation reasons, persistence, uploads."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from kits.admin_kit import PASSWORD, admin_world, authority, identity, p12_for
from twisted.internet.task import Clock

from device_sim.memory_http import MemoryHTTP
from mdm_server.admin.contracts import AdminError
from mdm_server.admin.settings import (
    ExchangeSetting,
    SettingKind,
    SMIMEOptions,
    read_certificate_file,
    setting_from_json,
    setting_to_json,
)
from mdm_server.web.admin_settings_api import AdminSettingsAPI
from mdm_server.web.json_api import JsonAPI
from mdm_server.web.json_io import ApiError
from mdm_server.web.site import make_site

TOKEN = "Bearer let-me-in"


def authorise(request) -> None:
    if request.getHeader("authorization") != TOKEN:
        raise ApiError(401, "admin credentials required")


class Api:
    """JSON over the real twisted.web resource, in memory."""

    def __init__(self, world) -> None:
        self.hooks: list[tuple[str, str]] = []
        routes = AdminSettingsAPI(
            world.settings, world.users, world.identities,
            on_setting_changed=lambda i: self.hooks.append(("setting changed", i)),
            on_setting_deleted=lambda i: self.hooks.append(("setting deleted", i)),
            on_user_changed=lambda i: self.hooks.append(("user changed", i))).routes
        resource = JsonAPI(routes, authorise=authorise)
        self.http = MemoryHTTP(make_site(resource, reactor=Clock()))

    def call(self, method: str, path: str, body=None, *, token: str = TOKEN) -> tuple[int, dict]:
        raw = b"" if body is None else json.dumps(body).encode()
        response = self.http.request(method, path, raw, {"Authorization": token,
                                                         "Content-Type": "application/json"})
        return response.status, json.loads(response.body)


@pytest.fixture
def world():
    return admin_world()


@pytest.fixture
def api(world):
    return Api(world)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ca_file(encoding=serialization.Encoding.PEM) -> str:
    return b64(authority().certificate.public_bytes(encoding))


# Settings CRUD ---------------------------------------------------------------------------------------------

BODIES = {
    "certificate": {"name": "Mail CA", "description": "verifies senders", "certificate": ca_file()},
    "user_provided": {"name": "Signing", "purpose": "smime_signing", "display_name": "S/MIME signing",
                      "delete_private_keys_after_days": 7},
    "email": {"name": "IMAP", "incoming": {"host": "imap.example.com"},
              "outgoing": {"host": "smtp.example.com"}},
    "exchange": {"name": "Exchange", "host": "mail.example.com", "use_oauth": True},
}


@pytest.mark.parametrize("kind", list(BODIES))
def test_each_kind_is_created_read_updated_and_deleted(api, kind):
    status, created = api.call("POST", "/api/v2/settings", {"kind": kind, **BODIES[kind]})
    assert status == 201 and created["kind"] == kind and created["version"] == 1
    setting_id = created["id"]
    assert api.call("GET", f"/api/v2/settings/{setting_id}") == (200, created)
    edited = {**created, "name": "Renamed", "description": "edited"}
    status, updated = api.call("PUT", f"/api/v2/settings/{setting_id}", edited)
    assert status == 200 and updated["version"] == 2 and updated["name"] == "Renamed"
    status, listed = api.call("GET", f"/api/v2/settings?kind={kind}")
    assert [item["id"] for item in listed["items"]] == [setting_id]
    assert api.call("DELETE", f"/api/v2/settings/{setting_id}") == (200, {"deleted": setting_id})
    assert api.call("GET", f"/api/v2/settings/{setting_id}")[0] == 404


def test_defaults_follow_epmm(api):
    _, provided = api.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "Enc",
                                                         "purpose": "smime_encryption"})
    assert provided["requirePassword"] is True and provided["deletePrivateKeysAfterDays"] is None
    assert provided["displayName"] == "Enc"  # shown as "Configuration" in the portal
    _, exchange = api.call("POST", "/api/v2/settings", {"kind": "exchange", "name": "X", "host": "h.example"})
    assert exchange["userName"] == "$USERID$" and exchange["emailAddress"] == "$EMAIL$"
    assert exchange["allowRecentAddressSyncing"] is True
    assert exchange["smime"]["encryptionByDefault"] is False


def test_settings_persist_in_the_document_store(tmp_path):
    world = admin_world(str(tmp_path / "admin.sqlite3"))
    Api(world).call("POST", "/api/v2/settings", {"kind": "exchange", **BODIES["exchange"]})
    world.docs.close()
    reopened = admin_world(str(tmp_path / "admin.sqlite3"))
    (stored,) = reopened.settings.list()
    assert stored.setting_id == "s1" and isinstance(stored.setting, ExchangeSetting)
    assert stored.setting.use_oauth is True


def test_the_certificate_file_may_be_pem_or_der(api):
    pem_body = {"kind": "certificate", "name": "a", "certificate": ca_file()}
    _, pem = api.call("POST", "/api/v2/settings", pem_body)
    der_body = {"kind": "certificate", "name": "b", "certificate": ca_file(serialization.Encoding.DER)}
    _, der = api.call("POST", "/api/v2/settings", der_body)
    assert pem["certificate"] == der["certificate"]
    assert pem["certificateInfo"]["subject"] == "O=mdmsim,CN=mdmsim test CA"


@pytest.mark.parametrize(("data", "reason"), [
    (b"hello, I am a text file", "the file is neither a PEM nor a DER X.509 certificate"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     "the file looks like PEM but holds no readable X.509 certificate"),
    (None, "the file holds 2 certificates; upload one CA certificate"),
    ("leaf", "the certificate is not a CA (basicConstraints CA:FALSE)"),
])
def test_anything_but_one_ca_certificate_is_refused(api, data, reason):
    pem = authority().certificate.public_bytes(serialization.Encoding.PEM)
    if data is None:
        data = pem + pem
    elif data == "leaf":
        data = identity("alice")[0].public_bytes(serialization.Encoding.PEM)
    body = {"kind": "certificate", "name": "x", "certificate": b64(data)}
    status, body = api.call("POST", "/api/v2/settings", body)
    assert status == 400 and body["message"].startswith(reason)


@pytest.mark.parametrize(("body", "reason"), [
    ({"kind": "mdm", "name": "x"},
     "kind must be one of certificate, user_provided, email, exchange, not 'mdm'"),
    ({"kind": "exchange", "host": "h"}, "name is required"),
    ({"kind": "exchange", "name": " ", "host": "h"}, "name must not be empty"),
    ({"kind": "exchange", "name": "x", "hots": "h"}, "unknown field hots (known: name, host, "),
    ({"kind": "exchange", "name": "x", "host": "h", "use_ssl": "yes"},
     "useSsl must be true or false, not str"),
    ({"kind": "exchange", "name": "x"}, "host is required unless useOauth is on"),
    ({"kind": "exchange", "name": "x", "host": "h", "past_days_to_sync": 5},
     "pastDaysToSync must be one of"),
    ({"kind": "exchange", "name": "x", "host": "h", "enable_mail": False, "enable_contacts": False,
      "enable_calendars": False, "enable_reminders": False, "enable_notes": False},
     "at least one of enableMail"),
    ({"kind": "exchange", "name": "x", "host": "h", "oauth_sign_in_url": "https://a"},
     "oauthSignInUrl and"),
    ({"kind": "exchange", "name": "x", "host": "h", "smime": {"per_message": True}},
     "unknown field smime.perMessage"),
    ({"kind": "email", "name": "x", "incoming": {"host": "i"}}, "outgoing is required"),
    ({"kind": "email", "name": "x", "incoming": {"host": "i", "port": 70000}, "outgoing": {"host": "o"}},
     "incoming.port must be 1 to 65535"),
    ({"kind": "email", "name": "x", "incoming": {"host": "i", "authentication": "kerberos"},
      "outgoing": {"host": "o"}}, "incoming.authentication must be one of none, password"),
    ({"kind": "user_provided", "name": "x", "purpose": "smime_signing", "delete_private_keys_after_days": 16},
     "deletePrivateKeysAfterDays must be empty (never) or 1 to 15, not 16"),
    ({"kind": "user_provided", "name": "x", "purpose": "smime_signing", "delete_private_keys_after_days": 0},
     "deletePrivateKeysAfterDays must be empty (never) or 1 to 15, not 0"),
    ({"kind": "user_provided", "name": "x"}, "purpose is required"),
    ({"kind": "exchange", "name": "x", "host": "h", "smime": {"signing_identity": "s99"}},
     "smime.signingIdentity: 's99' is not a user-provided certificate setting"),
])
def test_invalid_settings_are_refused_with_the_reason(api, body, reason):
    status, answer = api.call("POST", "/api/v2/settings", body)
    assert status == 400 and answer["message"].startswith(reason)


def test_identities_must_match_their_purpose(api):
    api.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "sig", "purpose": "smime_signing"})
    status, answer = api.call("POST", "/api/v2/settings", {
        "kind": "email", **BODIES["email"], "smime": {"encryption_identity": "s1"}})
    assert status == 400
    assert answer["message"] == ("smime.encryptionIdentity: setting s1 is for smime_signing, not "
                               "smime_encryption (one user-provided setting per purpose)")
    status, answer = api.call("POST", "/api/v2/settings", {
        "kind": "email", **BODIES["email"], "smime": {"signing_identity": "s1", "encryption_identity": "s1"}})
    expected = "smime: signing and encryption need two user-provided settings (one per purpose)"
    assert answer["message"] == expected


def test_a_referenced_user_provided_setting_cannot_be_deleted_or_repurposed(api):
    api.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "sig", "purpose": "smime_signing"})
    api.call("POST", "/api/v2/settings", {"kind": "exchange", **BODIES["exchange"],
                                          "smime": {"signing_identity": "s1"}})
    assert api.call("DELETE", "/api/v2/settings/s1") == (
        409, {"code": "conflict", "message": "setting s1 is the S/MIME identity of s2; change those first"})
    status, _ = api.call("PUT", "/api/v2/settings/s1", {"name": "sig", "purpose": "smime_encryption"})
    assert status == 409
    status, answer = api.call("PUT", "/api/v2/settings/s2", {"kind": "email", **BODIES["email"]})
    assert status == 400 and answer["message"] == "setting s2 is of kind exchange; its kind cannot change"


def test_changes_are_announced_so_apply_to_label_can_re_render(api):
    api.call("POST", "/api/v2/users", {"user_id": "alice"})
    api.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "sig", "purpose": "smime_signing"})
    api.call("POST", "/api/v2/settings", {"kind": "exchange", **BODIES["exchange"],
                                          "smime": {"signing_identity": "s1"}})
    # A new user is announced (devices already naming them re-match filter labels); new settings are not.
    assert api.hooks == [("user changed", "alice")]
    api.call("PUT", "/api/v2/settings/s1", {"name": "sig", "purpose": "smime_signing", "display_name": "New"})
    api.call("PUT", "/api/v2/users/alice", {"email": "alice@example.com"})
    upload = {"setting_id": "s1", "p12": b64(p12_for("alice")), "password": PASSWORD}
    api.call("POST", "/api/v2/users/alice/certificates", upload)
    api.call("POST", "/api/v2/users/alice/certificates", upload)  # refused (409): announces nothing
    api.call("DELETE", "/api/v2/settings/s2")
    assert api.hooks == [("user changed", "alice"), ("setting changed", "s1"), ("setting changed", "s2"),
                         ("user changed", "alice"),
                         ("user changed", "alice"), ("setting deleted", "s2")]


def test_unauthorised_requests_are_refused_before_anything_else(api):
    body = {"kind": "exchange", **BODIES["exchange"]}
    status, body = api.call("POST", "/api/v2/settings", body, token="nope")
    assert status == 401 and body == {"code": "unauthorized", "message": "admin credentials required"}
    assert api.call("GET", "/api/v2/settings")[1] == {"items": [], "nextCursor": None}


def test_unknown_routes_and_methods(api):
    assert api.call("GET", "/api/v2/nothing")[0] == 404
    assert api.call("PATCH", "/api/v2/settings/s1")[0] == 405


# Users and certificates ------------------------------------------------------------------------------------


def test_users_crud(api):
    status, created = api.call("POST", "/api/v2/users", {"user_id": "alice", "email": "alice@example.com",
                                                        "custom": {"user_custom1": "Sales"}})
    assert status == 201 and created["custom"] == {"USER_CUSTOM1": "Sales"}
    assert api.call("POST", "/api/v2/users", {"user_id": "alice"})[0] == 409
    edit = {"email": "a@example.com", "display_name": "Alice"}
    status, updated = api.call("PUT", "/api/v2/users/alice", edit)
    assert status == 200 and updated["displayName"] == "Alice" and updated["custom"] == {}
    assert [user["userId"] for user in api.call("GET", "/api/v2/users")[1]["items"]] == ["alice"]
    assert api.call("DELETE", "/api/v2/users/alice") == (200, {"deleted": "alice"})
    assert api.call("GET", "/api/v2/users/alice")[0] == 404


@pytest.mark.parametrize(("body", "reason"), [
    ({"user_id": "a/b"}, "userId must be 1-128 printable characters without spaces or '/'"),
    ({"user_id": "a", "email": "not-an-address"}, "email 'not-an-address' is not an email address"),
    ({"user_id": "a", "custom": {"1bad": "x"}}, "custom attribute name '1bad' must be a letter"),
    ({"user_id": "a", "role": "admin"}, "unknown field role"),
])
def test_invalid_users_are_refused(api, body, reason):
    status, answer = api.call("POST", "/api/v2/users", body)
    assert status == 400 and answer["message"].startswith(reason)


def test_certificates_upload_list_replace_delete_through_the_api(api):
    api.call("POST", "/api/v2/users", {"user_id": "alice", "email": "alice@example.com"})
    api.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "sig", "purpose": "smime_signing"})
    upload = {"setting_id": "s1", "p12": b64(p12_for("alice")), "password": PASSWORD}
    status, first = api.call("POST", "/api/v2/users/alice/certificates", upload)
    assert status == 201 and first["settingIds"] == ["s1"] and first["warnings"] == []
    status, again = api.call("POST", "/api/v2/users/alice/certificates", upload)
    assert status == 409
    replacement = {"p12": b64(p12_for("alice-new")), "password": PASSWORD}
    status, second = api.call("PUT", "/api/v2/users/alice/certificates/s1", replacement)
    assert status == 200 and second["replaced"] == [first["fingerprint"]]
    _, listed = api.call("GET", "/api/v2/users/alice/certificates")
    (slot,) = listed["items"]
    assert slot["settingId"] == "s1"
    assert slot["current"]["fingerprint"] == second["fingerprint"]
    assert slot["current"]["subject"] == "CN=alice-new"
    assert "p12" not in json.dumps(listed) and "password" not in json.dumps(listed)
    status, deleted = api.call("DELETE", "/api/v2/users/alice/certificates/s1")
    assert status == 200 and deleted["deleted"]["fingerprint"] == second["fingerprint"]


def test_upload_errors_reach_the_client(api):
    api.call("POST", "/api/v2/users", {"user_id": "alice"})
    encryption = {"kind": "user_provided", "name": "enc", "purpose": "smime_encryption"}
    api.call("POST", "/api/v2/settings", encryption)
    wrong = {"type": "SMIMEENCRYPTION", "p12": b64(p12_for("alice")), "password": "nope"}
    assert api.call("POST", "/api/v2/users/alice/certificates", wrong) == (
        400, {"code": "invalid_request", "message": "wrong password for this P12 file"})
    not_base64 = {"setting_id": "s1", "p12": "%%%", "password": PASSWORD}
    assert api.call("POST", "/api/v2/users/alice/certificates", not_base64) == (
        400, {"code": "invalid_request", "message": "p12 is not valid base64"})
    v1 = {"type": "SMIMEENCRYPTION", "p12": b64(p12_for("alice")), "password": PASSWORD}
    assert api.call("POST", "/api/v2/users/alice/certificates", v1)[1]["settingIds"] == ["s1"]


def test_missing_certificates_for_a_setting_and_for_the_accounts_using_it(api):
    for user_id in ("alice", "bob"):
        api.call("POST", "/api/v2/users", {"user_id": user_id})
    api.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "sig", "purpose": "smime_signing"})
    api.call("POST", "/api/v2/settings", {"kind": "exchange", **BODIES["exchange"],
                                          "smime": {"signing_identity": "s1"}})
    upload = {"setting_id": "s1", "p12": b64(p12_for("alice")), "password": PASSWORD}
    api.call("POST", "/api/v2/users/alice/certificates", upload)
    for setting_id in ("s1", "s2"):
        status, report = api.call("GET", f"/api/v2/settings/{setting_id}/missing-certificates")
        assert status == 200 and report["identitySettings"] == ["s1"]
        assert [entry["userId"] for entry in report["missing"]] == ["bob"]
    api.call("POST", "/api/v2/settings", {"kind": "certificate", "name": "ca", "certificate": ca_file()})
    assert api.call("GET", "/api/v2/settings/s3/missing-certificates")[0] == 400


def test_deleting_a_user_or_setting_drops_their_identities(api, world):
    api.call("POST", "/api/v2/users", {"user_id": "alice"})
    api.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "sig", "purpose": "smime_signing"})
    upload = {"setting_id": "s1", "p12": b64(p12_for("alice")), "password": PASSWORD}
    api.call("POST", "/api/v2/users/alice/certificates", upload)
    api.call("DELETE", "/api/v2/settings/s1")
    assert world.identities.certificates("alice") == {}
    api.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "sig", "purpose": "smime_signing"})
    api.call("POST", "/api/v2/users/alice/certificates", {**upload, "setting_id": "s2"})
    api.call("DELETE", "/api/v2/users/alice")
    assert world.docs.list("user_identities") == []


# The JSON codec --------------------------------------------------------------------------------------------

_FLAGS = ("enable_for_ios_9_3_3", "signing_enabled", "signing_user_overrideable",
          "signing_identity_user_overrideable", "encryption_by_default",
          "encryption_by_default_user_overrideable", "encryption_identity_user_overrideable",
          "per_message_switch")
_SMIME = st.builds(SMIMEOptions, **{name: st.booleans() for name in _FLAGS})
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="$\x00"), max_size=40)


@settings(max_examples=100, deadline=None)
@given(st.builds(ExchangeSetting, name=_TEXT.filter(str.strip), host=_TEXT.filter(bool), description=_TEXT,
                 account_description=st.none() | _TEXT, use_ssl=st.booleans(),
                 block_third_party_apps=st.booleans(),
                 past_days_to_sync=st.none() | st.sampled_from([0, 1, 3, 7, 14, 31]), smime=_SMIME,
                 audio_call_app=st.none() | _TEXT))
def test_settings_survive_a_json_round_trip(setting):
    body = json.loads(json.dumps(setting_to_json(setting)))
    assert setting_from_json(SettingKind.EXCHANGE, body) == setting


def test_the_certificate_reader_returns_der():
    der = authority().certificate.public_bytes(serialization.Encoding.DER)
    assert read_certificate_file(authority().certificate.public_bytes(serialization.Encoding.PEM)) == der
    with pytest.raises(AdminError):
        read_certificate_file(b"")
