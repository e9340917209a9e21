"""The server's expected S/MIME readiness (SPEC section 7): the rules per iOS range, then whole devices built
from real acknowledged commands (real profiles, PKCS#12 identities, CMS, ProfileList/CertificateList answers).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st
from kits.admin_fleet import CA_CERTIFICATE, CA_DER, CA_KEY, T0, TOPIC, Api, FakeSetting, Fleet, make_ca

from mdm_protocol.commands import (
    CertificateListItem,
    ProfileListItem,
    certificate_list,
    certificate_list_response,
    install_profile,
    profile_list,
    profile_list_response,
    remove_profile,
)
from mdm_protocol.payloads import (
    EAS,
    MAIL,
    SMIME_KEYS,
    configuration_profile,
    mail_payload,
    new_uuid,
    pkcs12_payload,
    root_certificate_payload,
)
from mdm_protocol.profile import encode_profile
from mdm_protocol.report import Command, CommandReport, Status, encode_command, encode_report
from mdm_server.admin.expected_readiness import IdentityState, account_rules, expected_readiness
from mdm_server.storage.interface import NewCommand
from mdm_server.storage.memory import MemoryStorage

NOW = datetime.fromtimestamp(T0, UTC)
READY, DISABLED = IdentityState.READY, IdentityState.DISABLED
CHOICE, BROKEN = IdentityState.NEEDS_IDENTITY_CHOICE, IdentityState.NOT_FUNCTIONAL
SIGN, ENCRYPT = new_uuid(), new_uuid()


# The rules per iOS range ------------------------------------------------------------------------------------


def rules(os_version: str, payload_type: str = MAIL, **keys):
    return account_rules(payload_type, keys, os_version)


def test_below_10_smime_enabled_is_the_master_switch():
    on = rules("9.3.3", SMIMEEnabled=True, SMIMESigningCertificateUUID=SIGN,
               SMIMEEncryptionCertificateUUID=ENCRYPT, SMIMESigningEnabled=False)
    assert (on.signing_on, on.encryption_on, on.encrypt_by_default, on.per_message_switch) == (
        True, True, True, False)
    assert (on.signing_identity, on.encryption_identity) == (SIGN, ENCRYPT)
    assert on.ignored_keys == ("SMIMESigningEnabled",)  # a 10.0 key on 9.3.3
    off = rules("9.3.5", SMIMESigningCertificateUUID=SIGN)
    assert not off.signing_on and "SMIMEEnabled" in off.signing_off_reason
    # With the compose switch (8.0+) the user encrypts per message; without it every message is.
    switch = rules("8.0", SMIMEEnabled=True, SMIMEEncryptionCertificateUUID=ENCRYPT,
                   SMIMEEnablePerMessageSwitch=True)
    assert switch.per_message_switch and not switch.encrypt_by_default
    older = rules("7.1", SMIMEEnabled=True, SMIMEEncryptionCertificateUUID=ENCRYPT,
                  SMIMEEnablePerMessageSwitch=True)
    assert not older.per_message_switch and older.encrypt_by_default
    assert older.ignored_keys == ("SMIMEEnablePerMessageSwitch",)


def test_10_and_11_ignore_smime_enabled_and_read_the_flags():
    plain = rules("10.0", SMIMEEnabled=True)
    assert not plain.signing_on and not plain.encryption_on and plain.ignored_keys == ("SMIMEEnabled",)
    mail = rules("11.4", SMIMESigningEnabled=True, SMIMEEncryptionCertificateUUID=ENCRYPT,
                 SMIMEEncryptByDefault=False, SMIMESigningUserOverrideable=True)
    assert mail.signing_on and mail.encryption_on and mail.encrypt_by_default  # the identity turns it on
    assert mail.ignored_keys == ("SMIMEEncryptByDefault", "SMIMESigningUserOverrideable")
    assert not mail.signing_user_overrideable
    # Exchange's signing and encryption flags start at 10.3 in the schema.
    eas = rules("10.2", EAS, SMIMESigningEnabled=True, SMIMEEncryptionEnabled=True)
    assert not eas.signing_on and not eas.encryption_on
    assert eas.ignored_keys == ("SMIMEEncryptionEnabled", "SMIMESigningEnabled")
    assert rules("10.3", EAS, SMIMESigningEnabled=True).signing_on
    switched = rules("10.3", EAS, SMIMEEncryptionEnabled=True, SMIMEEnablePerMessageSwitch=True)
    assert switched.per_message_switch and not switched.encrypt_by_default


def test_12_and_later_new_keys_win_over_legacy_ones():
    wins = rules("12.0", EAS, SMIMEEncryptByDefault=False, SMIMEEncryptionEnabled=True,
                 SMIMEEnableEncryptionPerMessageSwitch=False, SMIMEEnablePerMessageSwitch=True)
    assert not wins.encrypt_by_default and not wins.per_message_switch and not wins.encryption_on
    assert "no per-message switch" in wins.encryption_off_reason
    legacy = rules("17.5", SMIMEEncryptionEnabled=True, SMIMEEnablePerMessageSwitch=True)
    assert legacy.encrypt_by_default and legacy.per_message_switch
    identity_only = rules("18.1", SMIMEEncryptionCertificateUUID=ENCRYPT)
    assert identity_only.encrypt_by_default and identity_only.encryption_on
    overrideable = rules("12.0", SMIMESigningUserOverrideable=True,
                         SMIMEEncryptionCertificateUUIDUserOverrideable=True, SMIMEEnabled=True)
    assert overrideable.signing_user_overrideable and overrideable.encryption_identity_user_overrideable
    assert overrideable.ignored_keys == ("SMIMEEnabled",)


@given(st.sampled_from([MAIL, EAS]), st.sampled_from(["5.0", "8.0", "9.3.3", "9.3.5", "10.0", "10.3", "11.4",
                                                      "12.0", "16.1", "18.1"]),
       st.dictionaries(st.sampled_from(sorted(SMIME_KEYS.values())), st.booleans()))
def test_rules_never_read_an_ignored_key(payload_type, version, flags):
    keys = {k: (SIGN if k.endswith("UUID") else v) for k, v in flags.items()}
    result = account_rules(payload_type, keys, version)
    assert set(result.ignored_keys) <= set(keys)
    # Removing the ignored keys changes nothing: the device never read them.
    honoured = {k: v for k, v in keys.items() if k not in result.ignored_keys}
    assert account_rules(payload_type, honoured, version) == replace(result, ignored_keys=())


# Whole devices from acknowledged commands -----------------------------------------------------------------


def issue(name: str, email: str, *, issuer=(CA_CERTIFICATE, CA_KEY), days: int = 365, start: datetime = NOW,
          kind: str = "rsa"):
    """An S/MIME identity; RSA by default, as encryption needs (mail encrypts to RSA keys only)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else (
        ec.generate_private_key(ec.SECP256R1()))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer[0].subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start - timedelta(days=1)).not_valid_after(start + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .sign(issuer[1], hashes.SHA256())
    )
    return certificate, key


