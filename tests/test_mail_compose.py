"""Composing and reading S/MIME mail between simulated devices by SPEC 7: signing, the per-message switch,
encrypt-by-default, per-recipient refusals, the Sent copy, archived keys, and certificates learned across
organisations from signed messages. Readiness records come from device_sim.readiness on real payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from device_sim.keychain import Identity, Keychain
from device_sim.mail import (
    ComposeError,
    ComposeRefused,
    DeliveryError,
    DirectoryError,
    Draft,
    MailAccount,
    MailNetwork,
    OrganisationCA,
    SMIMEError,
    Usage,
    open_message,
    send,
)
from device_sim.mail.hub import MailHub
from device_sim.mail.smime import message_kind
from device_sim.readiness import MAIL, State, account_readiness

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SWITCH = {"SMIMEEncryptByDefault": False, "SMIMEEnableEncryptionPerMessageSwitch": True}


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Certificates:
    """Two organisations and their users' identities; RSA-2048 keys made once for the module."""

    def __init__(self) -> None:
        self.acme = OrganisationCA.create("Acme", "acme.test", rsa_key(), now=NOW)
        self.globex = OrganisationCA.create("Globex", "globex.test", rsa_key(), now=NOW)
        self.identities = {}
        for name, ca, usage in (("alice", self.acme, Usage.BOTH), ("bob", self.acme, Usage.BOTH),
                                ("bob-old", self.acme, Usage.BOTH), ("gina-sign", self.globex, Usage.SIGNING),
                                ("gina-enc", self.globex, Usage.ENCRYPTION)):
            key = rsa_key()
            address = f"{name.split('-')[0]}@{ca.domain}"
            self.identities[name] = (ca.issue(address, key, now=NOW, usage=usage), key)
        carol_key = rsa_key()
        expired = self.acme.issue("carol@acme.test", carol_key, now=NOW, days=365,
                                  not_before=NOW - timedelta(days=400))
        self.identities["carol-expired"] = (expired, carol_key)

    def cert(self, name: str):
        return self.identities[name][0]


@pytest.fixture(scope="module")
def certificates() -> Certificates:
    return Certificates()


@dataclass
class Device:
    account: MailAccount
    keychain: Keychain
    uuids: dict[str, str]

    def readiness(self, **keys):
        """The account's readiness on iOS 17.4 for a mail payload with these S/MIME keys added."""
        payload = {"PayloadType": MAIL, "PayloadIdentifier": f"mail.{self.account.address}",
                   "PayloadUUID": "5D0C3E4A-0000-4000-8000-000000000001", "PayloadVersion": 1,
                   "EmailAddress": self.account.address, "SMIMESigningEnabled": True,
                   "SMIMESigningCertificateUUID": self.uuids["sign"],
                   "SMIMEEncryptionCertificateUUID": self.uuids["enc"], **keys}
        return account_readiness(payload, os_version="17.4", keychain=self.keychain, now=NOW)


class World:
    """acme.test (alice, bob, carol, dave) and globex.test (gina) on one network, a device per user."""

    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        self.network = MailNetwork()
        self.acme, self.globex = self.network.create_hub("acme.test"), self.network.create_hub("globex.test")
        for address in ("alice@acme.test", "bob@acme.test", "carol@acme.test", "dave@acme.test"):
            self.acme.add_mailbox(address)
        self.globex.add_mailbox("gina@globex.test")
        for name in ("alice", "bob", "carol-expired"):
            certificate = certificates.cert(name)
            self.acme.directory.publish(certificate.subject.rfc4514_string().removeprefix("CN="), certificate)
        self.globex.directory.publish("gina@globex.test", certificates.cert("gina-enc"))
        self.alice = self.device("alice@acme.test", self.acme, sign="alice", enc="alice")
        self.bob = self.device("bob@acme.test", self.acme, sign="bob", enc="bob")
        self.gina = self.device("gina@globex.test", self.globex, sign="gina-sign", enc="gina-enc")

    def device(self, address: str, hub: MailHub, *, sign: str, enc: str,
               roots: tuple[OrganisationCA, ...] | None = None) -> Device:
        keychain = Keychain()
        for ca in roots if roots is not None else (self.certificates.acme, self.certificates.globex):
            keychain.add_root(ca.certificate, "com.example.roots")  # EPMM Certificate settings for both CAs
        uuids = {}
        for role, name in (("sign", sign), ("enc", enc)):
            uuids[role] = f"UUID-{name}"
            if keychain.identity(uuids[role]) is None:
                keychain.add_identity(Identity(uuids[role], f"com.example.smime.{name}",
                                               *self.certificates.identities[name], f"{name}.p12", NOW))
        return Device(MailAccount(address, hub, keychain), keychain, uuids)


