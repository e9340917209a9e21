"""Users and their P12 uploads: validation errors, replacement and key history, V1 types, key deletion."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given, settings
from hypothesis import strategies as st
from kits.admin_kit import PASSWORD, admin_world, authority, device, identity, p12_for, two_key_p12

from mdm_protocol.plist import decode_plist
from mdm_server.admin import identities as identities_module
from mdm_server.admin import p12_upload
from mdm_server.admin.contracts import AdminError
from mdm_server.admin.pkcs12_bags import Pkcs12FormatError, count_bags, is_pkcs12
from mdm_server.admin.secrets_at_rest import KEY_FILE, SecretBox
from mdm_server.admin.settings import SettingKind
from mdm_server.pki import Pkcs12Encryption, load_pkcs12


@pytest.fixture
def world():
    world = admin_world()
    world.user("alice")
    return world


@pytest.fixture
def pair(world):
    return world.smime_pair()


def reason_of(call) -> str:
    with pytest.raises(AdminError) as caught:
        call()
    return caught.value.reason


# Upload checks ---------------------------------------------------------------------------------------------


def test_wrong_password_is_named(world, pair):
    reason = reason_of(lambda: world.identities.upload("alice", p12_for("alice"), "wrong", setting_id="s1"))
    assert reason == "wrong password for this P12 file"


@pytest.mark.parametrize("data", [b"not a p12 at all", b"\x30\x03\x02\x01\x03"])
def test_a_file_that_is_not_pkcs12_is_named(world, pair, data):
    reason = reason_of(lambda: world.identities.upload("alice", data, PASSWORD, setting_id="s1"))
    assert reason == "the file is not a PKCS#12 (.p12/.pfx) file"


def test_a_p12_without_private_key_is_refused(world, pair):
    certificate, _ = identity("alice")
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    no_key = pkcs12.serialize_key_and_certificates(b"alice", None, certificate, None, encryption)
    reason = reason_of(lambda: world.identities.upload("alice", no_key, PASSWORD, setting_id="s1"))
    assert reason.startswith("the P12 holds no private key")


def test_a_p12_with_two_private_keys_is_refused(world, pair):
    data = two_key_p12()
    load_pkcs12(data, PASSWORD)  # OpenSSL opens it happily and keeps one key: that is the trap
    assert count_bags(data, PASSWORD).private_keys == 2
    reason = reason_of(lambda: world.identities.upload("alice", data, PASSWORD, setting_id="s1"))
    assert reason.startswith("the P12 holds 2 private keys")


def test_an_expired_certificate_is_accepted_with_a_warning(world, pair):
    result = world.identities.upload("alice", p12_for("old", expired=True), PASSWORD, setting_id="s1")
    assert len(result.warnings) == 1 and result.warnings[0].startswith("the certificate expired on")
    missing = world.identities.missing("s1")
    assert [entry["user_id"] for entry in missing] == ["alice"]
    assert "expired" in missing[0]["reason"]


def test_a_password_is_required_unless_the_setting_waives_it(world):
    strict = world.settings.create(SettingKind.USER_PROVIDED, {"name": "strict", "purpose": "vpn"})
    relaxed = world.settings.create(SettingKind.USER_PROVIDED,
                                    {"name": "relaxed", "purpose": "wifi", "require_password": False})
    certificate, key = identity("alice")
    bare = pkcs12.serialize_key_and_certificates(b"a", key, certificate, None, serialization.NoEncryption())
    reason = reason_of(lambda: world.identities.upload("alice", bare, "", setting_id=strict.setting_id))
    assert reason.startswith("this certificate setting requires a password-protected P12")
    world.identities.upload("alice", bare, None, setting_id=relaxed.setting_id)
    embedded = world.identities.profile_identity("alice", relaxed.setting_id).identity
    # What profiles carry is always protected: re-exported with a random password in the legacy suite.
    assert embedded.password and load_pkcs12(embedded.p12, embedded.password).certificate == certificate


def test_uploads_go_only_to_users_and_user_provided_settings(world, pair):
    world.settings.create(SettingKind.EXCHANGE, {"name": "x", "host": "mail.example.com"})
    assert reason_of(lambda: world.identities.upload("bob", p12_for("b"), PASSWORD, setting_id="s1")) == \
        "no user 'bob'"
    reason = reason_of(lambda: world.identities.upload("alice", p12_for("a"), PASSWORD, setting_id="s3"))
    assert reason == ("setting s3 is of kind exchange; certificates are uploaded for user-provided "
                      "certificate settings")


# Replace, history, delete ----------------------------------------------------------------------------------


def test_replace_keeps_the_old_identity_in_the_key_history(world, pair):
    first = world.identities.upload("alice", p12_for("alice-2024"), PASSWORD, setting_id="s2")
    with pytest.raises(AdminError) as twice:
        world.identities.upload("alice", p12_for("alice-2025"), PASSWORD, setting_id="s2")
    assert twice.value.status == 409
    world.advance(days=30)
    second = world.identities.upload("alice", p12_for("alice-2025"), PASSWORD, setting_id="s2", replace=True)
    assert second.replaced == (first.fingerprint,)
    slot = world.identities.certificates("alice")["s2"]
    assert slot["current"]["fingerprint"] == second.fingerprint
    assert [entry["fingerprint"] for entry in slot["history"]] == [first.fingerprint]
    assert slot["history"][0]["replaced_at"].startswith("2025-07-01")
    assert slot["history"][0]["private_key_present"]  # archived keys keep old mail readable
    assert world.identities.profile_identity("alice", "s2").identity.fingerprint == second.fingerprint


def test_replace_without_a_current_identity_is_not_found(world, pair):
    with pytest.raises(AdminError) as caught:
        world.identities.upload("alice", p12_for("a"), PASSWORD, setting_id="s1", replace=True)
    assert caught.value.status == 404


def test_delete_removes_the_current_identity_and_keeps_history(world, pair):
    world.identities.upload("alice", p12_for("one"), PASSWORD, setting_id="s1")
    world.identities.upload("alice", p12_for("two"), PASSWORD, setting_id="s1", replace=True)
    deleted = world.identities.delete("alice", "s1")
    assert "p12" not in deleted and "password" not in deleted
    lookup = world.identities.profile_identity("alice", "s1")
    assert lookup.identity is None and "has not uploaded a certificate" in lookup.reason
    assert len(world.identities.certificates("alice")["s1"]["history"]) == 1
    with pytest.raises(AdminError):
        world.identities.delete("alice", "s1")


# V1 certificate types --------------------------------------------------------------------------------------


def test_v1_types_map_to_the_setting_of_their_purpose(world, pair):
    signing, encryption = pair
    result = world.identities.upload("alice", p12_for("a"), PASSWORD, v1_type="SMIMEENCRYPTION")
    assert result.setting_ids == (encryption.setting_id,)
    assert world.identities.certificates("alice")[encryption.setting_id]["current"]["source"] == \
        "v1:SMIMEENCRYPTION"


def test_v1_all_reaches_every_user_provided_setting(world, pair):
    result = world.identities.upload("alice", p12_for("a"), PASSWORD, v1_type="All")
    assert result.setting_ids == ("s1", "s2")


@pytest.mark.parametrize(("v1_type", "status", "start"), [
    ("WIFI", 409, "no user-provided certificate setting serves V1 type WIFI"),
    ("CARRIER_PIGEON", 400, "unknown V1 certificate type"),
])
def test_v1_types_without_a_unique_setting_are_refused(world, pair, v1_type, status, start):
    with pytest.raises(AdminError) as caught:
        world.identities.upload("alice", p12_for("a"), PASSWORD, v1_type=v1_type)
    assert caught.value.status == status and caught.value.reason.startswith(start)


def test_a_v1_type_matching_two_settings_asks_for_setting_id(world, pair):
    world.settings.create(SettingKind.USER_PROVIDED, {"name": "second signer", "purpose": "smime_signing"})
    data = p12_for("a")
    reason = reason_of(lambda: world.identities.upload("alice", data, PASSWORD, v1_type="SMIMESIGNING"))
    assert reason == "V1 type SMIMESIGNING matches settings s1, s3; give settingId instead"


# Deletion after N days -------------------------------------------------------------------------------------


def test_private_keys_are_deleted_after_n_days_and_renders_say_so(world):
    signing, _ = world.smime_pair(delete_after=3)
    exchange = world.settings.create(SettingKind.EXCHANGE, {
        "name": "Mail", "host": "mail.example.com",
        "smime": {"signing_enabled": True, "signing_identity": signing.setting_id}})
    world.identities.upload("alice", p12_for("alice"), PASSWORD, setting_id=signing.setting_id)
    phone = device()
    world.advance(days=2, hours=23)
    before = world.renderer.render(exchange.setting_id, phone)
    assert _types(before.profile).count("com.apple.security.pkcs12") == 1 and before.warnings == ()
    world.advance(hours=1)
    after = world.renderer.render(exchange.setting_id, phone)
    assert "com.apple.security.pkcs12" not in _types(after.profile)
    assert "SMIMESigningCertificateUUID" not in decode_plist(after.profile)["PayloadContent"][0]
    assert len(after.warnings) == 1
    assert "was deleted on 2025-06-04 (the setting deletes keys after 3 days)" in after.warnings[0]
    stored = world.docs.get(identities_module.DOCUMENT_KIND, "alice")[signing.setting_id]["current"]
    assert stored["p12"] is None and stored["password"] is None and stored["key_deleted_at"]


def test_the_periodic_purge_reaches_archived_keys_and_reports_them(world):
    signing, _ = world.smime_pair(delete_after=15)
    world.identities.upload("alice", p12_for("old"), PASSWORD, setting_id=signing.setting_id)
    world.advance(days=10)
    world.identities.upload("alice", p12_for("new"), PASSWORD, setting_id=signing.setting_id, replace=True)
    world.advance(days=6)
    purged = world.identities.purge_expired_keys()
    assert [entry["user_id"] for entry in purged] == ["alice"]
    slot = world.identities.certificates("alice")[signing.setting_id]
    assert slot["current"]["private_key_present"] and not slot["history"][0]["private_key_present"]
    assert world.identities.purge_expired_keys() == []  # nothing twice


def test_missing_certificates_lists_users_with_reasons(world, pair):
    world.user("bob")
    world.user("carol")
    world.identities.upload("alice", p12_for("a"), PASSWORD, setting_id="s1")
    missing = world.identities.missing("s1")
    assert [entry["user_id"] for entry in missing] == ["bob", "carol"]
    expected = "has not uploaded a certificate for “Mail signing” (s1)"
    assert all(expected in entry["reason"] for entry in missing)


# Rendering never re-parses P12s ----------------------------------------------------------------------------


def test_rendering_reads_the_stored_p12_without_parsing_it(world, pair, monkeypatch):
    exchange = world.settings.create(SettingKind.EXCHANGE, {
        "name": "Mail", "host": "mail.example.com",
        "smime": {"signing_identity": "s1", "encryption_identity": "s2", "signing_enabled": True}})
    world.identities.upload("alice", p12_for("a"), PASSWORD, setting_id="s1")
    world.identities.upload("alice", p12_for("b"), PASSWORD, setting_id="s2")

    def forbidden(*args, **kwargs):
        raise AssertionError("a P12 was parsed during rendering")

    monkeypatch.setattr(p12_upload, "load_pkcs12", forbidden)
    monkeypatch.setattr(pkcs12, "load_pkcs12", forbidden)
    monkeypatch.setattr(pkcs12, "load_key_and_certificates", forbidden)
    for index in range(3):
        rendered = world.renderer.render(exchange.setting_id, device(f"UDID-{index}"))
        assert _types(rendered.profile).count("com.apple.security.pkcs12") == 2


# Secrets at rest -------------------------------------------------------------------------------------------


def test_keys_and_passwords_are_sealed_at_rest(tmp_path):
    box = SecretBox.load_or_create(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    world = admin_world(str(tmp_path / "admin.sqlite3"), box)
    world.user("alice")
    world.smime_pair()
    world.identities.upload("alice", p12_for("alice"), PASSWORD, setting_id="s1")
    embedded = world.identities.profile_identity("alice", "s1").identity
    world.docs.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("admin.sqlite3*"))
    assert embedded.password.encode() not in raw and PASSWORD.encode() not in raw
    assert embedded.p12[16:64] not in raw
    reopened = admin_world(str(tmp_path / "admin.sqlite3"), SecretBox.load_or_create(tmp_path))
    assert reopened.identities.profile_identity("alice", "s1").identity == embedded
    stranger = admin_world(str(tmp_path / "admin.sqlite3"), SecretBox.ephemeral())
    with pytest.raises(AdminError) as caught:
        stranger.identities.profile_identity("alice", "s1")
    assert caught.value.status == 500 and "cannot be opened" in caught.value.reason


def test_a_sealed_secret_opens_only_in_its_own_record():
    box = SecretBox.ephemeral()
    token = box.seal(b"private key", "alice/s1/abc/p12")
    assert box.open(token, "alice/s1/abc/p12") == b"private key"
    with pytest.raises(AdminError):
        box.open(token, "mallory/s1/abc/p12")


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    SecretBox.load_or_create(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(AdminError) as caught:
        SecretBox.load_or_create(tmp_path)
    assert "chmod 600" in caught.value.reason


# PKCS#12 structure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("encryption", list(Pkcs12Encryption))
def test_bag_counts_see_inside_encrypted_parts(encryption):
    data = p12_for("alice", encryption=encryption)
    assert count_bags(data, PASSWORD).private_keys == 1
    assert count_bags(data, PASSWORD).certificates == 2  # the leaf and its CA
    assert count_bags(data, "wrong").unreadable_containers == 1


def test_the_ca_file_is_not_a_pkcs12():
    der = authority().certificate.public_bytes(serialization.Encoding.DER)
    assert not is_pkcs12(der)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_bag_counting_refuses_garbage_with_its_own_error(data):
    with contextlib.suppress(Pkcs12FormatError):  # anything else escaping fails the test
        count_bags(data, "pw")


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2000))
def test_a_truncated_p12_is_never_mistaken_for_a_good_one(cut):
    data = p12_for("alice")
    cut = min(cut, len(data) - 1)
    with pytest.raises(Pkcs12FormatError):
        count_bags(data[:cut], PASSWORD)


def _types(profile: bytes) -> list[str]:
    return [payload["PayloadType"] for payload in decode_plist(profile)["PayloadContent"]]