def p12(identity, password: str = "s3cret") -> bytes:
    certificate, key = identity
    return pkcs12.serialize_key_and_certificates(
        b"jane", key, certificate, None, serialization.BestAvailableEncryption(password.encode()))


JANE = issue("Jane Appleseed", "jane@example.com")
DER = serialization.Encoding.DER


def mail_profile(identifier: str = "com.mdmsim.setting.mail", *, identities=(JANE, JANE), root=True,
                 **smime) -> bytes:
    payloads = [root_certificate_payload(CA_DER, identifier=f"{identifier}.root")] if root else []
    for uuid, identity, role in zip((SIGN, ENCRYPT), identities, ("signing", "encryption"), strict=True):
        if identity is not None:
            payloads.append(pkcs12_payload(p12(identity), identifier=f"{identifier}.{role}", uuid=uuid,
                                           password="s3cret"))
    payloads.append(mail_payload(
        identifier=f"{identifier}.account", email_account_type="EmailTypeIMAP",
        incoming_mail_server_host_name="imap.example.com", outgoing_mail_server_host_name="smtp.example.com",
        incoming_mail_server_authentication="EmailAuthPassword",
        outgoing_mail_server_authentication="EmailAuthPassword", email_address="jane@example.com", **smime,
    ))
    return encode_profile(configuration_profile(payloads, identifier=identifier))


