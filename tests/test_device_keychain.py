"""Simulated keychain: S/MIME usability (validity, key, trusted chain), key archive, key-deletion policy.

The small real-PKI kit (EC by default, one RSA) they use is kits/keychain_pki.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st
from kits.keychain_pki import NOW, certificate, identity, new_key, pki, trusting_keychain

from device_sim.keychain import ArchivedKey, Keychain, KeychainError, as_utc

CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


# --- usability -------------------------------------------------------------------------------------------

def test_identity_from_a_trusted_ca_is_usable_and_says_where_it_chains():
    keychain = trusting_keychain()
    alice = identity(pki().alice, pki().alice_key)
    keychain.add_identity(alice)
    ok, reason = keychain.usable(alice, NOW)
    assert ok, reason
    assert "“alice@example.com”" in reason and "chains to “mdmsim Test CA”" in reason


def test_rsa_identity_is_usable_too():
    key = new_key("rsa")
    cert = certificate("rsa@example.com", key, issuer=pki().ca, issuer_key=pki().ca_key)
    assert trusting_keychain().usable(identity(cert, key), NOW)[0]


def test_without_any_root_nothing_is_usable():
    ok, reason = Keychain().usable(identity(pki().alice, pki().alice_key), NOW)
    assert not ok and "trusts no root" in reason


def test_chain_to_a_root_the_device_does_not_trust_is_not_usable():
    ok, reason = trusting_keychain().usable(identity(pki().stranger, pki().stranger_key), NOW)
    assert not ok and "does not end in a trusted root" in reason


def test_builtin_store_is_trusted_and_deduplicated_with_profile_roots():
    keychain = Keychain(builtin_roots=[pki().ca])
    assert keychain.usable(identity(pki().alice, pki().alice_key), NOW)[0]
    keychain.add_root(pki().ca, "com.example.trust")
    keychain.add_root(pki().other_ca, "com.example.trust")
    assert [c.subject for c in keychain.trusted_roots()] == [pki().ca.subject, pki().other_ca.subject]
    keychain.remove_profile("com.example.trust", keep_encryption_keys=True)
    assert keychain.trusted_roots() == (pki().ca,)  # the built-in copy stays


@pytest.mark.parametrize(("moment", "words"), [
    (NOW, "expired on"),
    (NOW - timedelta(days=500), "not valid until"),
])
def test_outside_the_validity_period_is_not_usable(moment, words):
    ok, reason = trusting_keychain().usable(identity(pki().expired, pki().expired_key), moment)
    assert not ok and words in reason


def test_self_signed_identity_counts_only_when_its_own_root_is_trusted():
    key = new_key()
    cert = certificate("self@example.com", key)
    keychain = trusting_keychain()
    me = identity(cert, key)
    assert not keychain.usable(me, NOW)[0]
    keychain.add_root(cert, "com.example.self")
    assert keychain.usable(me, NOW)[0]


def test_intermediates_from_the_p12_or_a_profile_complete_the_chain():
    middle_key, leaf_key = new_key(), new_key()
    middle = certificate("Issuing CA", middle_key, issuer=pki().ca, issuer_key=pki().ca_key, ca=True,
                         eku=None)
    leaf = certificate("carol@example.com", leaf_key, issuer=middle, issuer_key=middle_key)
    keychain = trusting_keychain()
    assert not keychain.usable(identity(leaf, leaf_key), NOW)[0]
    assert keychain.usable(identity(leaf, leaf_key, chain=(middle,)), NOW)[0]
    keychain.add_intermediate(middle, "com.example.chain")
    assert keychain.usable(identity(leaf, leaf_key), NOW)[0]
    assert middle not in keychain.trusted_roots()


def test_purpose_is_checked_against_the_extended_key_usage():
    key = new_key()
    device = certificate("device identity", key, issuer=pki().ca, issuer_key=pki().ca_key, eku=(CLIENT,))
    keychain = trusting_keychain()
    ok, reason = keychain.usable(identity(device, key), NOW)
    assert not ok and "email protection" in reason
    assert keychain.usable(identity(device, key), NOW, purpose=CLIENT)[0]


def test_identity_refuses_a_key_that_is_not_its_certificates():
    with pytest.raises(KeychainError, match="does not match"):
        identity(pki().alice, pki().bob_key)


# --- profiles, archive, deletion policy ------------------------------------------------------------------

def test_removed_profile_keys_go_to_the_archive_and_still_decrypt():
    keychain = trusting_keychain()
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="A", profile="p1"))
    keychain.add_identity(identity(pki().bob, pki().bob_key, uuid="B", profile="p2"))
    left = keychain.remove_profile("p1", keep_encryption_keys=True)
    assert [item.payload_uuid for item in left] == ["A"]
    assert keychain.identity("A") is None
    cert, key = keychain.archive[0]  # archived entries are (certificate, key) pairs
    assert cert == pki().alice and key.private_numbers() == pki().alice_key.private_numbers()
    assert [item.certificate for item in keychain.decryption_keys()] == [pki().bob, pki().alice]


def test_removal_without_keeping_keys_archives_nothing():
    keychain = trusting_keychain()
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="A", profile="p1"))
    keychain.remove_profile("p1", keep_encryption_keys=False)
    assert keychain.archive == () and keychain.decryption_keys() == ()


def test_client_auth_only_keys_are_not_archived_as_encryption_keys():
    key = new_key()
    device = certificate("device identity", key, issuer=pki().ca, issuer_key=pki().ca_key, eku=(CLIENT,))
    keychain = trusting_keychain()
    keychain.add_identity(identity(device, key, uuid="D", profile="mdm"))
    keychain.remove_profile("mdm", keep_encryption_keys=True)
    assert keychain.archive == ()


def test_an_archived_identity_installed_again_leaves_the_archive():
    keychain = trusting_keychain()
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="A", profile="p1"))
    keychain.remove_profile("p1", keep_encryption_keys=True)
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="A", profile="p1"))
    assert keychain.archive == ()
    assert len(keychain.decryption_keys()) == 1


def test_a_payload_uuid_belongs_to_one_profile():
    keychain = Keychain()
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="A", profile="p1"))
    with pytest.raises(KeychainError, match="already holds an identity of profile 'p1'"):
        keychain.add_identity(identity(pki().bob, pki().bob_key, uuid="A", profile="p2"))
    keychain.add_identity(identity(pki().bob, pki().bob_key, uuid="A", profile="p1"))  # same profile: update
    assert keychain.identity("A").certificate == pki().bob


def test_key_deletion_policy_keeps_the_identity_but_makes_it_unusable():
    keychain = trusting_keychain()
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="old", installed_at=NOW))
    recent = NOW + timedelta(days=5)
    keychain.add_identity(identity(pki().bob, pki().bob_key, uuid="new", installed_at=recent))
    later = NOW + timedelta(days=7)
    assert keychain.delete_private_keys_older_than(7, later) == ("old",)
    old = keychain.identity("old")
    assert old is not None and not old.has_private_key and old.key_deleted_at == later
    ok, reason = keychain.usable(old, later)
    assert not ok and "deleted on 2025-06-08" in reason
    assert keychain.usable(keychain.identity("new"), later)[0]
    assert [item.certificate for item in keychain.decryption_keys()] == [pki().bob]


def test_key_deletion_policy_can_target_one_settings_identities():
    keychain = Keychain()
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="A"))
    keychain.add_identity(identity(pki().bob, pki().bob_key, uuid="B"))
    later = NOW + timedelta(days=30)
    assert keychain.delete_private_keys_older_than(1, later, payload_uuids={"B"}) == ("B",)
    assert keychain.identity("A").has_private_key


@pytest.mark.parametrize("days", [-1, 1.5, True, "3"])
def test_key_deletion_policy_refuses_nonsense_days(days):
    with pytest.raises(KeychainError, match="non-negative integer"):
        Keychain().delete_private_keys_older_than(days, NOW)


@settings(max_examples=60, deadline=None)
@given(days=st.integers(0, 15), age_hours=st.integers(0, 24 * 20))
def test_key_deletion_hits_exactly_the_identities_at_least_n_days_old(days, age_hours):
    keychain = Keychain()
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="A", installed_at=NOW))
    hit = keychain.delete_private_keys_older_than(days, NOW + timedelta(hours=age_hours))
    assert (hit == ("A",)) == (age_hours >= days * 24)
    assert keychain.identity("A").has_private_key == (age_hours < days * 24)


def test_times_may_be_posix_seconds_or_naive_utc():
    assert as_utc(NOW.timestamp()) == NOW
    assert as_utc(NOW.replace(tzinfo=None)) == NOW
    with pytest.raises(KeychainError, match="datetime or POSIX seconds"):
        as_utc("2025-06-01")
    keychain = trusting_keychain()
    assert keychain.usable(identity(pki().alice, pki().alice_key), NOW.timestamp())[0]


def test_archived_key_is_a_pair():
    pair = ArchivedKey(pki().alice, pki().alice_key)
    cert, key = pair
    assert cert is pki().alice and key is pki().alice_key


def test_a_key_another_profile_still_holds_is_not_archived():
    # Found by the install sequence property test: the archive is for keys no identity holds any more.
    keychain = Keychain()
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="A", profile="p1"))
    keychain.add_identity(identity(pki().alice, pki().alice_key, uuid="C", profile="p2"))
    keychain.remove_profile("p1", keep_encryption_keys=True)
    assert keychain.archive == ()
    keychain.remove_profile("p2", keep_encryption_keys=True)
    assert [item.certificate for item in keychain.archive] == [pki().alice]


def test_remembered_chains_follow_root_removal_and_the_cas_own_validity():
    ca_key, leaf_key = new_key(), new_key()
    short_ca = certificate("Short CA", ca_key, ca=True, eku=None, not_after=NOW + timedelta(days=10))
    leaf = certificate("dora@example.com", leaf_key, issuer=short_ca, issuer_key=ca_key)
    keychain = Keychain()
    keychain.add_root(short_ca, "com.example.short")
    dora = identity(leaf, leaf_key)
    assert keychain.usable(dora, NOW)[0]
    ok, reason = keychain.usable(dora, NOW + timedelta(days=20))  # the leaf is valid, its CA is not
    assert not ok and "trusted root" in reason
    assert keychain.usable(dora, NOW + timedelta(days=1))[0]
    keychain.remove_profile("com.example.short", keep_encryption_keys=True)
    assert not keychain.usable(dora, NOW + timedelta(days=1))[0]


# --- self-signature memo (every device of a fleet installs the same root) ---------------------------------


def test_self_signature_is_checked_once_per_distinct_root_and_answers_stay_right(monkeypatch):
    from device_sim import keychain

    monkeypatch.setattr(keychain, "_SELF_SIGNED", {})
    checks = []
    original = keychain._signs_itself
    monkeypatch.setattr(keychain, "_signs_itself", lambda c: checks.append(c) or original(c))
    root_key, other_key = new_key(), new_key()
    root = certificate("Fleet Root", root_key, ca=True)
    # Same subject and issuer name, but signed by another key: a forgery of "self-signed".
    impostor = certificate("Fleet Root", other_key, issuer=root, issuer_key=root_key, ca=True)
    leaf = certificate("leaf", new_key(), issuer=root, issuer_key=root_key)
    again = x509.load_der_x509_certificate(root.public_bytes(serialization.Encoding.DER))  # another object
    answers = [keychain.is_self_signed(c) for c in (root, again, root, impostor, impostor, leaf)]
    assert answers == [True, True, True, False, False, False]
    assert checks == [root, impostor, leaf]


def test_self_signature_memo_is_bounded_and_still_answers_when_full(monkeypatch):
    from device_sim import keychain

    monkeypatch.setattr(keychain, "_SELF_SIGNED", {})
    monkeypatch.setattr(keychain, "MAX_SELF_SIGNED_MEMO", 2)
    roots = [certificate(f"root {n}", new_key(), ca=True) for n in range(4)]
    assert all(keychain.is_self_signed(root) for root in roots + roots)
    assert list(keychain._SELF_SIGNED) == roots[:2]
