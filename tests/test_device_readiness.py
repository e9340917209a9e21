"""S/MIME readiness per account against SPEC 7, bucket by bucket (9.3.3, 9.3.5, 10.3, 11.4, 12.0, 17.x),
with user choices, unusable identities, and the per-device report.
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kits.keychain_pki import NOW, der, identity, p12, pki, trusting_keychain
from kits.profile_kit import exchange, imap, profile_bytes

from device_sim.keychain import Keychain
from device_sim.profiles import DeviceProfiles
from device_sim.readiness import (
    SMIME_KEYS,
    AccountChoice,
    ReadinessError,
    State,
    UserChoices,
    account_readiness,
    fleet_readiness,
    smime_policy,
)
from mdm_protocol.key_catalogue import key_support
from mdm_protocol.payloads import pkcs12_payload, root_certificate_payload

ALICE, BOB, OLD, EVE = "ALICE-UUID", "BOB-UUID", "OLD-UUID", "EVE-UUID"


def keychain(*which: str) -> Keychain:
    """A device trusting the test CA, holding the named identities (all by default)."""
    kit = pki()
    available = {ALICE: (kit.alice, kit.alice_key), BOB: (kit.bob, kit.bob_key),
                 OLD: (kit.expired, kit.expired_key), EVE: (kit.stranger, kit.stranger_key)}
    chain = trusting_keychain()
    for uuid in which or (ALICE, BOB):
        cert, key = available[uuid]
        chain.add_identity(identity(cert, key, uuid=uuid, installed_at=NOW - timedelta(days=1)))
    return chain


def mail(**keys: Any) -> dict[str, Any]:
    return imap(**keys).to_plist()


def ready(payload: dict[str, Any], version: str, chain: Keychain | None = None, **options: Any):
    return account_readiness(payload, os_version=version, keychain=chain or keychain(), now=NOW, **options)


def states(record) -> tuple[State, State]:
    return record.signing.state, record.encryption.state


# --- below 10.0: the SMIMEEnabled master switch (9.3.3 to 9.3.5 alike) -----------------------------------

@pytest.mark.parametrize("version", ["9.3.3", "9.3.5"])
def test_below_10_smime_is_off_without_the_master_switch(version):
    record = ready(mail(smime_signing_certificate_uuid=ALICE, smime_encryption_certificate_uuid=BOB), version)
    assert states(record) == (State.DISABLED, State.DISABLED)
    assert "master switch" in record.signing.reason and not record.encrypt_by_default


@pytest.mark.parametrize("version", ["9.3.3", "9.3.5"])
def test_below_10_the_master_switch_uses_the_named_identities_and_encrypts_everything(version):
    record = ready(mail(smime_enabled=True, smime_signing_certificate_uuid=ALICE,
                        smime_encryption_certificate_uuid=BOB, smime_signing_enabled=False), version)
    assert states(record) == (State.READY, State.READY)
    assert (record.signing.identity, record.encryption.identity) == (ALICE, BOB)
    assert record.encrypt_by_default and not record.per_message_switch
    assert record.ignored_keys == ("SMIMESigningEnabled",)  # a 10.0 key: never read here


@pytest.mark.parametrize("version", ["9.3.3", "9.3.5"])
def test_below_10_the_per_message_switch_replaces_encrypting_everything(version):
    record = ready(mail(smime_enabled=True, smime_encryption_certificate_uuid=BOB,
                        smime_enable_per_message_switch=True), version)
    assert record.per_message_switch and not record.encrypt_by_default
    assert record.signing.state is State.NEEDS_IDENTITY_CHOICE


def test_9_3_3_and_9_3_5_give_the_same_record():
    payload = mail(smime_enabled=True, smime_signing_certificate_uuid=ALICE, smime_encrypt_by_default=True)
    first, second = ready(payload, "9.3.3"), ready(payload, "9.3.5")
    assert first.to_json() | {"os_version": None} == second.to_json() | {"os_version": None}


def test_before_8_0_there_is_no_per_message_switch():
    record = ready(mail(smime_enabled=True, smime_enable_per_message_switch=True), "7.1")
    assert not record.per_message_switch and record.encrypt_by_default
    assert record.ignored_keys == ("SMIMEEnablePerMessageSwitch",)


# --- 10.0 to 11.x: per-feature flags ------------------------------------------------------------------------

def test_10_3_ignores_the_master_switch():
    record = ready(mail(smime_enabled=True), "10.3")
    assert states(record) == (State.DISABLED, State.DISABLED)
    assert record.ignored_keys == ("SMIMEEnabled",)


def test_10_3_signing_flag_and_an_encryption_certificate_turn_each_on():
    record = ready(mail(smime_signing_enabled=True, smime_signing_certificate_uuid=ALICE,
                        smime_encryption_certificate_uuid=BOB), "10.3")
    assert states(record) == (State.READY, State.READY)
    assert record.encrypt_by_default and not record.per_message_switch


def test_10_3_legacy_switch_makes_encryption_per_message():
    record = ready(mail(smime_encryption_enabled=True, smime_encryption_certificate_uuid=BOB,
                        smime_enable_per_message_switch=True), "10.3")
    assert record.per_message_switch and not record.encrypt_by_default
    assert record.encryption.state is State.READY and record.signing.state is State.DISABLED


def test_exchange_reads_the_signing_flag_from_10_3_only():
    payload = exchange(smime_signing_enabled=True, smime_signing_certificate_uuid=ALICE).to_plist()
    early, later = ready(payload, "10.0"), ready(payload, "10.3")
    assert early.signing.state is State.DISABLED and "not read" in early.signing.reason
    assert "SMIMESigningEnabled" in early.ignored_keys
    assert later.signing.state is State.READY and later.ignored_keys == ()


def test_11_4_ignores_the_12_0_keys():
    payload = mail(smime_encrypt_by_default=True, smime_signing_user_overrideable=True,
                   smime_encryption_certificate_uuid_user_overrideable=True)
    record = ready(payload, "11.4")
    assert states(record) == (State.DISABLED, State.DISABLED)
    assert not record.signing_user_overrideable and not record.encryption_identity_user_overrideable
    assert record.ignored_keys == ("SMIMESigningUserOverrideable", "SMIMEEncryptByDefault",
                                   "SMIMEEncryptionCertificateUUIDUserOverrideable")


def test_11_4_encryption_flag_still_works():
    record = ready(mail(smime_encryption_enabled=True, smime_encryption_certificate_uuid=BOB), "11.4")
    assert record.encryption.state is State.READY and record.encrypt_by_default


# --- 12.0 and later: new keys win, overrides honoured ------------------------------------------------------

def test_12_0_encrypt_by_default_wins_over_the_legacy_flag():
    record = ready(mail(smime_encrypt_by_default=False, smime_encryption_enabled=True), "12.0")
    assert not record.encrypt_by_default and record.encryption.state is State.DISABLED
    assert record.ignored_keys == ("SMIMEEncryptionEnabled",)


def test_12_0_new_per_message_switch_wins_over_the_legacy_one():
    payload = mail(smime_enable_encryption_per_message_switch=False, smime_enable_per_message_switch=True,
                   smime_encryption_certificate_uuid=BOB)
    record = ready(payload, "12.0")
    assert not record.per_message_switch and record.ignored_keys == ("SMIMEEnablePerMessageSwitch",)


def test_12_0_an_encryption_certificate_alone_encrypts_by_default():
    record = ready(mail(smime_encryption_certificate_uuid=BOB), "12.0")
    assert record.encrypt_by_default and record.encryption.state is State.READY


def test_12_0_user_overrideable_keys_are_reported():
    payload = mail(smime_signing_user_overrideable=True,
                   smime_signing_certificate_uuid_user_overrideable=True,
                   smime_encrypt_by_default_user_overrideable=True,
                   smime_encryption_certificate_uuid_user_overrideable=True)
    record = ready(payload, "12.0")
    assert (record.signing_user_overrideable, record.signing_identity_user_overrideable,
            record.encrypt_by_default_user_overrideable, record.encryption_identity_user_overrideable) == (
        True, True, True, True)


# --- 17.x: identities and user choices ----------------------------------------------------------------------

V17 = "17.5"


def test_no_identity_named_prompts_the_user_and_a_choice_makes_it_ready():
    payload = mail(smime_signing_enabled=True, smime_encrypt_by_default=True)
    record = ready(payload, V17)
    assert states(record) == (State.NEEDS_IDENTITY_CHOICE, State.NEEDS_IDENTITY_CHOICE)
    assert "choose one of 2 usable identities" in record.signing.reason
    choices = UserChoices().with_choice("com.example.mail", signing_identity=ALICE, encryption_identity=BOB)
    chosen = ready(payload, V17, choices=choices)
    assert states(chosen) == (State.READY, State.READY)
    assert (chosen.signing.identity, chosen.encryption.identity) == (ALICE, BOB)


def test_no_certificate_on_the_device_is_not_functional():
    record = ready(mail(smime_signing_enabled=True, smime_encrypt_by_default=True), V17, trusting_keychain())
    assert states(record) == (State.NOT_FUNCTIONAL, State.NOT_FUNCTIONAL)
    assert "no certificate on the device" in record.encryption.reason


def test_identities_that_are_all_unusable_do_not_prompt():
    record = ready(mail(smime_signing_enabled=True), V17, keychain(OLD))
    assert record.signing.state is State.NOT_FUNCTIONAL
    assert "none of the 1 identities on it is usable" in record.signing.reason


@pytest.mark.parametrize(("uuid", "words"), [
    (OLD, "expired on"),
    (EVE, "does not end in a trusted root"),
    ("MISSING", "is not on the device"),
])
def test_a_named_identity_that_cannot_be_used_is_not_functional(uuid, words):
    record = ready(mail(smime_signing_enabled=True, smime_signing_certificate_uuid=uuid), V17,
                   keychain(ALICE, OLD, EVE))
    assert record.signing.state is State.NOT_FUNCTIONAL and words in record.signing.reason
    assert record.signing.identity == uuid


def test_deleted_private_key_makes_signing_and_encryption_not_functional():
    chain = keychain(BOB)  # one RSA identity that both signs and decrypts
    payload = mail(smime_signing_enabled=True, smime_signing_certificate_uuid=BOB,
                   smime_encryption_certificate_uuid=BOB)
    assert states(ready(payload, V17, chain)) == (State.READY, State.READY)
    chain.delete_private_keys_older_than(1, NOW)
    record = ready(payload, V17, chain)
    assert states(record) == (State.NOT_FUNCTIONAL, State.NOT_FUNCTIONAL)
    assert "private key" in record.encryption.reason and "deleted" in record.encryption.reason


@pytest.mark.parametrize(("overrideable", "used"), [(True, BOB), (False, ALICE)])
def test_a_users_identity_choice_overrides_only_where_allowed(overrideable, used):
    payload = mail(smime_signing_enabled=True, smime_signing_certificate_uuid=ALICE,
                   smime_signing_certificate_uuid_user_overrideable=overrideable)
    choices = UserChoices({"com.example.mail": AccountChoice(signing_identity=BOB)})
    record = ready(payload, V17, choices=choices)
    assert record.signing.identity == used and record.signing.state is State.READY


def test_a_choice_whose_identity_left_prompts_again():
    choices = UserChoices().with_choice("com.example.mail", signing_identity=BOB)
    record = ready(mail(smime_signing_enabled=True), V17, keychain(ALICE), choices=choices)
    assert record.signing.state is State.NEEDS_IDENTITY_CHOICE


@pytest.mark.parametrize(("overrideable", "state"), [(True, State.DISABLED), (False, State.READY)])
def test_the_user_turns_signing_off_only_where_overrideable(overrideable, state):
    payload = mail(smime_signing_enabled=True, smime_signing_certificate_uuid=ALICE,
                   smime_signing_user_overrideable=overrideable)
    choices = UserChoices().with_choice("com.example.mail", signing_enabled=False)
    record = ready(payload, V17, choices=choices)
    assert record.signing.state is state
    assert ("turned off by the user" in record.signing.reason) == overrideable


def test_the_user_toggles_encrypt_by_default_only_where_overrideable():
    base = {"smime_encrypt_by_default": True, "smime_encryption_certificate_uuid": BOB}
    choices = UserChoices().with_choice("com.example.mail", encrypt_by_default=False)
    assert not ready(mail(**base, smime_encrypt_by_default_user_overrideable=True), V17,
                     choices=choices).encrypt_by_default
    assert ready(mail(**base), V17, choices=choices).encrypt_by_default


# --- encryption needs an RSA identity (mail can only be encrypted to RSA keys) ---------------------------------

@pytest.mark.parametrize("version", ["9.3.3", "10.3", "17.5"])
def test_an_ec_encryption_identity_is_not_functional_though_it_signs(version):
    keys = {"smime_signing_enabled": True, "smime_encryption_enabled": True} if version != "9.3.3" else {
        "smime_enabled": True}
    payload = mail(smime_signing_certificate_uuid=ALICE, smime_encryption_certificate_uuid=ALICE, **keys)
    record = ready(payload, version, keychain(ALICE))
    assert states(record) == (State.READY, State.NOT_FUNCTIONAL)
    assert "EC key" in record.encryption.reason and "RSA" in record.encryption.reason
    assert record.encryption.identity == ALICE


def test_an_rsa_encryption_identity_is_ready():
    record = ready(mail(smime_encryption_certificate_uuid=BOB), V17, keychain(BOB))
    assert record.encryption.state is State.READY


def test_only_ec_identities_on_the_device_do_not_prompt_for_encryption():
    record = ready(mail(smime_encrypt_by_default=True, smime_signing_enabled=True), V17, keychain(ALICE))
    assert states(record) == (State.NEEDS_IDENTITY_CHOICE, State.NOT_FUNCTIONAL)
    assert "RSA" in record.encryption.reason
    offered = ready(mail(smime_encrypt_by_default=True), V17, keychain(ALICE, BOB))
    assert offered.encryption.state is State.NEEDS_IDENTITY_CHOICE and "1 usable" in offered.encryption.reason


def test_a_user_who_picks_an_ec_identity_for_encryption_is_not_ready():
    choices = UserChoices().with_choice("com.example.mail", encryption_identity=ALICE)
    record = ready(mail(smime_encrypt_by_default=True), V17, keychain(ALICE, BOB), choices=choices)
    assert record.encryption.state is State.NOT_FUNCTIONAL and record.encryption.identity == ALICE


# --- the per-device report ----------------------------------------------------------------------------

def test_two_exchange_profiles_of_the_brief_report_one_record_each():
    """EPMM brief: profile 1 encrypts all mail by default on one server; profile 2 has the compose switch."""
    kit = pki()
    device = DeviceProfiles()
    trust = root_certificate_payload(der(kit.ca), identifier="com.example.root")
    smime = pkcs12_payload(p12(kit.bob, kit.bob_key), identifier="com.example.smime", password="secret",
                           uuid=BOB)
    device.install(profile_bytes(trust, smime, identifier="com.example.certs"), os_version=V17, now=NOW)
    one = exchange("com.example.eas.one", host="ex1.example.com", smime_encrypt_by_default=True,
                   smime_encryption_certificate_uuid=BOB)
    # "Encryption by Default" off must be written out: with only a certificate UUID, iOS 12+ encrypts ([DEC]).
    two = exchange("com.example.eas.two", host="ex2.example.com", smime_encrypt_by_default=False,
                   smime_enable_encryption_per_message_switch=True, smime_encryption_certificate_uuid=BOB)
    for number, payload in ((1, one), (2, two)):
        assert device.install(profile_bytes(payload, identifier=f"com.example.exchange{number}"),
                              os_version=V17, now=NOW).ok
    report = fleet_readiness(device, os_version=V17, now=NOW.timestamp())
    assert list(report) == ["com.example.eas.one", "com.example.eas.two"]
    first, second = report.values()
    assert (first.encrypt_by_default, first.per_message_switch) == (True, False)
    assert (second.encrypt_by_default, second.per_message_switch) == (False, True)
    assert first.encryption.state is second.encryption.state is State.READY
    assert first.profile_identifier == "com.example.exchange1"
    assert first.payload_type == "com.apple.eas.account"
    assert json.loads(json.dumps(first.to_json()))["encryption"]["state"] == "ready"


def test_a_reused_account_identifier_is_qualified_by_its_profile():
    device = DeviceProfiles()
    for identifier in ("com.example.p1", "com.example.p2"):
        device.install(profile_bytes(imap(), identifier=identifier), os_version=V17, now=NOW)
    assert list(fleet_readiness(device, os_version=V17, now=NOW)) == [
        "com.example.mail", "com.example.p2/com.example.mail"]


def test_readiness_refuses_what_it_cannot_judge():
    with pytest.raises(ReadinessError, match="not 'com.apple.security.root'"):
        smime_policy({"PayloadType": "com.apple.security.root"}, V17)
    with pytest.raises(ReadinessError, match="unknown choice"):
        UserChoices().with_choice("a", sign=True)


# --- properties over every S/MIME key combination and version -----------------------------------------------

VERSIONS = ["4.3", "5.1", "7.1", "8.4", "9.3.3", "9.3.5", "10.0", "10.3", "11.4", "12.0", "13.0", "17.5",
            "18.1"]
UUID_KEYS = ("SMIMESigningCertificateUUID", "SMIMEEncryptionCertificateUUID")


@functools.cache
def shared_keychain() -> Keychain:
    return keychain(ALICE, OLD)


smime_values = st.fixed_dictionaries({}, optional={
    key: st.sampled_from([ALICE, OLD, "MISSING"]) if key in UUID_KEYS else st.booleans()
    for key in SMIME_KEYS})


@settings(max_examples=150, deadline=None)
@given(keys=smime_values, version=st.sampled_from(VERSIONS), kind=st.sampled_from(["mail", "eas"]))
def test_readiness_follows_the_catalogue_and_the_master_switch(keys, version, kind):
    payload = (mail() if kind == "mail" else exchange().to_plist()) | keys
    record = ready(payload, version, shared_keychain())
    assert set(record.ignored_keys) <= set(keys)
    for key in keys:
        if not key_support(payload["PayloadType"], key, version).honoured:
            assert key in record.ignored_keys
    below_10 = tuple(int(part) for part in version.split(".")[:1]) < (10,)
    if below_10 and keys.get("SMIMEEnabled") is not True:
        assert states(record) == (State.DISABLED, State.DISABLED)
    if not below_10 and "SMIMEEnabled" in keys:
        assert "SMIMEEnabled" in record.ignored_keys
    if record.signing.state is State.READY:
        assert record.signing.identity == ALICE
    assert json.loads(json.dumps(record.to_json()))["signing"]["state"] in {state.value for state in State}