SIGN_AND_ENCRYPT = dict(smime_signing_enabled=True, smime_signing_certificate_uuid=SIGN,
                        smime_encrypt_by_default=True, smime_encryption_certificate_uuid=ENCRYPT)


class Device:
    """A device record in MemoryStorage, and commands it answers the way iOS would."""

    def __init__(self, os_version: str = "17.5") -> None:
        self.storage, self.now = MemoryStorage(), T0
        self.os_version = os_version
        facts = {"UDID": "udid-1", "OSVersion": os_version}
        self.storage.authenticate("udid-1", facts, TOPIC, "ab" * 32, now=T0)

    def send(self, command: Command, status: Status = Status.ACKNOWLEDGED, **answer) -> str:
        self.now += 10
        uuid = command.command_uuid
        new = NewCommand(uuid, command.request_type, encode_command(command))
        self.storage.enqueue(["udid-1"], new, now=self.now)
        self.storage.mark_sent("udid-1", uuid, now=self.now)
        if status is not None:
            report = answer.pop("report", None) or CommandReport(status, udid="udid-1", command_uuid=uuid,
                                                                  extra=answer)
            self.storage.record_result("udid-1", uuid, status.value, encode_report(report), now=self.now + 1)
        return uuid

    def install(self, profile: bytes, status: Status = Status.ACKNOWLEDGED) -> None:
        self.send(install_profile(profile), status)

    def certificates(self, *items: CertificateListItem) -> None:
        command = certificate_list()
        self.send(command, report=certificate_list_response("udid-1", command.command_uuid, items))

    def readiness(self, **kwargs):
        return expected_readiness("udid-1", self.storage.list_commands("udid-1"), os_version=self.os_version,
                                  now=kwargs.pop("now", NOW), **kwargs)


def states(readiness) -> list[tuple[IdentityState, IdentityState]]:
    return [(a.signing.state, a.encryption.state) for a in readiness.accounts]


def test_an_acknowledged_profile_with_identities_is_ready():
    device = Device()
    device.install(mail_profile(**SIGN_AND_ENCRYPT))
    readiness = device.readiness()
    assert states(readiness) == [(READY, READY)]
    account = readiness.accounts[0]
    assert account.encrypt_by_default and not account.per_message_switch
    assert account.account == "jane@example.com on imap.example.com"
    assert readiness.installed_profiles == ("com.mdmsim.setting.mail",) and readiness.pending_installs == 0


def test_only_acknowledged_installs_count():
    device = Device()
    device.install(mail_profile(**SIGN_AND_ENCRYPT), status=None)  # sent, no answer yet
    device.install(mail_profile("com.mdmsim.other", **SIGN_AND_ENCRYPT), status=Status.ERROR)
    readiness = device.readiness()
    assert readiness.accounts == () and readiness.pending_installs == 1