@pytest.fixture
def world(certificates) -> World:
    return World(certificates)


def lunch(*to: str) -> Draft:
    return Draft(to=list(to), subject="Lunch", text="Noon at the usual place?\n")


# --- signing ------------------------------------------------------------------------------------------------


def test_a_ready_signing_identity_signs_and_the_recipient_verifies(world):
    readiness = world.alice.readiness(SMIMEEncryptByDefault=False)
    assert readiness.signing.state == State.READY and not readiness.per_message_switch
    sent = send(world.alice.account, lunch("bob@acme.test"), readiness=readiness, now=NOW)
    assert (sent.signed, sent.encrypted, sent.recipients) == (True, False, ("bob@acme.test",))
    assert sent.delivery.delivered == ("bob@acme.test",) and not sent.delivery.rejected
    assert sent.summary() == "signed message to bob@acme.test"
    opened = open_message(world.acme.mailbox("bob@acme.test").inbox[-1], keychain=world.bob.keychain, now=NOW)
    assert (opened.signed_by, opened.encrypted, opened.decrypted_with) == ("alice@acme.test", False, None)
    assert opened.text == "Noon at the usual place?\n" and opened.subject == "Lunch"
    assert opened.signature_matches_sender


@pytest.mark.parametrize("overrideable", [False, True])
def test_the_user_may_turn_signing_off_only_where_overrideable(world, overrideable):
    readiness = world.alice.readiness(SMIMEEncryptByDefault=False, SMIMESigningUserOverrideable=overrideable)
    if not overrideable:
        with pytest.raises(ComposeError, match="signing is required on this account"):
            send(world.alice.account, lunch("bob@acme.test"), readiness=readiness, now=NOW, sign=False)
        assert world.acme.mailbox("bob@acme.test").inbox == ()
        return
    sent = send(world.alice.account, lunch("bob@acme.test"), readiness=readiness, now=NOW, sign=False)
    assert not sent.signed and message_kind(sent.message) == "plain"


def test_no_usable_signing_identity_sends_unsigned_and_refuses_an_explicit_signature(world, certificates):
    device = world.device("alice@acme.test", world.acme, sign="alice", enc="alice")
    device.keychain.remove_profile("com.example.smime.alice", keep_encryption_keys=False)
    readiness = device.readiness(SMIMEEncryptByDefault=False)
    assert readiness.signing.state == State.NOT_FUNCTIONAL
    sent = send(device.account, lunch("bob@acme.test"), readiness=readiness, now=NOW)
    assert not sent.signed and message_kind(sent.message) == "plain"
    with pytest.raises(ComposeError, match="cannot sign: signing identity UUID-alice is not on the device"):
        send(device.account, lunch("bob@acme.test"), readiness=readiness, now=NOW, sign=True)


# --- encryption ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("by_default", "choice", "encrypted"), [
    (False, None, False), (False, True, True), (False, False, False),
    (True, None, True), (True, False, False), (True, True, True),
])
def test_the_per_message_switch_decides_encryption(world, by_default, choice, encrypted):
    readiness = world.alice.readiness(**{**SWITCH, "SMIMEEncryptByDefault": by_default})
    assert readiness.per_message_switch and readiness.encryption.state == State.READY
    sent = send(world.alice.account, lunch("bob@acme.test"), readiness=readiness, now=NOW, encrypt=choice)
    assert sent.encrypted is encrypted and sent.signed
    item = world.acme.mailbox("bob@acme.test").inbox[-1]
    assert message_kind(item.message) == ("encrypted" if encrypted else "signed")
    opened = open_message(item, keychain=world.bob.keychain, now=NOW)
    assert (opened.encrypted, opened.signed_by) == (encrypted, "alice@acme.test")
    assert opened.decrypted_with == ("current" if encrypted else None)


def test_encrypt_by_default_without_a_switch_encrypts_everything_and_cannot_be_turned_off(world):
    readiness = world.alice.readiness(SMIMEEncryptByDefault=True)
    assert readiness.encrypt_by_default and not readiness.per_message_switch
    sent = send(world.alice.account, lunch("bob@acme.test"), readiness=readiness, now=NOW)
    assert sent.encrypted and message_kind(sent.message) == "encrypted"
    with pytest.raises(ComposeError, match="no per-message encryption switch: mail is always encrypted"):
        send(world.alice.account, lunch("bob@acme.test"), readiness=readiness, now=NOW, encrypt=False)
    assert len(world.acme.mailbox("bob@acme.test").inbox) == 1
    assert len(world.acme.mailbox("alice@acme.test").sent) == 1


