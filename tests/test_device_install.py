"""Device install rules: every refusal with iOS's exact ErrorChain, replacement, atomicity, ignored keys,
RemoveProfile errors, and what ProfileList and CertificateList report.
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kits.corpus import DEVICE_MESSAGES, require
from kits.keychain_pki import NOW, certificate, der, new_key, p12, pki
from kits.profile_kit import exchange, imap, profile_bytes

from device_sim.install_rules import ExchangeAccount
from device_sim.profiles import AccountError, DeviceProfiles
from mdm_protocol.commands import parse_profile_list, profile_list_response
from mdm_protocol.key_catalogue import Support
from mdm_protocol.payloads import (
    configuration_profile,
    mdm_payload,
    pkcs1_payload,
    pkcs12_payload,
    root_certificate_payload,
    scep_payload,
)
from mdm_protocol.plist import decode_plist, encode_plist
from mdm_protocol.profile import Payload

IOS = "17.1"
INSTALL_FAILED = [(4001, "MCInstallationErrorDomain", "Profile Installation Failed"),
                  (4001, "MCInstallationErrorDomain", "Profile Failed to Install")]


def chain(result: Any) -> list[tuple[int, str, str]]:
    """(code, domain, description) per item; also checks both descriptions agree, as iOS sends them."""
    for item in result.error_chain:
        assert item.us_english_description == item.localized_description
    return [(item.code, item.domain, item.localized_description) for item in result.error_chain]


def failed_install(profile_name: str, cause: tuple[int, str, str]) -> list[tuple[int, str, str]]:
    profile = (1009, "MCProfileErrorDomain", f"The profile “{profile_name}” could not be installed.")
    return [*INSTALL_FAILED, profile, cause]


def root() -> Payload:
    return root_certificate_payload(der(pki().ca), identifier="com.example.root", file_name="ca.cer")


def alice_p12(password: str | None = "secret", *, uuid: str | None = None,
              identifier: str = "com.example.alice", file_name: str | None = "alice.p12",
              data: bytes | None = None) -> Payload:
    data = data if data is not None else p12(pki().alice, pki().alice_key)
    return pkcs12_payload(data, identifier=identifier, password=password, uuid=uuid, file_name=file_name)


def snapshot(device: DeviceProfiles) -> tuple:
    """Everything an install could change, comparably."""
    keychain = device.keychain
    return (tuple((p.identifier, p.uuid, p.payloads) for p in device),
            tuple((i.payload_uuid, i.profile_identifier, der(i.certificate), i.has_private_key,
                   i.installed_at) for i in keychain.identities()),
            tuple((der(c.certificate), c.profile_identifier, c.trusted_root)
                  for c in keychain.certificates()),
            tuple(der(item.certificate) for item in keychain.archive))


# --- parse and schema failures (mdm_protocol's validation, unchanged) ------------------------------------

def test_unparseable_bytes_are_4000_invalid_profile_then_1000():
    result = DeviceProfiles().install(b"\x00garbage", os_version=IOS, now=NOW)
    assert not result.ok and result.profile is None
    assert chain(result) == [(4000, "MCInstallationErrorDomain", "Invalid Profile"),
                             (1000, "MCProfileErrorDomain", "Invalid Profile")]


def _raw(**changes: Any) -> bytes:
    plist = configuration_profile([root(), alice_p12()], identifier="com.example.raw").to_plist()
    for key, value in changes.items():
        if value is None:
            del plist[key]
        else:
            plist[key] = value
    return encode_plist(plist)


def _with_payloads(mutate) -> bytes:
    plist = configuration_profile([root(), alice_p12()], identifier="com.example.raw").to_plist()
    mutate(plist["PayloadContent"])
    return encode_plist(plist)


@pytest.mark.parametrize(("data", "cause"), [
    (_raw(PayloadUUID=None), (1002, "MCProfileErrorDomain")),
    (_raw(PayloadIdentifier=7), (1003, "MCProfileErrorDomain")),
    (_with_payloads(lambda items: items[1].update(PayloadUUID=items[0]["PayloadUUID"])),
     (1007, "MCProfileErrorDomain")),
    (_with_payloads(lambda items: items[1].update(PayloadIdentifier=items[0]["PayloadIdentifier"])),
     (1008, "MCProfileErrorDomain")),
    (_with_payloads(lambda items: items[0].pop("PayloadContent")), (2002, "MCPayloadErrorDomain")),
    (_with_payloads(lambda items: items[1].update(Password=1234)), (2003, "MCPayloadErrorDomain")),
    (_with_payloads(lambda items: items[1].update(PayloadVersion=2)), (2004, "MCPayloadErrorDomain")),
])
def test_schema_refusals_keep_the_validation_chain(data, cause):
    device = DeviceProfiles()
    result = device.install(data, os_version=IOS, now=NOW)
    codes = [(code, domain) for code, domain, _ in chain(result)]
    assert codes == [(4000, "MCInstallationErrorDomain"), cause]
    assert len(device) == 0 and device.keychain.identities() == ()


def test_encrypted_profile_without_a_decryptor_is_1006():
    plist = {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.enc",
             "PayloadUUID": "E", "IsEncrypted": True, "EncryptedPayloadContent": b"\x30\x00"}
    result = DeviceProfiles().install(encode_plist(plist), os_version=IOS, now=NOW)
    cause = (1006, "MCProfileErrorDomain", "Cannot decrypt")
    assert chain(result) == failed_install("com.example.enc", cause)


# --- certificates and identities --------------------------------------------------------------------------

@pytest.mark.parametrize("password", ["wrong", None, ""])
def test_p12_with_a_wrong_or_missing_password_is_9000_with_ios_text(password):
    device = DeviceProfiles()
    result = device.install(profile_bytes(root(), alice_p12(password), display_name="Alice S/MIME"),
                            os_version=IOS, now=NOW)
    assert chain(result) == failed_install("Alice S/MIME", (
        9000, "MCCertificateErrorDomain", 'The password for the certificate "alice.p12" is incorrect.'))
    assert "password" in result.reason


def test_9000_names_the_payload_when_there_is_no_file_name():
    payload = alice_p12("wrong", file_name=None)
    result = DeviceProfiles().install(profile_bytes(payload), os_version=IOS, now=NOW)
    assert chain(result)[-1][2] == 'The password for the certificate "com.example.alice" is incorrect.'


@pytest.mark.parametrize(("data", "code", "text"), [
    (p12(pki().alice, None), 9006, "Certificate is not an identity (“alice.p12”)"),
    (p12(None, pki().alice_key), 9006, "Certificate is not an identity (“alice.p12”)"),
    (p12(pki().alice, pki().alice_key, cas=(pki().bob,)), 9001,
     "Too many certificates in payload (“alice.p12”)"),
    (b"not a pkcs12 at all", 9005, "Malformed certificate (“alice.p12”)"),
    (p12(pki().alice, pki().alice_key)[:-40], 9005, "Malformed certificate (“alice.p12”)"),  # cut short
])
def test_p12_without_exactly_one_identity_is_refused(data, code, text):
    result = DeviceProfiles().install(profile_bytes(alice_p12(data=data)), os_version=IOS, now=NOW)
    assert chain(result) == failed_install("com.example.profile", (code, "MCCertificateErrorDomain", text))


def test_p12_may_carry_its_ca_chain():
    device = DeviceProfiles()
    data = p12(pki().alice, pki().alice_key, cas=(pki().ca,))
    assert device.install(profile_bytes(alice_p12(data=data)), os_version=IOS, now=NOW).ok
    (alice,) = device.keychain.identities()
    assert alice.chain == (pki().ca,) and pki().ca not in device.keychain.trusted_roots()


def test_malformed_root_certificate_is_9005():
    bad = root_certificate_payload(b"\x30\x03\x02\x01\x00", identifier="com.example.root", file_name="ca.cer")
    result = DeviceProfiles().install(profile_bytes(bad), os_version=IOS, now=NOW)
    assert chain(result)[-1] == (9005, "MCCertificateErrorDomain", "Malformed certificate (“ca.cer”)")


def test_certificates_land_in_the_keychain_roots_trusted_others_not():
    device = DeviceProfiles()
    plain = pkcs1_payload(der(pki().bob), identifier="com.example.bob")
    result = device.install(profile_bytes(root(), plain, alice_p12()), os_version=IOS, now=NOW)
    assert result.ok and result.replaced_identifier is None
    assert device.keychain.trusted_roots() == (pki().ca,)
    (alice,) = device.keychain.identities()
    assert alice.file_name == "alice.p12" and alice.installed_at == NOW
    assert device.keychain.usable(alice, NOW)[0]


# --- replacement and atomicity ----------------------------------------------------------------------------

def test_same_identifier_replaces_the_profile_and_archives_the_old_key():
    device = DeviceProfiles()
    assert device.install(profile_bytes(root(), alice_p12(uuid="A")), os_version=IOS, now=NOW).ok
    bob = pkcs12_payload(p12(pki().bob, pki().bob_key), identifier="com.example.bob", password="secret",
                         uuid="B")
    later = NOW + timedelta(days=1)
    result = device.install(profile_bytes(root(), bob), os_version=IOS, now=later)
    assert result.ok and result.replaced_identifier == "com.example.profile"
    assert len(device) == 1 and device.get("com.example.profile").installed_at == later
    assert [i.payload_uuid for i in device.keychain.identities()] == ["B"]
    assert [item.certificate for item in device.keychain.archive] == [pki().alice]
    assert len(device.keychain.trusted_roots()) == 1


def test_an_identity_updated_in_place_keeps_its_age_and_stays_out_of_the_archive():
    device = DeviceProfiles()
    device.install(profile_bytes(root(), alice_p12(uuid="A")), os_version=IOS, now=NOW)
    device.install(profile_bytes(root(), alice_p12(uuid="A")), os_version=IOS, now=NOW + timedelta(days=3))
    (alice,) = device.keychain.identities()
    assert alice.installed_at == NOW and device.keychain.archive == ()


def test_a_refused_install_changes_nothing():
    device = DeviceProfiles()
    device.install(profile_bytes(exchange(), identifier="com.example.first"), os_version=IOS, now=NOW)
    before = snapshot(device)
    # The root and identity are fine; the account clash comes last: none of it may stay behind.
    result = device.install(profile_bytes(root(), alice_p12(), exchange("com.example.eas2"),
                                          identifier="com.example.second"), os_version=IOS, now=NOW)
    assert not result.ok and snapshot(device) == before


def test_a_refused_replacement_keeps_the_old_profile_and_its_keys():
    device = DeviceProfiles()
    device.install(profile_bytes(root(), alice_p12(uuid="A")), os_version=IOS, now=NOW)
    before = snapshot(device)
    result = device.install(profile_bytes(root(), alice_p12("wrong", uuid="B")), os_version=IOS, now=NOW)
    assert not result.ok and snapshot(device) == before and device.keychain.archive == ()


POOL_IDS = ("com.example.a", "com.example.b", "com.example.c", "com.example.d")


@functools.cache
def pool() -> tuple[bytes, ...]:
    """Profiles whose outcome depends on what is installed: replacements, clashes, references, failures."""
    bob = pkcs12_payload(p12(pki().bob, pki().bob_key), identifier="com.example.bob", password="secret",
                         uuid="B")
    return (
        profile_bytes(root(), alice_p12(uuid="A"), identifier="com.example.a"),
        profile_bytes(root(), bob, identifier="com.example.a"),
        profile_bytes(alice_p12("wrong", uuid="A"), identifier="com.example.a"),
        profile_bytes(exchange(), identifier="com.example.b"),
        profile_bytes(alice_p12(uuid="C"), exchange("com.example.eas.c"), identifier="com.example.c"),
        profile_bytes(imap(smime_signing_certificate_uuid="A"), identifier="com.example.d"),
    )


def _check_invariants(device: DeviceProfiles) -> None:
    installed = {profile.identifier for profile in device}
    keychain = device.keychain
    assert {i.profile_identifier for i in keychain.identities()} <= installed
    for profile in device:
        for payload in profile.payloads_of_type("com.apple.security.pkcs12"):
            assert keychain.identity(payload["PayloadUUID"]).profile_identifier == profile.identifier
    current = {der(i.certificate) for i in keychain.identities()}
    assert not current & {der(item.certificate) for item in keychain.archive}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.tuples(st.just("install"), st.integers(0, 5)),
                          st.tuples(st.just("remove"), st.sampled_from(POOL_IDS))), max_size=8))
def test_any_sequence_of_installs_and_removals_keeps_the_device_consistent(operations):
    device = DeviceProfiles()
    for action, argument in operations:
        before = snapshot(device)
        if action == "install":
            result = device.install(pool()[argument], os_version=IOS, now=NOW)
        else:
            result = device.remove(argument)
        if not result.ok:
            assert result.error_chain and snapshot(device) == before
        _check_invariants(device)


@functools.cache
def rich_profile() -> dict[str, Any]:
    eas = exchange(certificate=p12(pki().bob, pki().bob_key), certificate_password="secret",
                   smime_signing_certificate_uuid="A")
    payloads = [root(), alice_p12(uuid="A"), eas, imap(smime_encryption_certificate_uuid="A")]
    return configuration_profile(payloads, identifier="com.example.rich").to_plist()


# Plist XML cannot carry control characters, so generated text avoids them.
plist_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)
plist_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 9000), plist_text, st.just("A"),
                         st.binary(max_size=16), st.lists(plist_text, max_size=2))
mutated_keys = st.sampled_from(["PayloadContent", "Password", "PayloadUUID", "Certificate",
                                "CertificatePassword", "Host", "UserName", "SMIMESigningCertificateUUID",
                                "SMIMEEncryptionCertificateUUID", "PayloadCertificateFileName",
                                "PayloadType"])


@settings(max_examples=120, deadline=None)
@given(changes=st.lists(st.tuples(st.integers(0, 3), mutated_keys, plist_values), min_size=1,
                        max_size=3),
       version=st.sampled_from(["6.1", "9.3.5", "12.0", "17.1"]))
def test_mutated_profiles_install_or_fail_cleanly_with_a_chain(changes, version):
    plist = rich_profile()
    plist = {**plist, "PayloadContent": [dict(item) for item in plist["PayloadContent"]]}
    for index, key, value in changes:
        if value is None:
            plist["PayloadContent"][index].pop(key, None)
        else:
            plist["PayloadContent"][index][key] = value
    device = DeviceProfiles()
    device.add_user_account("other.example.com", "alice")
    result = device.install(encode_plist(plist), os_version=version, now=NOW)
    if result.ok:
        assert device.get("com.example.rich") is result.profile
    else:
        assert result.error_chain and result.reason and len(device) == 0
        assert device.keychain.identities() == () and device.keychain.certificates() == ()


# --- Exchange and Mail accounts ---------------------------------------------------------------------------

def test_exchange_account_already_on_the_device_is_21005():
    device = DeviceProfiles()
    first = profile_bytes(exchange(), identifier="com.example.first")
    assert device.install(first, os_version=IOS, now=NOW).ok
    clash = exchange("com.example.other", host="MAIL.example.com", user="ALICE")
    result = device.install(profile_bytes(clash, identifier="com.example.second"), os_version=IOS, now=NOW)
    assert chain(result) == failed_install("com.example.second", (
        21005, "MCEASErrorDomain", "Account not unique (“Exchange”)"))
    assert "already configured by profile 'com.example.first'" in result.reason


def test_exchange_account_the_user_added_is_21005():
    device = DeviceProfiles()
    device.add_user_account("mail.example.com", email_address="alice@example.com")
    result = device.install(profile_bytes(exchange(user=None, email_address="Alice@Example.com")),
                            os_version=IOS, now=NOW)
    assert chain(result)[-1][:2] == (21005, "MCEASErrorDomain") and "by the user" in result.reason
    with pytest.raises(AccountError):
        device.add_user_account("mail.example.com")


def test_two_identical_exchange_accounts_in_one_profile_are_21005():
    result = DeviceProfiles().install(profile_bytes(exchange("com.example.e1"), exchange("com.example.e2")),
                                      os_version=IOS, now=NOW)
    assert chain(result)[-1][0] == 21005


def test_replacing_the_profile_that_holds_the_account_is_no_clash():
    device = DeviceProfiles()
    device.install(profile_bytes(exchange()), os_version=IOS, now=NOW)
    assert device.install(profile_bytes(exchange(ssl=True)), os_version=IOS, now=NOW).ok


def test_other_users_or_hosts_are_other_accounts():
    device = DeviceProfiles()
    device.install(profile_bytes(exchange(), identifier="com.example.first"), os_version=IOS, now=NOW)
    for identifier, host, user in (("com.example.u", "mail.example.com", "bob"),
                                   ("com.example.h", "mail2.example.com", "alice")):
        payload = exchange(identifier, host=host, user=user)
        assert device.install(profile_bytes(payload, identifier=identifier), os_version=IOS, now=NOW).ok


def test_exchange_account_key_is_host_and_user_or_email():
    assert ExchangeAccount.of(" Mail.Example.com", "Alice") == ExchangeAccount("mail.example.com", "alice")
    assert ExchangeAccount.of("h", None, "A@x") == ExchangeAccount("h", "a@x")
    assert ExchangeAccount.of("h") is None


def test_exchange_with_every_data_class_off_is_21009_from_13_and_ignored_before():
    account = exchange().to_plist()
    account.update({key: False for key in ("EnableMail", "EnableContacts", "EnableCalendars",
                                           "EnableReminders", "EnableNotes")})
    plist = configuration_profile([], identifier="com.example.profile").to_plist()
    plist["PayloadContent"] = [account]
    data = encode_plist(plist)  # the builders refuse to write it, as iOS 13+ would
    result = DeviceProfiles().install(data, os_version="13.0", now=NOW)
    assert [(code, domain) for code, domain, _ in chain(result)] == [(4000, "MCInstallationErrorDomain"),
                                                                     (21009, "MCEASErrorDomain")]
    older = DeviceProfiles().install(data, os_version="12.4", now=NOW)
    assert older.ok
    assert {key.path for key in older.ignored_keys} >= {("EnableMail",), ("EnableNotes",)}


def test_exchange_certificate_with_a_wrong_password_is_21006():
    payload = exchange(certificate=p12(pki().alice, pki().alice_key), certificate_name="alice-eas.p12",
                       certificate_password="wrong")
    result = DeviceProfiles().install(profile_bytes(payload), os_version=IOS, now=NOW)
    assert chain(result) == failed_install("com.example.profile", (
        21006, "MCEASErrorDomain", "Cannot decrypt certificate (“alice-eas.p12”)"))


def test_exchange_certificate_becomes_an_identity_unless_overridden():
    payload = exchange(certificate=p12(pki().alice, pki().alice_key), certificate_password="secret")
    device = DeviceProfiles()
    assert device.install(profile_bytes(payload), os_version=IOS, now=NOW).ok
    assert device.keychain.identity(payload.uuid).certificate == pki().alice
    # PayloadCertificateUUID overrides the embedded Certificate, which is then never opened.
    overridden = exchange(certificate=b"junk", certificate_password="wrong", payload_certificate_uuid="X")
    assert DeviceProfiles().install(profile_bytes(overridden), os_version=IOS, now=NOW).ok
    # Certificate is read from iOS 7.0; an older device ignores it.
    bad = exchange(certificate=b"junk", certificate_password="wrong")
    older = DeviceProfiles().install(profile_bytes(bad), os_version="6.1", now=NOW)
    assert older.ok and any(key.path == ("Certificate",) for key in older.ignored_keys)


@pytest.mark.parametrize("account", [imap, exchange])
def test_smime_certificate_uuid_naming_nothing_is_7003(account):
    payload = account(smime_signing_certificate_uuid="00000000-0000-0000-0000-000000000000")
    result = DeviceProfiles().install(profile_bytes(payload), os_version=IOS, now=NOW)
    name = payload.display_name
    assert chain(result) == failed_install("com.example.profile", (
        7003, "MCEmailErrorDomain", f"S/MIME certificate not found (“{name}”)"))


def test_smime_certificate_uuid_naming_a_non_identity_payload_is_7004():
    ca = root()
    result = DeviceProfiles().install(profile_bytes(ca, imap(smime_encryption_certificate_uuid=ca.uuid)),
                                      os_version=IOS, now=NOW)
    assert chain(result)[-1] == (7004, "MCEmailErrorDomain", "S/MIME certificate bad (“Mail”)")


def test_smime_certificate_uuid_may_name_an_identity_here_there_or_from_scep():
    device = DeviceProfiles()
    identity = alice_p12(uuid="A")
    assert device.install(profile_bytes(identity, imap(smime_signing_certificate_uuid="A")),
                          os_version=IOS, now=NOW).ok
    other = imap("com.example.mail2", smime_encryption_certificate_uuid="A")
    assert device.install(profile_bytes(other, identifier="com.example.other"), os_version=IOS, now=NOW).ok
    scep = scep_payload("https://scep.example.com", identifier="com.example.scep", uuid="S")
    data = profile_bytes(scep, imap(smime_signing_certificate_uuid="S"), identifier="com.example.s")
    assert device.install(data, os_version=IOS, now=NOW).ok


def test_smime_identity_leaving_with_the_replaced_profile_is_7003():
    device = DeviceProfiles()
    device.install(profile_bytes(alice_p12(uuid="A"), imap(smime_signing_certificate_uuid="A")),
                   os_version=IOS, now=NOW)
    result = device.install(profile_bytes(imap(smime_signing_certificate_uuid="A")), os_version=IOS, now=NOW)
    assert chain(result)[-1][0] == 7003


def test_payload_uuid_of_another_profiles_identity_is_4002():
    device = DeviceProfiles()
    device.install(profile_bytes(alice_p12(uuid="A"), identifier="com.example.one"), os_version=IOS, now=NOW)
    result = device.install(profile_bytes(alice_p12(uuid="A"), identifier="com.example.two"),
                            os_version=IOS, now=NOW)
    assert chain(result)[-1] == (4002, "MCInstallationErrorDomain", "Duplicate UUID (“A”)")


# --- MDM enrollment ---------------------------------------------------------------------------------------

def enrollment(identifier: str = "com.example.mdm", *, server: str = "https://mdm.example.com/mdm",
               rights: int = 8191, identity_uuid: str = "DEVICE") -> bytes:
    device_key = new_key()
    device_cert = certificate("device", device_key, issuer=pki().ca, issuer_key=pki().ca_key)
    identity = pkcs12_payload(p12(device_cert, device_key), identifier=f"{identifier}.identity",
                              password="secret", uuid="DEVICE")
    mdm = mdm_payload(server, "com.apple.mgmt.External.1", identity_uuid, identifier=f"{identifier}.mdm",
                      access_rights=rights)
    return profile_bytes(root(), identity, mdm, identifier=identifier, display_name="MDM")


def test_a_second_mdm_enrollment_from_another_profile_is_12001():
    device = DeviceProfiles()
    assert device.install(enrollment(), os_version=IOS, now=NOW, managed=False).ok
    other = mdm_payload("https://other.example.com", "com.apple.mgmt.External.2", "DEVICE",
                        identifier="com.example.other.mdm")
    result = device.install(profile_bytes(other, identifier="com.example.other"), os_version=IOS, now=NOW)
    assert chain(result) == failed_install("com.example.other", (
        12001, "MDMErrorDomain", "Multiple MDM instances (“com.example.other”)"))


def test_two_mdm_payloads_in_one_profile_are_12001():
    first = mdm_payload("https://a.example.com", "com.apple.mgmt.External.1", "X", identifier="m1")
    second = mdm_payload("https://b.example.com", "com.apple.mgmt.External.1", "X", identifier="m2")
    result = DeviceProfiles().install(profile_bytes(first, second), os_version=IOS, now=NOW)
    assert chain(result)[-1][:2] == (12001, "MDMErrorDomain")


def test_mdm_payload_without_its_identity_is_4014():
    mdm = mdm_payload("https://a.example.com", "com.apple.mgmt.External.1", "NOWHERE", identifier="m1")
    result = DeviceProfiles().install(profile_bytes(mdm), os_version=IOS, now=NOW)
    assert chain(result)[-1] == (4014, "MCInstallationErrorDomain", "No device identity")


def test_mdm_profile_updates_keep_the_server_and_add_no_rights():
    device = DeviceProfiles()
    device.install(enrollment(rights=3), os_version=IOS, now=NOW, managed=False)
    moved = device.install(enrollment(server="https://elsewhere.example.com/mdm"), os_version=IOS, now=NOW)
    assert chain(moved)[-1] == (12012, "MDMErrorDomain", "MDM replacement mismatch (“ServerURL”)")
    more = device.install(enrollment(rights=8191), os_version=IOS, now=NOW)
    assert chain(more)[-1] == (12000, "MDMErrorDomain", "Bad access rights")
    assert device.install(enrollment(rights=1), os_version=IOS, now=NOW).ok  # dropping rights is allowed
    assert device.install(enrollment(rights=1), os_version=IOS, now=NOW).ok


def test_replacing_the_enrollment_profile_without_mdm_is_4015():
    device = DeviceProfiles()
    device.install(enrollment(), os_version=IOS, now=NOW, managed=False)
    result = device.install(profile_bytes(root(), identifier="com.example.mdm"), os_version=IOS, now=NOW)
    assert chain(result)[-1] == (4015, "MCInstallationErrorDomain",
                                 "Replacement profile does not contain an MDM payload")


# --- keys a version does not read -------------------------------------------------------------------------

def test_keys_outside_the_os_range_are_recorded_not_refused():
    payload = imap(smime_encrypt_by_default=True, smime_enabled=True)
    data = profile_bytes(payload)
    old = DeviceProfiles().install(data, os_version="11.4", now=NOW)
    new = DeviceProfiles().install(data, os_version="12.0", now=NOW)
    assert old.ok and new.ok
    skipped = {(key.payload_identifier, key.path, key.support) for key in old.ignored_keys}
    assert ("com.example.mail", ("SMIMEEncryptByDefault",), Support.NOT_YET) in skipped
    assert not any(key.path == ("SMIMEEncryptByDefault",) for key in new.ignored_keys)
    assert old.profile.ignored_keys == old.ignored_keys


def test_a_payload_type_the_device_does_not_know_is_installed_but_not_read():
    # Wi-Fi is in the catalogue now (the whole schema); a vendor's own type is what iOS installs unread.
    wifi = {"PayloadType": "com.example.wifi.vendor", "PayloadVersion": 1,
            "PayloadIdentifier": "com.example.wifi", "PayloadUUID": "W", "SSID_STR": "Office"}
    plist = {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.wifi.p",
             "PayloadUUID": "P", "PayloadContent": [wifi]}
    result = DeviceProfiles().install(encode_plist(plist), os_version=IOS, now=NOW)
    assert result.ok
    assert [(key.payload_identifier, key.path, key.support) for key in result.ignored_keys] == [
        ("com.example.wifi", (), Support.UNKNOWN_KEY)]


# --- removal ------------------------------------------------------------------------------------------------

def test_removing_a_profile_that_is_not_installed_is_12075_exactly():
    result = DeviceProfiles().remove("Fleet.WiFi")
    assert [item.to_plist() for item in result.error_chain] == [{
        "ErrorCode": 12075, "ErrorDomain": "MCMDMErrorDomain",  # as the 12013 capture
        "LocalizedDescription": "The profile “Fleet.WiFi” is not installed.",
        "USEnglishDescription": "The profile “Fleet.WiFi” is not installed.",
    }]
    assert not result.ok and result.removed is None


def _unescape(text: str) -> str:
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), text.encode()).decode()


def test_mdm_removing_a_profile_the_user_installed_is_12013_as_the_device_corpus_shows():
    path = require(DEVICE_MESSAGES / "commandment" / "Errors" / "iOS-11.3.1-RemoveProfile-Unmanaged.xml")
    (expected,) = decode_plist(path.read_bytes())["ErrorChain"]
    # The fixture spells the curly quotes as literal "\xe2\x80\x9c" text; undo that to compare.
    expected = {key: _unescape(value) if isinstance(value, str) else value for key, value in expected.items()}
    identifier = "org.github.cmdmnt.commandment.trust"
    device = DeviceProfiles()
    device.install(profile_bytes(root(), identifier=identifier), os_version=IOS, now=NOW, managed=False)
    (item,) = device.remove(identifier).error_chain
    # Same code, domain and text as the real capture (issue #14: the device says MCMDMErrorDomain).
    assert (item.code, item.localized_description, item.us_english_description) == (
        expected["ErrorCode"], expected["LocalizedDescription"], expected["USEnglishDescription"])
    assert (expected["ErrorDomain"], item.domain) == ("MCMDMErrorDomain", "MCMDMErrorDomain")
    assert identifier in device
    assert device.remove(identifier, by_mdm=False).ok and identifier not in device


def test_removal_takes_identities_and_certificates_and_archives_keys():
    device = DeviceProfiles()
    device.install(profile_bytes(root(), alice_p12()), os_version=IOS, now=NOW)
    result = device.remove("com.example.profile")
    assert result.ok and result.removed.identifier == "com.example.profile" and len(device) == 0
    assert device.keychain.identities() == () and device.keychain.trusted_roots() == ()
    assert [item.certificate for item in device.keychain.archive] == [pki().alice]
    bob = pkcs12_payload(p12(pki().bob, pki().bob_key), identifier="com.example.bob", password="secret")
    device.install(profile_bytes(bob, identifier="com.example.z"), os_version=IOS, now=NOW)
    device.remove("com.example.z", keep_encryption_keys=False)
    assert [item.certificate for item in device.keychain.archive] == [pki().alice]


# --- ProfileList and CertificateList ---------------------------------------------------------------------

def test_profile_list_items_follow_the_os_version_and_managed_only():
    device = DeviceProfiles()
    device.install(profile_bytes(root(), alice_p12(), display_name="Alice"), os_version=IOS, now=NOW)
    user = profile_bytes(root(), identifier="com.example.user")
    device.install(user, os_version=IOS, now=NOW, managed=False)
    items = device.profile_list_items(os_version="16.4")
    assert [(item.payload_identifier, item.is_managed) for item in items] == [
        ("com.example.profile", True), ("com.example.user", False)]
    assert items[0].payload_display_name == "Alice" and not items[0].is_encrypted
    assert [p.payload_type for p in items[0].payload_content] == ["com.apple.security.root",
                                                                   "com.apple.security.pkcs12"]
    assert all(p.payload_uuid is None for p in items[0].payload_content)
    (managed,) = device.profile_list_items(os_version="17.0", managed_only=True)
    assert all(p.payload_uuid for p in managed.payload_content)
    report = profile_list_response("UDID", "CMD", (managed,))
    assert parse_profile_list(report) == (managed,)


def test_certificate_list_items_mark_identities_and_honour_managed_only():
    device = DeviceProfiles()
    device.install(profile_bytes(root(), alice_p12(uuid="A")), os_version=IOS, now=NOW)
    device.install(profile_bytes(pkcs1_payload(der(pki().bob), identifier="com.example.bob"),
                                 identifier="com.example.user"), os_version=IOS, now=NOW, managed=False)
    items = device.certificate_list_items()
    assert [(item.common_name, item.is_identity, item.data) for item in items] == [
        ("alice@example.com", True, der(pki().alice)), ("mdmsim Test CA", False, der(pki().ca)),
        ("bob@example.com", False, der(pki().bob))]
    assert [item.common_name for item in device.certificate_list_items(managed_only=True)] == [
        "alice@example.com", "mdmsim Test CA"]
    device.keychain.delete_private_keys_older_than(0, NOW)
    assert not device.certificate_list_items()[0].is_identity  # without its key it is just a certificate


def test_now_may_be_posix_seconds_from_the_fleet_clock():
    device = DeviceProfiles()
    assert device.install(profile_bytes(alice_p12()), os_version=IOS, now=NOW.timestamp()).ok
    assert device.get("com.example.profile").installed_at == NOW