def test_identity_problems_make_an_account_not_functional():
    expired = issue("Old Jane", "jane@example.com", start=NOW - timedelta(days=400), days=30)
    stranger_ca = make_ca("Some Other CA")
    untrusted = issue("Jane", "jane@example.com", issuer=stranger_ca)
    device = Device()
    device.install(mail_profile(identities=(expired, untrusted), **SIGN_AND_ENCRYPT))
    account = device.readiness().accounts[0]
    assert account.signing.state is BROKEN and "expired" in account.signing.reason
    assert account.encryption.state is BROKEN and "does not end in a root" in account.encryption.reason
    # The same identity is fine once its root is one the device trusts (e.g. from the enrollment profile).
    trusted = device.readiness(trusted_roots=[stranger_ca[0]]).accounts[0]
    assert trusted.encryption.state is READY
    # Without the profile's root payload, the chain of the good identity is not trusted either.
    bare = Device()
    bare.install(mail_profile(root=False, **SIGN_AND_ENCRYPT))
    assert states(bare.readiness()) == [(BROKEN, BROKEN)]


def test_no_identity_named_asks_the_user_only_if_the_device_has_one():
    device = Device()
    device.install(mail_profile(identities=(None, None), smime_signing_enabled=True,
                                smime_encrypt_by_default=True))
    assert states(device.readiness()) == [(BROKEN, BROKEN)]
    # A CertificateList shows an identity (installed some other way) and the MDM identity.
    mdm_identity = issue("MDM device identity", "device@example.com", kind="ec")[0]
    device.certificates(
        CertificateListItem("Jane Appleseed", True, JANE[0].public_bytes(DER)),
        CertificateListItem("MDM device identity", True, mdm_identity.public_bytes(DER)),
    )
    mdm_sha256 = mdm_identity.fingerprint(hashes.SHA256()).hex()
    assert states(device.readiness(device_cert_sha256=mdm_sha256)) == [(CHOICE, CHOICE)]
    only_mdm = Device()
    only_mdm.install(mail_profile(identities=(None, None), smime_signing_enabled=True))
    only_mdm.certificates(CertificateListItem("MDM device identity", True, mdm_identity.public_bytes(DER)))
    assert states(only_mdm.readiness(device_cert_sha256=mdm_sha256))[0][0] is BROKEN


def test_an_ec_identity_signs_but_is_never_expected_to_encrypt():
    ec_jane = issue("Jane Appleseed", "jane@example.com", kind="ec")
    device = Device()
    device.install(mail_profile(identities=(ec_jane, ec_jane), **SIGN_AND_ENCRYPT))
    account = device.readiness().accounts[0]
    assert (account.signing.state, account.encryption.state) == (READY, BROKEN)
    assert "EC key" in account.encryption.reason and "RSA" in account.encryption.reason
    # Nothing named, and the device holds only an EC identity: there is nothing to choose for encryption.
    prompted = Device()
    prompted.install(mail_profile(identities=(None, None), smime_signing_enabled=True,
                                  smime_encrypt_by_default=True))
    prompted.certificates(CertificateListItem("Jane Appleseed", True, ec_jane[0].public_bytes(DER)))
    assert states(prompted.readiness()) == [(CHOICE, BROKEN)]


def test_a_later_certificate_list_is_believed_over_the_install():
    device = Device()
    device.install(mail_profile(**SIGN_AND_ENCRYPT))
    # The private key was deleted (EPMM's "Delete Private Keys After Days"): listed, but not as identity.
    device.certificates(CertificateListItem("Jane Appleseed", False, JANE[0].public_bytes(DER)),
                        CertificateListItem("Example Corp Mail CA", False, CA_DER))
    account = device.readiness().accounts[0]
    assert account.signing.state is BROKEN and "private key" in account.signing.reason
    gone = Device()
    gone.install(mail_profile(**SIGN_AND_ENCRYPT))
    gone.certificates(CertificateListItem("Example Corp Mail CA", False, CA_DER))
    assert "missing from the CertificateList" in gone.readiness().accounts[0].signing.reason
    # An install acknowledged after the CertificateList is newer evidence.
    gone.install(mail_profile(**SIGN_AND_ENCRYPT))
    assert states(gone.readiness()) == [(READY, READY)]