def test_the_sender_can_read_the_encrypted_sent_copy(world):
    readiness = world.alice.readiness(SMIMEEncryptByDefault=True)
    sent = send(world.alice.account, lunch("bob@acme.test"), readiness=readiness, now=NOW, aes256=True)
    copy = world.acme.mailbox("alice@acme.test").sent[-1]
    assert copy == sent.sent_copy and copy.message == sent.message
    assert message_kind(copy.message) == "encrypted"
    opened = open_message(copy, keychain=world.alice.keychain, now=NOW)
    assert (opened.text, opened.decrypted_with, opened.signed_by) == (
        "Noon at the usual place?\n", "current", "alice@acme.test")


def test_missing_recipient_certificates_are_refused_per_recipient_and_nothing_is_sent(world):
    readiness = world.alice.readiness(**SWITCH)
    draft = lunch("bob@acme.test", "dave@acme.test", "carol@acme.test", "gina@globex.test")
    with pytest.raises(ComposeRefused) as refused:
        send(world.alice.account, draft, readiness=readiness, now=NOW, encrypt=True)
    missing = refused.value.missing
    assert sorted(missing) == ["carol@acme.test", "dave@acme.test", "gina@globex.test"]
    assert missing["dave@acme.test"] == ("no certificate in the acme.test directory, and none learned from "
                                         "a signed message")
    assert missing["carol@acme.test"] == "its certificate expired on 2026-01-25 (directory)"
    assert missing["gina@globex.test"] == ("outside acme.test, so its certificate can only be learned from a "
                                           "signed message from gina@globex.test, and none has arrived")
    assert "3 recipient(s) cannot receive encrypted mail" in refused.value.reason
    assert all(not world.acme.mailbox(a).inbox for a in ("bob@acme.test", "dave@acme.test"))
    assert world.acme.mailbox("alice@acme.test").sent == ()
    # With the switch off the same message goes out signed only: certificates matter only for encryption.
    sent = send(world.alice.account, draft, readiness=readiness, now=NOW, encrypt=False)
    assert sent.delivery.delivered == draft.recipients and not sent.encrypted


def test_encryption_that_is_not_ready_refuses_rather_than_sending_in_clear(world):
    device = world.device("alice@acme.test", world.acme, sign="alice", enc="alice")
    device.uuids["enc"] = "UUID-absent"
    readiness = device.readiness(SMIMEEncryptByDefault=True)
    assert readiness.encryption.state == State.NOT_FUNCTIONAL
    with pytest.raises(ComposeError, match="cannot encrypt, so nothing was sent: .* UUID-absent is not on"):
        send(device.account, lunch("bob@acme.test"), readiness=readiness, now=NOW)
    assert world.acme.mailbox("bob@acme.test").inbox == ()


def test_a_certificate_learned_from_a_signed_message_lets_the_user_encrypt_across_organisations(world,
                                                                                                certificates):
    alice_ready = world.alice.readiness(**SWITCH)
    with pytest.raises(ComposeRefused) as refused:
        send(world.alice.account, lunch("gina@globex.test"), readiness=alice_ready, now=NOW, encrypt=True)
    assert list(refused.value.missing) == ["gina@globex.test"]
    # Gina signs with a signing-only certificate and attaches her encryption certificate, as iOS does.
    gina_ready = world.gina.readiness(SMIMEEncryptByDefault=False)
    send(world.gina.account, Draft(to=["alice@acme.test"], subject="Hello", text="From Globex.\n"),
         readiness=gina_ready, now=NOW)
    item = world.acme.mailbox("alice@acme.test").inbox[-1]
    opened = open_message(item, keychain=world.alice.keychain, now=NOW, learned=world.alice.account.learned)
    assert opened.learned == ("gina@globex.test",) and opened.signed_by == "gina@globex.test"
    assert world.alice.account.learned.lookup("gina@globex.test") == certificates.cert("gina-enc")
    sent = send(world.alice.account, lunch("gina@globex.test"), readiness=alice_ready, now=NOW, encrypt=True)
    assert sent.encrypted and sent.delivery.delivered == ("gina@globex.test",)
    reply = open_message(world.globex.mailbox("gina@globex.test").inbox[-1], keychain=world.gina.keychain,
                         now=NOW)
    assert (reply.decrypted_with, reply.signed_by) == ("current", "alice@acme.test")


def test_nothing_is_learned_from_a_signer_the_device_does_not_trust(world, certificates):
    wary = world.device("alice@acme.test", world.acme, sign="alice", enc="alice", roots=(certificates.acme,))
    send(world.gina.account, Draft(to=["alice@acme.test"], subject="Hello", text="Hi.\n"),
         readiness=world.gina.readiness(SMIMEEncryptByDefault=False), now=NOW)
    with pytest.raises(SMIMEError, match="signer gina@globex.test is not trusted"):
        open_message(world.acme.mailbox("alice@acme.test").inbox[-1], keychain=wary.keychain, now=NOW,
                     learned=wary.account.learned)
    assert wary.account.learned.entries() == ()


