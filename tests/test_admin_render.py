"""Rendering settings into profiles: S/MIME keys per option and iOS version, schema validity, variables."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kits import schema_validator
from kits.admin_kit import PASSWORD, admin_world, authority, device, p12_for
from kits.corpus import SCHEMA, require

from mdm_protocol.plist import decode_plist
from mdm_protocol.profile import validate_profile
from mdm_server.admin.contracts import AdminError, RenderError
from mdm_server.admin.settings import SettingKind

BUCKETS = ["9.3.3", "9.3.5", "10.3", "11.4", "12.0", "17.4"]
SMIME_PREFIX = "SMIME"
EXCHANGE = {"name": "Exchange", "host": "mail.example.com"}
EMAIL = {"name": "IMAP", "incoming": {"host": "imap.example.com", "port": 993},
         "outgoing": {"host": "smtp.example.com", "port": 587}}
BASES = {SettingKind.EXCHANGE: EXCHANGE, SettingKind.EMAIL: EMAIL}
ACCOUNT_TYPES = {SettingKind.EXCHANGE: "com.apple.eas.account", SettingKind.EMAIL: "com.apple.mail.managed"}

# SPEC 7: for each S/MIME option, the key a device of each iOS version reads it from (True when on).
HONOURED = {
    "enable_for_ios_9_3_3": {"9.3.3": "SMIMEEnabled", "9.3.5": "SMIMEEnabled"},
    "signing_enabled": {v: "SMIMESigningEnabled" for v in ("10.3", "11.4", "12.0", "17.4")},
    "encryption_by_default": {"10.3": "SMIMEEncryptionEnabled", "11.4": "SMIMEEncryptionEnabled",
                              "12.0": "SMIMEEncryptByDefault", "17.4": "SMIMEEncryptByDefault"},
    "per_message_switch": {**{v: "SMIMEEnablePerMessageSwitch" for v in ("9.3.3", "9.3.5", "10.3", "11.4")},
                           "12.0": "SMIMEEnableEncryptionPerMessageSwitch",
                           "17.4": "SMIMEEnableEncryptionPerMessageSwitch"},
    "signing_user_overrideable": {v: "SMIMESigningUserOverrideable" for v in ("12.0", "17.4")},
    "signing_identity_user_overrideable": {v: "SMIMESigningCertificateUUIDUserOverrideable"
                                           for v in ("12.0", "17.4")},
    "encryption_by_default_user_overrideable": {v: "SMIMEEncryptByDefaultUserOverrideable"
                                                for v in ("12.0", "17.4")},
    "encryption_identity_user_overrideable": {v: "SMIMEEncryptionCertificateUUIDUserOverrideable"
                                              for v in ("12.0", "17.4")},
}
# Every key each option writes as true, whatever the device (old and new keys side by side).
WRITTEN = {
    "enable_for_ios_9_3_3": {"SMIMEEnabled"},
    "signing_enabled": {"SMIMESigningEnabled"},
    "encryption_by_default": {"SMIMEEncryptionEnabled", "SMIMEEncryptByDefault"},
    "per_message_switch": {"SMIMEEnablePerMessageSwitch", "SMIMEEnableEncryptionPerMessageSwitch"},
    "signing_user_overrideable": {"SMIMESigningUserOverrideable"},
    "signing_identity_user_overrideable": {"SMIMESigningCertificateUUIDUserOverrideable"},
    "encryption_by_default_user_overrideable": {"SMIMEEncryptByDefaultUserOverrideable"},
    "encryption_identity_user_overrideable": {"SMIMEEncryptionCertificateUUIDUserOverrideable"},
}


@pytest.fixture(autouse=True)
def schema_present():
    require(SCHEMA)


@pytest.fixture
def world():
    world = admin_world()
    world.user("alice", custom={"USER_CUSTOM1": "Sales", "USER_CUSTOM4": "B-12"})
    world.smime_pair()
    world.identities.upload("alice", p12_for("alice-sign"), PASSWORD, setting_id="s1")
    world.identities.upload("alice", p12_for("alice-enc"), PASSWORD, setting_id="s2")
    return world


def render(world, kind, body, phone):
    stored = world.settings.create(kind, body)
    return world.renderer.render(stored.setting_id, phone)


def payloads(rendered) -> list[dict]:
    return decode_plist(rendered.profile)["PayloadContent"]


def account(rendered, kind) -> dict:
    return next(p for p in payloads(rendered) if p["PayloadType"] == ACCOUNT_TYPES[kind])


def schema_problems(rendered, os_version) -> list[str]:
    return schema_validator.check_profile(decode_plist(rendered.profile), os_version)


# S/MIME options per iOS version ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BASES))
@pytest.mark.parametrize("option", list(WRITTEN))
def test_each_option_writes_exactly_its_keys(world, kind, option):
    rendered = render(world, kind, {**BASES[kind], "smime": {option: True}}, device())
    payload = account(rendered, kind)
    true_keys = {key for key, value in payload.items() if key.startswith(SMIME_PREFIX) and value}
    assert true_keys == WRITTEN[option]


@pytest.mark.parametrize("kind", list(BASES))
@pytest.mark.parametrize(("option", "os_version"),
                         [(option, version) for option, table in HONOURED.items() for version in table])
def test_each_ios_version_finds_the_key_it_honours(world, kind, option, os_version):
    rendered = render(world, kind, {**BASES[kind], "smime": {option: True}}, device(os_version=os_version))
    payload = account(rendered, kind)
    ignored = schema_validator.ignored_keys(decode_plist(rendered.profile), os_version)
    key = HONOURED[option][os_version]
    assert payload[key] is True and (payload["PayloadIdentifier"], key) not in ignored
    assert schema_problems(rendered, os_version) == []


@pytest.mark.parametrize("kind", list(BASES))
@pytest.mark.parametrize("os_version", ["9.3.3", "9.3.5", "10.3", "11.4"])
def test_ios_12_options_are_ignored_by_older_devices(world, kind, os_version):
    smime = {option: True for option in HONOURED if option.endswith("overrideable")}
    rendered = render(world, kind, {**BASES[kind], "smime": smime}, device(os_version=os_version))
    identifier = account(rendered, kind)["PayloadIdentifier"]
    ignored = schema_validator.ignored_keys(decode_plist(rendered.profile), os_version)
    newer = {key for option in smime for key in WRITTEN[option]}
    assert {(identifier, key) for key in newer} <= ignored
    assert schema_problems(rendered, os_version) == []


def test_smime_enabled_is_written_only_for_the_9_3_3_switch(world):
    body = {**EXCHANGE, "smime": {"signing_enabled": True, "signing_identity": "s1",
                                  "encryption_by_default": True, "encryption_identity": "s2"}}
    assert "SMIMEEnabled" not in account(render(world, SettingKind.EXCHANGE, body, device()),
                                         SettingKind.EXCHANGE)
    body["smime"]["enable_for_ios_9_3_3"] = True
    assert account(render(world, SettingKind.EXCHANGE, body, device()), SettingKind.EXCHANGE)["SMIMEEnabled"]


def test_no_smime_section_writes_no_smime_key(world):
    rendered = render(world, SettingKind.EMAIL, EMAIL, device())
    assert not [key for key in account(rendered, SettingKind.EMAIL) if key.startswith(SMIME_PREFIX)]


@pytest.mark.parametrize("kind", list(BASES))
def test_identities_are_embedded_and_referenced(world, kind):
    smime = {"signing_enabled": True, "signing_identity": "s1", "encryption_identity": "s2"}
    rendered = render(world, kind, {**BASES[kind], "smime": smime}, device())
    by_identifier = {p["PayloadIdentifier"]: p for p in payloads(rendered)}
    signing = by_identifier[f"{rendered.identifier}.smime-signing"]
    encryption = by_identifier[f"{rendered.identifier}.smime-encryption"]
    assert signing["PayloadType"] == encryption["PayloadType"] == "com.apple.security.pkcs12"
    payload = account(rendered, kind)
    assert payload["SMIMESigningCertificateUUID"] == signing["PayloadUUID"]
    assert payload["SMIMEEncryptionCertificateUUID"] == encryption["PayloadUUID"]
    from mdm_server.pki import load_pkcs12

    opened = load_pkcs12(signing["PayloadContent"], signing["Password"])
    assert opened.certificate.subject.rfc4514_string() == "CN=alice-sign"
    assert signing["PayloadDisplayName"] == "Mail signing"


def test_one_v1_all_identity_serving_both_purposes_is_installed_once(world):
    world.user("bob")
    world.identities.upload("bob", p12_for("bob"), PASSWORD, v1_type="ALL")
    smime = {"signing_identity": "s1", "encryption_identity": "s2"}
    rendered = render(world, SettingKind.EXCHANGE, {**EXCHANGE, "smime": smime}, device(user_id="bob"))
    types = [p["PayloadType"] for p in payloads(rendered)]
    assert types.count("com.apple.security.pkcs12") == 1
    payload = account(rendered, SettingKind.EXCHANGE)
    assert payload["SMIMESigningCertificateUUID"] == payload["SMIMEEncryptionCertificateUUID"]


def test_a_user_without_certificates_gets_the_account_and_a_warning(world):
    world.user("bob")
    smime = {"signing_enabled": True, "signing_identity": "s1", "encryption_identity": "s2"}
    rendered = render(world, SettingKind.EXCHANGE, {**EXCHANGE, "smime": smime}, device(user_id="bob"))
    assert [p["PayloadType"] for p in payloads(rendered)] == ["com.apple.eas.account"]
    assert len(rendered.warnings) == 2
    assert rendered.warnings[0].startswith("smime-signing: user bob has not uploaded a certificate")
    assert "encryption does not work" in rendered.warnings[1]


# Exchange and Email fields ---------------------------------------------------------------------------------


def test_exchange_ios_settings_map_to_apple_keys(world):
    body = {**EXCHANGE, "block_third_party_apps": True, "allow_recent_address_syncing": False,
            "allow_move": False, "use_oauth": True, "audio_call_app": "com.example.phone",
            "past_days_to_sync": 14, "enable_notes": False, "account_description": "Work mail"}
    rendered = render(world, SettingKind.EXCHANGE, body, device(os_version="17.4"))
    payload = account(rendered, SettingKind.EXCHANGE)
    assert payload["PreventAppSheet"] is True and payload["disableMailRecentsSyncing"] is True
    assert payload["PreventMove"] is True and payload["OAuth"] is True and "Password" not in payload
    rules = {"DefaultServiceHandlers": {"AudioCall": "com.example.phone"}}
    assert payload["CommunicationServiceRules"] == rules
    assert payload["MailNumberOfPastDaysToSync"] == 14 and payload["EnableNotes"] is False
    assert payload["UserName"] == "alice" and payload["EmailAddress"] == "alice@example.com"
    assert payload["PayloadDisplayName"] == "Work mail"


def test_email_fields_map_to_apple_keys(world):
    body = {**EMAIL, "account_type": "pop", "account_name": "$USERID$ at work",
            "incoming": {"host": "pop.example.com", "authentication": "crammd5", "username": "$EMAIL$"},
            "imap_path_prefix": "INBOX"}
    payload = account(render(world, SettingKind.EMAIL, body, device()), SettingKind.EMAIL)
    assert payload["EmailAccountType"] == "EmailTypePOP"
    assert payload["IncomingMailServerAuthentication"] == "EmailAuthCRAMMD5"
    assert payload["IncomingMailServerUsername"] == "alice@example.com"
    assert payload["EmailAccountName"] == "alice at work"
    assert "IncomingMailServerIMAPPathPrefix" not in payload  # POP has no folders


def test_oauth_on_an_old_device_warns_and_without_host_is_refused(world):
    old_phone = device(os_version="11.4")
    with_host = render(world, SettingKind.EXCHANGE, {**EXCHANGE, "use_oauth": True}, old_phone)
    assert with_host.warnings == ("Use OAuth needs iOS 12.0; this device runs 11.4, so it will ask the user "
                                  "for a password",)
    no_host = world.settings.create(SettingKind.EXCHANGE, {"name": "autodiscover", "use_oauth": True})
    assert "Host" not in account(world.renderer.render(no_host.setting_id, device()), SettingKind.EXCHANGE)
    with pytest.raises(RenderError) as caught:
        world.renderer.render(no_host.setting_id, device(os_version="11.4"))
    assert "Host is required unless OAuth is on" in caught.value.reason


def test_smime_without_the_legacy_switch_warns_on_ios_9(world):
    body = {**EMAIL, "smime": {"signing_enabled": True, "signing_identity": "s1"}}
    rendered = render(world, SettingKind.EMAIL, body, device(os_version="9.3.5"))
    assert rendered.warnings == ("S/MIME is configured but “Enable for iOS 9.3.3 (or earlier)” is off: this "
                                 "device runs 9.3.5 and will not use S/MIME",)


def test_the_two_exchange_servers_of_the_brief(world):
    first = world.settings.create(SettingKind.EXCHANGE, {
        "name": "Exchange 1", "host": "ex1.example.com",
        "smime": {"encryption_by_default": True, "encryption_identity": "s2"}})
    second = world.settings.create(SettingKind.EXCHANGE, {
        "name": "Exchange 2", "host": "ex2.example.com",
        "smime": {"per_message_switch": True, "encryption_identity": "s2"}})
    phone = device(os_version="12.0")
    one, two = (world.renderer.render(s.setting_id, phone) for s in (first, second))
    assert one.identifier != two.identifier
    assert account(one, SettingKind.EXCHANGE)["SMIMEEncryptByDefault"] is True
    assert account(two, SettingKind.EXCHANGE)["SMIMEEnableEncryptionPerMessageSwitch"] is True
    assert account(two, SettingKind.EXCHANGE)["SMIMEEncryptByDefault"] is False
    assert world.renderer.account_key(first.setting_id, phone) == ("ex1.example.com", "alice")
    assert world.renderer.smime_encryption(first.setting_id)
    assert world.renderer.smime_encryption(second.setting_id)


# Certificate and user-provided settings --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_a_certificate_setting_becomes_a_root_payload(world, encoding):
    import base64

    data = authority().certificate.public_bytes(encoding)
    body = {"name": "Mail CA", "certificate": base64.b64encode(data).decode(), "file_name": "mail-ca.cer"}
    rendered = render(world, SettingKind.CERTIFICATE, body, device())
    (root,) = payloads(rendered)
    assert root["PayloadType"] == "com.apple.security.root"
    assert root["PayloadContent"] == authority().certificate.public_bytes(serialization.Encoding.DER)
    assert root["PayloadCertificateFileName"] == "mail-ca.cer"
    assert schema_problems(rendered, "9.3.3") == []
    assert world.renderer.smime_encryption(rendered.setting_id) is False


def test_user_provided_settings_render_nowhere_and_never_reach_labels(world):
    with pytest.raises(RenderError):
        world.renderer.render("s1", device())
    with pytest.raises(AdminError) as caught:
        world.renderer.check_applicable_to_label("s1")
    assert "must not be applied to labels" in caught.value.reason
    assert world.renderer.setting_kind("s1") == "user_provided"
    with pytest.raises(AdminError) as unknown:
        world.renderer.setting_kind("s99")
    assert unknown.value.status == 404


# Variables -------------------------------------------------------------------------------------------------


def test_variables_are_substituted_per_device_and_user(world):
    body = {**EXCHANGE, "user_name": "corp\\$USERID$", "email_address": "$EMAIL$",
            "account_description": "$USER_CUSTOM1$ $USER_CUSTOM4$ $DEVICE_UUID_NO_DASHES$"}
    rendered = render(world, SettingKind.EXCHANGE, body, device("00008030-001A35E22E08402E"))
    payload = account(rendered, SettingKind.EXCHANGE)
    assert payload["UserName"] == "corp\\alice" and payload["EmailAddress"] == "alice@example.com"
    assert payload["PayloadDisplayName"] == "Sales B-12 00008030001A35E22E08402E"
    assert b"$" not in rendered.profile


@pytest.mark.parametrize("facts", [
    {"product": "iPad8,1", "IsMultiUser": True},
    {"device_id": "ENROLLMENT-1", "UDID": None, "EnrollmentID": "ENROLLMENT-1"},
])
def test_managed_apple_id_on_shared_ipad_and_user_enrollment(world, facts):
    custom = {"MANAGED_APPLE_ID": "alice@appleid.example"}
    world.users.update("alice", {"email": "alice@example.com", "custom": custom})
    body = {**EXCHANGE, "user_name": "$MANAGED_APPLE_ID$"}
    rendered = render(world, SettingKind.EXCHANGE, body, device(**facts))
    assert account(rendered, SettingKind.EXCHANGE)["UserName"] == "alice@appleid.example"


@pytest.mark.parametrize(("facts", "kind"), [
    ({"product": "iPhone15,2"}, "iPhone (iPhone15,2)"),
    ({"product": "iPad8,1"}, "iPad (iPad8,1)"),
    ({"product": "iPad8,1", "IsMultiUser": False}, "iPad (iPad8,1)"),
])
def test_managed_apple_id_elsewhere_is_an_error_the_admin_sees(world, facts, kind):
    world.users.update("alice", {"custom": {"MANAGED_APPLE_ID": "alice@appleid.example"}})
    stored = world.settings.create(SettingKind.EXCHANGE, {**EXCHANGE, "user_name": "$MANAGED_APPLE_ID$"})
    with pytest.raises(RenderError) as caught:
        world.renderer.render(stored.setting_id, device("UDID-9", **facts))
    assert caught.value.reason == ("$MANAGED_APPLE_ID$ is only available on Shared iPad and User Enrollment "
                                   f"devices; device UDID-9 is {kind}")


@pytest.mark.parametrize(("template", "phone", "needle"), [
    ("$USERID$", device(user_id=None), "$USERID$ needs the device's user, but it has no user"),
    ("$EMAIL$", device(user_id="ghost"), "$EMAIL$ needs the device's user, but user 'ghost' is unknown"),
    ("$USER_CUSTOM2$", device(), "$USER_CUSTOM2$: user 'alice' has no value for it"),
    ("$MANAGED_APPLE_ID$", device(product="iPad8,1", IsMultiUser=True), "no Managed Apple ID known"),
])
def test_missing_variable_values_are_render_errors(world, template, phone, needle):
    stored = world.settings.create(SettingKind.EXCHANGE, {**EXCHANGE, "user_name": template})
    with pytest.raises(RenderError) as caught:
        world.renderer.render(stored.setting_id, phone)
    assert needle in caught.value.reason


def test_unknown_variables_are_refused_when_the_setting_is_saved(world):
    with pytest.raises(AdminError) as caught:
        world.settings.create(SettingKind.EXCHANGE, {**EXCHANGE, "user_name": "$USER_ID$"})
    assert caught.value.reason.startswith("userName: unknown variable $USER_ID$")


# Identity and content hash ---------------------------------------------------------------------------------


def test_renders_of_unchanged_input_are_identical(world):
    body = {**EXCHANGE, "smime": {"signing_enabled": True, "signing_identity": "s1"}}
    stored = world.settings.create(SettingKind.EXCHANGE, body)
    first = world.renderer.render(stored.setting_id, device())
    again = world.renderer.render(stored.setting_id, device())
    from mdm_server.admin.render import SettingsRenderer

    fresh_renderer = SettingsRenderer(world.settings, world.users, world.identities)
    fresh = fresh_renderer.render(stored.setting_id, device())
    assert first == again == fresh
    assert first.identifier == f"com.mdmsim.setting.{stored.setting_id}"
    updated = world.settings.update(stored.setting_id, body)  # saved again, nothing changed
    assert updated.version == 2
    assert world.renderer.render(stored.setting_id, device()).content_hash == first.content_hash


@pytest.mark.parametrize("change", ["setting", "email", "certificate", "device"])
def test_the_content_hash_follows_what_the_device_would_read(world, change):
    body = {**EXCHANGE, "smime": {"signing_enabled": True, "signing_identity": "s1"}}
    stored = world.settings.create(SettingKind.EXCHANGE, body)
    before = world.renderer.render(stored.setting_id, device())
    phone = device()
    if change == "setting":
        world.settings.update(stored.setting_id, {**body, "host": "mail2.example.com"})
    elif change == "email":
        world.users.update("alice", {"email": "alice@new.example.com"})
    elif change == "certificate":
        world.identities.upload("alice", p12_for("alice-2"), PASSWORD, setting_id="s1", replace=True)
    else:
        phone = device("UDID-OTHER")
    after = world.renderer.render(stored.setting_id, phone)
    if change == "device":  # same user, same setting: the same content for any of the user's devices
        assert after.content_hash == before.content_hash and after.identifier == before.identifier
        return
    assert after.content_hash != before.content_hash and after.identifier == before.identifier
    old_uuids = {p["PayloadUUID"] for p in payloads(before)}
    assert not old_uuids & {p["PayloadUUID"] for p in payloads(after)}


# Every rendered profile validates --------------------------------------------------------------------------

_SMIME = st.fixed_dictionaries({}, optional={
    **{option: st.booleans() for option in WRITTEN},
    "signing_identity": st.just("s1"), "encryption_identity": st.just("s2"),
})
_EXCHANGE_REQUIRED = {"name": st.just("Exchange"), "host": st.just("mail.example.com")}
_EXCHANGE = st.fixed_dictionaries(_EXCHANGE_REQUIRED, optional={
    "use_ssl": st.booleans(), "allow_move": st.booleans(), "block_third_party_apps": st.booleans(),
    "allow_recent_address_syncing": st.booleans(), "allow_mail_drop": st.booleans(),
    "use_oauth": st.booleans(),
    "past_days_to_sync": st.sampled_from([0, 1, 3, 7, 14, 31]), "audio_call_app": st.just("com.example.call"),
    "enable_contacts": st.booleans(), "enable_notes": st.booleans(), "smime": _SMIME,
    "user_name": st.sampled_from(["$USERID$", "$EMAIL$", "corp\\$USERID$", "$USER_CUSTOM1$"]),
})
_EMAIL = st.fixed_dictionaries({
    "name": st.just("Mail"), "account_type": st.sampled_from(["imap", "pop"]),
    "incoming": st.fixed_dictionaries({"host": st.just("in.example.com")}, optional={
        "port": st.integers(1, 65535), "use_ssl": st.booleans(),
        "authentication": st.sampled_from(["none", "password", "crammd5", "ntlm", "httpmd5"])}),
    "outgoing": st.fixed_dictionaries({"host": st.just("out.example.com")}, optional={
        "port": st.integers(1, 65535), "username": st.just("$EMAIL$")}),
}, optional={"allow_move": st.booleans(), "block_third_party_apps": st.booleans(), "smime": _SMIME,
             "imap_path_prefix": st.just("INBOX"), "account_name": st.just("$USERID$")})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from([SettingKind.EXCHANGE, SettingKind.EMAIL]), data=st.data())
def test_every_rendered_profile_validates_against_apples_schema(world, kind, data):
    body = data.draw(_EXCHANGE if kind is SettingKind.EXCHANGE else _EMAIL)
    stored = world.settings.create(kind, body)
    for os_version in BUCKETS:
        rendered = world.renderer.render(stored.setting_id, device(os_version=os_version))
        plist = decode_plist(rendered.profile)
        assert schema_validator.check_profile(plist, os_version) == []
        validate_profile(rendered.profile, os_version=os_version)
    assert schema_validator.check_profile(plist) == []