def test_profile_list_and_remove_profile_take_profiles_away():
    device = Device()
    device.install(mail_profile(**SIGN_AND_ENCRYPT))
    device.install(mail_profile("com.mdmsim.second", **SIGN_AND_ENCRYPT))
    command = profile_list()
    listed = [ProfileListItem(new_uuid(), "com.mdmsim.second"), ProfileListItem(new_uuid(), "com.other")]
    device.send(command, report=profile_list_response("udid-1", command.command_uuid, listed))
    readiness = device.readiness()
    assert readiness.installed_profiles == ("com.mdmsim.second",) and readiness.profile_list_at is not None
    device.send(remove_profile("com.mdmsim.second"))
    assert device.readiness().installed_profiles == ()


def test_signed_profiles_are_read_and_encrypted_ones_noted():
    device = Device()
    signer = issue("mdmsim profile signer", "mdm@example.com", kind="ec")
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(mail_profile(**SIGN_AND_ENCRYPT))
              .add_signer(signer[0], signer[1], hashes.SHA256()).sign(DER, [pkcs7.PKCS7Options.Binary]))
    device.install(signed)
    assert states(device.readiness()) == [(READY, READY)]
    encrypted = encode_profile(configuration_profile([], identifier="com.x", extra={
        "IsEncrypted": True, "EncryptedPayloadContent": b"\x30\x80opaque"}))
    device.install(encrypted)
    assert any("encrypted or not a plist" in note for note in device.readiness().notes)
    # Raw admin commands (API v1) are not checked: a Payload-less InstallProfile is noted, never a crash.
    device.send(Command("InstallProfile", {"NotPayload": b"x"}))
    device.send(Command("RemoveProfile", {}))
    assert states(device.readiness()) == [(READY, READY)]


def test_old_ios_versions_follow_their_rules_end_to_end():
    device = Device("9.3.5")
    device.install(mail_profile(**SIGN_AND_ENCRYPT))  # no SMIMEEnabled: S/MIME is off below 10.0
    account = device.readiness().accounts[0]
    assert states(device.readiness()) == [(DISABLED, DISABLED)]
    assert set(account.ignored_keys) == {"SMIMESigningEnabled", "SMIMEEncryptByDefault"}
    unknown = Device()
    unknown.os_version = None
    unknown.install(mail_profile(**SIGN_AND_ENCRYPT))
    assert unknown.readiness().accounts == () and "OSVersion" in unknown.readiness().notes[0]


def test_readiness_api_maps_profiles_to_settings_and_refreshes():
    fleet = Fleet()
    api = Api(fleet)
    fleet.enroll("a", user="jane")
    fleet.renderer.settings["eas"] = FakeSetting("exchange", encrypt=True)
    fleet.label("all", type="filter")
    fleet.admin.apply("all", "eas")
    command = fleet.commands("a")[0]
    body = encode_report(CommandReport(Status.ACKNOWLEDGED, udid="a", command_uuid=command.command_uuid))
    fleet.storage.mark_sent("a", command.command_uuid, now=T0)
    fleet.storage.record_result("a", command.command_uuid, "Acknowledged", body, now=T0 + 1)
    status, readiness = api.call("GET", "/api/v2/devices/a/readiness")
    assert status == 200 and readiness["osVersion"] == "17.5"
    account = readiness["accounts"][0]
    assert account["settingId"] == "eas" and account["payloadType"] == EAS
    assert account["encryption"]["state"] == "not-functional"  # encrypts by default, no identity anywhere
    assert account["encryptByDefault"] is True and account["signing"]["state"] == "disabled"
    status, body = api.call("POST", "/api/v2/devices/a/readiness/refresh")
    assert status == 202 and set(body["queued"]) == {"ProfileList", "CertificateList"} and body["pushed"]
    assert api.call("GET", "/api/v2/devices/ghost/readiness")[0] == 404