def test_old_mail_stays_readable_with_an_archived_key_and_only_while_it_is_kept(world, certificates):
    old = world.device("bob@acme.test", world.acme, sign="bob-old", enc="bob-old")
    world.acme.directory.publish("bob@acme.test", certificates.cert("bob-old"))
    ready = world.alice.readiness(SMIMEEncryptByDefault=True)
    send(world.alice.account, lunch("bob@acme.test"), readiness=ready, now=NOW)
    old_mail = world.acme.mailbox("bob@acme.test").inbox[-1]
    forgetful = world.device("bob@acme.test", world.acme, sign="bob-old", enc="bob-old")
    for keychain, keep in ((old.keychain, True), (forgetful.keychain, False)):  # the identity is renewed
        keychain.remove_profile("com.example.smime.bob-old", keep_encryption_keys=keep)
        keychain.add_identity(Identity("UUID-bob", "com.example.smime.bob", *certificates.identities["bob"],
                                       "bob.p12", NOW))
    assert open_message(old_mail, keychain=old.keychain, now=NOW).decrypted_with == "archived"
    serial = f"{certificates.cert('bob-old').serial_number:#x}"
    with pytest.raises(SMIMEError, match=f"no key on this device can decrypt this message .*serial {serial}"):
        open_message(old_mail, keychain=forgetful.keychain, now=NOW)
    world.acme.directory.publish("bob@acme.test", certificates.cert("bob"))
    send(world.alice.account, lunch("bob@acme.test"), readiness=ready, now=NOW)
    new_mail = world.acme.mailbox("bob@acme.test").inbox[-1]
    assert open_message(new_mail, keychain=old.keychain, now=NOW).decrypted_with == "current"


def test_a_message_changed_in_the_mailbox_fails_its_signature(world):
    readiness = world.alice.readiness(SMIMEEncryptByDefault=False)
    send(world.alice.account, lunch("bob@acme.test"), readiness=readiness, now=NOW)
    item = world.acme.mailbox("bob@acme.test").inbox[-1]
    tampered = item.message.replace(b"Noon at the usual", b"Five at the usual")
    assert tampered != item.message
    with pytest.raises(SMIMEError, match="signature does not match the content"):
        open_message(tampered, keychain=world.bob.keychain, now=NOW)


# --- hubs, directories, drafts ------------------------------------------------------------------------------


def test_delivery_is_reported_per_recipient(world):
    report = world.acme.deliver(b"Subject: hi\r\n\r\nhello\r\n",
                                ["bob@acme.test", "nobody@acme.test", "gina@globex.test", "x@nowhere.test"])
    assert report.delivered == ("bob@acme.test", "gina@globex.test")
    assert dict(report.rejected) == {"nobody@acme.test": "acme.test has no mailbox nobody@acme.test",
                                     "x@nowhere.test": "no mail hub for nowhere.test"}
    lonely = MailHub("lonely.test")
    lonely.add_mailbox("me@lonely.test")
    assert dict(lonely.deliver(b"x", ["bob@acme.test"]).rejected) == {
        "bob@acme.test": "lonely.test has no route to other domains"}
    with pytest.raises(DeliveryError, match="at least one recipient"):
        world.acme.deliver(b"x", [])
    with pytest.raises(DeliveryError, match="not in acme.test"):
        world.acme.add_mailbox("gina@globex.test")


def test_the_directory_lists_only_its_own_users_under_their_own_address(world, certificates):
    with pytest.raises(DirectoryError, match="certificate offered for dave@acme.test names bob@acme.test"):
        world.acme.directory.publish("dave@acme.test", certificates.cert("bob"))
    with pytest.raises(DirectoryError, match="gina@globex.test is not in acme.test"):
        world.acme.directory.publish("gina@globex.test", certificates.cert("gina-enc"))
    with pytest.raises(DirectoryError, match="not a mail address"):
        world.acme.directory.lookup("bob")
    assert world.acme.directory.lookup("BOB@acme.test") == certificates.cert("bob")


def test_a_draft_needs_a_list_of_real_addresses():
    with pytest.raises(ComposeError, match="list of addresses"):
        Draft(to="bob@acme.test", subject="s", text="t")
    with pytest.raises(ComposeError, match="at least one recipient"):
        Draft(to=[], subject="s", text="t")
    with pytest.raises(DirectoryError, match="not a mail address"):
        Draft(to=["bob at acme"], subject="s", text="t")
