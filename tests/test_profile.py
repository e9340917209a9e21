"""Profiles: builders yield what Apple's YAML accepts, bytes round-trip, refusals carry iOS's ErrorChain."""

from __future__ import annotations

import datetime
import functools
import inspect
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kits import schema_validator
from kits.corpus import SCHEMA, require

from mdm_protocol import payloads as builders
from mdm_protocol.errors import MC_EAS, MC_INSTALLATION, MC_PAYLOAD, MC_PROFILE, ProfileError
from mdm_protocol.key_catalogue import Support, payload_spec
from mdm_protocol.payloads import (
    EAS_KEYS,
    MAIL_KEYS,
    configuration_profile,
    eas_payload,
    mail_payload,
    mdm_payload,
    new_uuid,
    pem_payload,
    pkcs1_payload,
    pkcs12_payload,
    root_certificate_payload,
    scep_payload,
)
from mdm_protocol.plist import encode_plist
from mdm_protocol.profile import Payload, Profile, encode_profile, parse_profile, validate_profile

pytestmark = pytest.mark.usefixtures("schema_present")
INVALID = (4000, MC_INSTALLATION)
EAS, MAIL, MDM = "com.apple.eas.account", "com.apple.mail.managed", "com.apple.mdm"
VERSIONS = ["4.0", "5.1", "7.0", "8.4", "9.3.3", "9.3.5", "10.0", "10.3", "11.4", "12.0", "12.2", "13.0",
            "13.4",            "14.0", "15.1", "17.0", "18.0", "18.1"]


@pytest.fixture
def schema_present() -> None:
    require(SCHEMA)


@functools.cache
def credentials() -> dict[str, bytes]:
    """A real CA certificate (DER and PEM) and a real password-protected PKCS#12 identity."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mdmsim test CA")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    p12 = pkcs12.serialize_key_and_certificates(b"user", key, cert, None,
                                                serialization.BestAvailableEncryption(b"secret"))
    return {"der": cert.public_bytes(serialization.Encoding.DER),
            "pem": cert.public_bytes(serialization.Encoding.PEM), "p12": p12}


def chain_of(exc: ProfileError) -> list[tuple[int, str]]:
    return [(item.code, item.domain) for item in exc.chain]


# --- strategies over builder arguments ------------------------------------------------------------------

# Plist XML cannot carry control characters (and turns \r into \n), so generated text avoids them.
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=16)
names = st.from_regex(r"[a-z]{1,8}(\.[a-z0-9]{1,8}){1,2}", fullmatch=True)
uuids = st.uuids().map(lambda value: str(value).upper())
hosts = st.from_regex(r"[a-z]{1,10}\.example\.(com|org)", fullmatch=True)
common = {"display_name": text, "description": text, "organization": text}


def _value_strategy(payload_type: str, key: str) -> st.SearchStrategy[Any]:
    """A valid value for one key, read from Apple's YAML (types and rangelists)."""
    entry = next(item for item in schema_validator.payload_keys(payload_type)[0] if item["key"] == key)
    if "rangelist" in entry:
        return st.sampled_from(entry["rangelist"])
    if key == "CommunicationServiceRules":
        return st.fixed_dictionaries({}, optional={"DefaultServiceHandlers": st.fixed_dictionaries(
            {}, optional={"AudioCall": names})})
    return {"<string>": uuids if key.endswith("UUID") else text, "<boolean>": st.booleans(),
            "<integer>": st.integers(1, 65535), "<data>": st.binary(max_size=24)}[entry["type"]]


def _account_arguments(payload_type: str, table: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    required = {name for name, key in table.items()
                if next(item for item in schema_validator.payload_keys(payload_type)[0]
                        if item["key"] == key).get("presence") == "required"}
    strategies = {name: _value_strategy(payload_type, key) for name, key in table.items()}
    optional = {name: strategy for name, strategy in strategies.items() if name not in required}
    fixed = {name: strategies[name] for name in required}
    return st.fixed_dictionaries(fixed, optional={**optional, **common})


@st.composite
def mail_payloads(draw: st.DrawFn) -> Payload:
    return mail_payload(identifier=draw(names), uuid=draw(uuids), **draw(_account_arguments(MAIL, MAIL_KEYS)))


@st.composite
def eas_payloads(draw: st.DrawFn) -> Payload:
    arguments = draw(_account_arguments(EAS, EAS_KEYS))
    if draw(st.booleans()):  # OAuth autodiscovery: no Host needed (SPEC 4, [DEC])
        arguments.update(oauth=True, host=None, oauth_sign_in_url=None)
    else:
        arguments["host"] = draw(hosts)
    classes = ("enable_mail", "enable_contacts", "enable_calendars", "enable_reminders", "enable_notes")
    if all(arguments.get(name) is False for name in classes):
        arguments["enable_mail"] = True  # all off is MCEASErrorDomain 21009, tested on its own
    return eas_payload(identifier=draw(names), uuid=draw(uuids), **arguments)


@st.composite
def certificate_payloads(draw: st.DrawFn) -> Payload:
    kind = draw(st.sampled_from(["root", "pkcs1", "pem", "pkcs12"]))
    extra = draw(st.fixed_dictionaries({}, optional={"file_name": text, **common}))
    build = {"root": (root_certificate_payload, "der"), "pkcs1": (pkcs1_payload, "der"),
             "pem": (pem_payload, "pem"), "pkcs12": (pkcs12_payload, "p12")}[kind]
    if kind == "pkcs12" and draw(st.booleans()):
        extra["password"] = "secret"
    return build[0](credentials()[build[1]], identifier=draw(names), uuid=draw(uuids), **extra)


@st.composite
def scep_payloads(draw: st.DrawFn) -> Payload:
    san = st.fixed_dictionaries({}, optional={key: text for key in (
        "rfc822Name", "dNSName", "uniformResourceIdentifier", "ntPrincipalName")})
    optional = {
        "name": text,
        "subject": st.lists(st.tuples(st.sampled_from(["C", "O", "CN", "1.2.5.3"]), text), max_size=4),
        "challenge": text, "key_size": st.sampled_from([1024, 2048, 4096]), "key_type": st.just("RSA"),
        "key_usage": st.sampled_from([0, 1, 4, 5]), "ca_fingerprint": st.binary(min_size=20, max_size=32),
        "retries": st.integers(0, 10), "retry_delay": st.integers(0, 60), "subject_alt_name": san, **common,
    }
    arguments = draw(st.fixed_dictionaries({}, optional=optional))
    url = "https://" + draw(hosts) + "/scep"
    return scep_payload(url, identifier=draw(names), uuid=draw(uuids), **arguments)


@st.composite
def mdm_payloads(draw: st.DrawFn) -> Payload:
    rights = draw(st.integers(1, 8191))
    rights |= (1 if rights & 2 else 0) | (64 if rights & 128 else 0)  # the schema's dependency rules
    capability = st.sampled_from(["com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken",
                                  "com.apple.mdm.token"])
    capabilities = st.lists(capability, unique=True)
    optional = {
        "check_in_url": hosts.map(lambda host: f"https://{host}/checkin"), "sign_message": st.booleans(),
        "check_out_when_removed": st.booleans(), "use_development_apns": st.booleans(),
        "server_capabilities": capabilities,
        "server_url_pinning_certificate_uuids": st.lists(uuids, max_size=2),
        "check_in_url_pinning_certificate_uuids": st.lists(uuids, max_size=2),
        "pinning_revocation_check_required": st.booleans(), "assigned_managed_apple_id": text,
        "enrollment_mode": st.sampled_from(["BYOD", "ADDE"]),
        "required_app_id_for_mdm": st.integers(1, 2**31),
        "managed_apple_id": text, **common,
    }
    arguments = draw(st.fixed_dictionaries({}, optional=optional))
    server = "https://" + draw(hosts) + "/mdm"
    return mdm_payload(server, "com.apple.mgmt.External." + draw(uuids), draw(uuids), identifier=draw(names),
                       uuid=draw(uuids), access_rights=rights, **arguments)


any_payload = st.one_of(certificate_payloads(), scep_payloads(), mdm_payloads(), mail_payloads(),
                        eas_payloads())


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    unique = (lambda p: p.identifier, lambda p: p.uuid)
    items = draw(st.lists(any_payload, min_size=1, max_size=5, unique_by=unique))
    optional = {"display_name": text, "description": text, "organization": text,
                "removal_disallowed": st.booleans(), "scope": st.sampled_from(["System", "User"])}
    return configuration_profile(items, identifier=draw(names), uuid=draw(uuids),
                                 **draw(st.fixed_dictionaries({}, optional=optional)))


relaxed = settings(deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --- builders against Apple's YAML, and round trips ------------------------------------------------------

@relaxed
@given(profiles())
def test_built_profiles_satisfy_apples_yaml_and_round_trip(profile: Profile) -> None:
    plist = profile.to_plist()
    assert schema_validator.check_profile(plist) == []
    assert parse_profile(encode_profile(profile)) == profile
    assert parse_profile(encode_plist(plist, binary=True)) == profile


@relaxed
@given(profiles(), st.sampled_from(VERSIONS))
def test_ignored_keys_are_what_the_yaml_says_a_version_does_not_read(profile: Profile, version: str) -> None:
    plist = profile.to_plist()
    try:
        result = validate_profile(profile, os_version=version)
    except ProfileError as exc:
        # Before iOS 12 OAuth is not read, so an OAuth-only Exchange payload lacks its Host there.
        assert chain_of(exc) == [INVALID, (21003, MC_EAS)]
        assert any(p.payload_type == EAS and "Host" not in p.content for p in profile.payloads)
        return
    found = {(item.payload_identifier, *item.path) for item in result.ignored}
    assert found == schema_validator.ignored_keys(plist, version)
    assert all(item.support is not Support.UNKNOWN_KEY for item in result.ignored)
    assert schema_validator.check_profile(plist, version) == []


plist_values = st.one_of(text, st.integers(-5, 10_000), st.booleans(), st.binary(max_size=8),
                         st.lists(st.integers(0, 3), max_size=2),
                         st.dictionaries(text, st.integers(), max_size=2),
                         st.floats(allow_nan=False, allow_infinity=False))


@relaxed
@given(profiles(), st.data())
def test_mutated_profiles_are_refused_exactly_when_the_yaml_says(profile: Profile,
                                                                 data: st.DataObject) -> None:
    plist = profile.to_plist()
    target = plist if data.draw(st.booleans()) else data.draw(st.sampled_from(plist["PayloadContent"]))
    key = data.draw(st.sampled_from(sorted(target)))
    if data.draw(st.booleans()):
        del target[key]
    else:
        target[key] = data.draw(plist_values)
    problems = schema_validator.check_profile(plist)
    try:
        validate_profile(plist)
    except ProfileError as exc:
        event(f"refused with {exc.code}")
        assert exc.chain[0].code == 4000 and len(exc.chain) == 2
        # Stricter than the YAML only where SPEC says so: uniqueness, Exchange [DEC] rules, AccessRights text.
        assert problems or exc.code in (1007, 1008, 21003, 21009) or "AccessRights" in exc.reason
    else:
        event("accepted")
        assert problems == []


@relaxed
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_profile_error(data: bytes) -> None:
    try:
        parse_profile(data)
    except ProfileError as exc:
        assert exc.chain[0].code == 4000


# --- each refusal with its exact ErrorChain ---------------------------------------------------------------

def mail_plist(**changes: Any) -> dict[str, Any]:
    payload = mail_payload(identifier="com.example.mail", uuid="A7E4B5C6-0000-4000-8000-000000000001",
                           display_name="Work Mail", email_account_type="EmailTypeIMAP",
                           incoming_mail_server_host_name="imap.example.com",
                           incoming_mail_server_authentication="EmailAuthPassword",
                           outgoing_mail_server_host_name="smtp.example.com",
                           outgoing_mail_server_authentication="EmailAuthPassword").to_plist()
    payload.update(changes)
    return {key: value for key, value in payload.items() if value is not None}


def eas_plist(**changes: Any) -> dict[str, Any]:
    payload = {"PayloadType": EAS, "PayloadVersion": 1, "PayloadIdentifier": "com.example.eas",
               "PayloadUUID": "A7E4B5C6-0000-4000-8000-000000000002", "Host": "mail.example.com", **changes}
    return {key: value for key, value in payload.items() if value is not None}


def scep_plist(**content: Any) -> dict[str, Any]:
    return {"PayloadType": "com.apple.security.scep", "PayloadVersion": 1, "PayloadIdentifier": "s",
            "PayloadUUID": "u", "PayloadContent": content}


def profile_plist(*payload_items: dict[str, Any], **changes: Any) -> dict[str, Any]:
    plist = {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.profile",
             "PayloadUUID": "A7E4B5C6-0000-4000-8000-0000000000FF", "PayloadContent": list(payload_items),
             **changes}
    return {key: value for key, value in plist.items() if value is not None}


def refusal(source: Any, **kwargs: Any) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        validate_profile(source, **kwargs)
    return info.value


@pytest.mark.parametrize("source", [b"", b"not a plist", b"<plist><dict><key>a</key></plist>",
                                    encode_plist(["an", "array"]), encode_plist("text"), 42, None, ["x"]])
def test_unparseable_or_not_a_dictionary_is_4000_then_1000(source: Any) -> None:
    exc = refusal(source)
    assert chain_of(exc) == [INVALID, (1000, MC_PROFILE)]
    # As the HockeyKit device log shows (SPEC 5, replay 3).
    assert [item.localized_description for item in exc.chain] == ["Invalid Profile", "Invalid Profile"]
    with pytest.raises(ProfileError):
        parse_profile(source if isinstance(source, bytes) else b"\x00")


@pytest.mark.parametrize("key", ["PayloadIdentifier", "PayloadUUID", "PayloadType", "PayloadVersion",
                                 "PayloadContent"])
def test_missing_top_level_key_is_1002(key: str) -> None:
    exc = refusal(profile_plist(mail_plist(), **{key: None}))
    assert chain_of(exc) == [INVALID, (1002, MC_PROFILE)]
    assert exc.code == 1002 and exc.domain == MC_PROFILE
    assert exc.chain[1].localized_description == f"The required field “{key}” is missing."


@pytest.mark.parametrize(("key", "value"), [
    ("PayloadIdentifier", 7), ("PayloadUUID", b"x"), ("PayloadVersion", "1"), ("PayloadVersion", True),
    ("PayloadContent", {"a": 1}), ("PayloadContent", ["not a dict"]), ("PayloadRemovalDisallowed", "yes"),
    ("PayloadDisplayName", ["x"]),
])
def test_wrong_top_level_type_is_1003(key: str, value: Any) -> None:
    exc = refusal(profile_plist(mail_plist(), **{key: value}))
    assert chain_of(exc) == [INVALID, (1003, MC_PROFILE)]


@pytest.mark.parametrize(("key", "value"), [("PayloadType", "Profile"), ("PayloadVersion", 2),
                                            ("PayloadScope", "Device"), ("TargetDeviceType", 9)])
def test_unsupported_top_level_value_is_1000(key: str, value: Any) -> None:
    exc = refusal(profile_plist(mail_plist(), **{key: value}))
    assert chain_of(exc) == [INVALID, (1000, MC_PROFILE)]
    assert key in exc.reason


def test_duplicate_payload_uuids_are_1007() -> None:
    second = mail_plist(PayloadIdentifier="com.example.mail2")
    exc = refusal(profile_plist(mail_plist(), second))
    assert chain_of(exc) == [INVALID, (1007, MC_PROFILE)]
    assert "A7E4B5C6-0000-4000-8000-000000000001" in exc.chain[1].localized_description


def test_duplicate_payload_identifiers_are_1008() -> None:
    second = mail_plist(PayloadUUID="A7E4B5C6-0000-4000-8000-000000000009")
    exc = refusal(profile_plist(mail_plist(), second))
    assert chain_of(exc) == [INVALID, (1008, MC_PROFILE)]


def test_a_payload_may_share_the_profile_identifier() -> None:
    validate_profile(profile_plist(mail_plist(PayloadIdentifier="com.example.profile")))


@pytest.mark.parametrize(("payload", "field"), [
    (mail_plist(IncomingMailServerHostName=None), "IncomingMailServerHostName"),
    (mail_plist(EmailAccountType=None), "EmailAccountType"),
    (mail_plist(PayloadVersion=None), "PayloadVersion"),
    (mail_plist(PayloadUUID=None), "PayloadUUID"),
    (scep_plist(Name="CA"), "PayloadContent.URL"),
    ({"PayloadType": "com.apple.security.root", "PayloadVersion": 1, "PayloadIdentifier": "r",
      "PayloadUUID": "u"}, "PayloadContent"),
    ({"PayloadType": MDM, "PayloadVersion": 1, "PayloadIdentifier": "m", "PayloadUUID": "u",
      "ServerURL": "https://x", "Topic": "com.apple.mgmt.x"}, "IdentityCertificateUUID"),
])
def test_missing_payload_key_is_2002(payload: dict[str, Any], field: str) -> None:
    exc = refusal(profile_plist(payload))
    assert chain_of(exc) == [INVALID, (2002, MC_PAYLOAD)]
    assert f"missing the required field “{field}”" in exc.chain[1].localized_description


@pytest.mark.parametrize(("payload", "field"), [
    (mail_plist(SMIMEEncryptByDefault="yes"), "SMIMEEncryptByDefault"),
    (mail_plist(IncomingMailServerPortNumber="993"), "IncomingMailServerPortNumber"),
    (mail_plist(IncomingMailServerPortNumber=True), "IncomingMailServerPortNumber"),
    (mail_plist(SMIMESigningCertificateUUID=b"uuid"), "SMIMESigningCertificateUUID"),
    (mail_plist(PayloadDisplayName=3), "PayloadDisplayName"),
    (eas_plist(Certificate="base64 text"), "Certificate"),
    (eas_plist(CommunicationServiceRules={"DefaultServiceHandlers": {"AudioCall": 1}}),
     "CommunicationServiceRules.DefaultServiceHandlers.AudioCall"),
    (scep_plist(URL="https://ca", Subject=[[["CN", 5]]]), "PayloadContent.Subject[0][0][1]"),
])
def test_wrong_payload_value_type_is_2003(payload: dict[str, Any], field: str) -> None:
    exc = refusal(profile_plist(payload))
    assert chain_of(exc) == [INVALID, (2003, MC_PAYLOAD)]
    assert f"“{field}”" in exc.chain[1].localized_description


@pytest.mark.parametrize("payload", [
    mail_plist(EmailAccountType="EmailTypeEAS"),
    mail_plist(OutgoingMailServerAuthentication="EmailAuthOAuth"),
    mail_plist(PayloadVersion=2),
    eas_plist(MailNumberOfPastDaysToSync=5),
    scep_plist(URL="https://ca", Keysize=512),
    scep_plist(URL="https://ca", Subject=[[["CN", "a", "b"]]]),
])
def test_value_outside_the_rangelist_is_2004(payload: dict[str, Any]) -> None:
    assert chain_of(refusal(profile_plist(payload))) == [INVALID, (2004, MC_PAYLOAD)]


def _mdm_plist(rights: int | None) -> dict[str, Any]:
    plist = {"PayloadType": MDM, "PayloadVersion": 1, "PayloadIdentifier": "m", "PayloadUUID": "u",
             "ServerURL": "https://mdm.example.com", "Topic": "com.apple.mgmt.x",
             "IdentityCertificateUUID": "i"}
    return plist if rights is None else {**plist, "AccessRights": rights}


@pytest.mark.parametrize("rights", [0, 2, 2 | 4, 128, 128 | 1, 8192, 8191 + 8192, -1])
def test_bad_access_rights_are_2004(rights: int) -> None:
    exc = refusal(profile_plist(_mdm_plist(rights)))
    assert chain_of(exc) == [INVALID, (2004, MC_PAYLOAD)]
    assert "AccessRights" in exc.reason


@pytest.mark.parametrize("rights", [None, 1, 3, 64, 192, 4096, 8191])
def test_good_access_rights_pass(rights: int | None) -> None:
    validate_profile(profile_plist(_mdm_plist(rights)))


@pytest.mark.parametrize(("changes", "version"), [
    ({"Host": None}, None),
    ({"Host": None, "OAuth": False}, None),
    ({"Host": None, "OAuth": True, "OAuthSignInURL": "https://login.example.com"}, None),
    ({"Host": None, "OAuth": True}, "11.4"),  # OAuth is not read before iOS 12
])
def test_exchange_without_host_is_21003(changes: dict[str, Any], version: str | None) -> None:
    exc = refusal(profile_plist(eas_plist(**changes)), os_version=version)
    assert chain_of(exc) == [INVALID, (21003, MC_EAS)]


@pytest.mark.parametrize(("changes", "version"), [
    ({"Host": None, "OAuth": True}, None),
    ({"Host": None, "OAuth": True}, "12.0"),
    # The sign-in URL is not read before iOS 13, so OAuth autodiscovery still applies on 12.
    ({"Host": None, "OAuth": True, "OAuthSignInURL": "https://login.example.com"}, "12.4"),
])
def test_exchange_with_oauth_autodiscovery_needs_no_host(changes: dict[str, Any],
                                                         version: str | None) -> None:
    validate_profile(profile_plist(eas_plist(**changes)), os_version=version)


def test_exchange_with_every_data_class_off_is_21009() -> None:
    off = {key: False for key in ("EnableMail", "EnableContacts", "EnableCalendars", "EnableReminders",
                                  "EnableNotes")}
    exc = refusal(profile_plist(eas_plist(**off)))
    assert chain_of(exc) == [INVALID, (21009, MC_EAS)]
    validate_profile(profile_plist(eas_plist(**off)), os_version="12.4")  # keys unknown before 13.0
    validate_profile(profile_plist(eas_plist(**{**off, "EnableNotes": True})))


# --- ignored keys are recorded, never errors ----------------------------------------------------------

def test_unknown_keys_are_recorded_not_refused() -> None:
    plist = profile_plist(mail_plist(FutureKey=1, SMIMEEnabled=True), ProfileFlavour="vanilla")
    result = validate_profile(plist)
    assert [(item.payload_identifier, item.path, item.support) for item in result.ignored] == [
        (None, ("ProfileFlavour",), Support.UNKNOWN_KEY),
        ("com.example.mail", ("FutureKey",), Support.UNKNOWN_KEY),
    ]
    assert result.profile.extra == {"ProfileFlavour": "vanilla"}
    assert result.ignored[1].describe() == (
        "com.example.mail (com.apple.mail.managed): FutureKey ignored (unknown_key)")


def test_keys_outside_the_os_range_are_ignored_even_with_a_wrong_type() -> None:
    plist = profile_plist(mail_plist(SMIMEEncryptByDefault="yes", SMIMEEnabled=True))
    result = validate_profile(plist, os_version="9.3.3")
    ignored = [(item.path, item.support) for item in result.ignored]
    assert ignored == [(("SMIMEEncryptByDefault",), Support.NOT_YET)]
    assert chain_of(refusal(plist, os_version="12.0")) == [INVALID, (2003, MC_PAYLOAD)]


def test_removed_and_non_ios_keys_are_ignored() -> None:
    payload = {**_mdm_plist(3), "ManagedAppleID": "user@example.com",
               "PromptUserToAllowBootstrapTokenForAuthentication": True}
    result = validate_profile(profile_plist(payload), os_version="18.1")
    assert {(item.path, item.support) for item in result.ignored} == {
        (("ManagedAppleID",), Support.REMOVED),
        (("PromptUserToAllowBootstrapTokenForAuthentication",), Support.NOT_ON_IOS)}
    deprecated = validate_profile(profile_plist(payload), os_version="17.0")
    assert [item.path for item in deprecated.ignored] == [
        ("PromptUserToAllowBootstrapTokenForAuthentication",)]


def test_an_unknown_payload_type_is_installed_but_not_read() -> None:
    custom = {"PayloadType": "com.example.custom", "PayloadVersion": 1, "PayloadIdentifier": "c",
              "PayloadUUID": "u", "Anything": [1, 2]}
    result = validate_profile(profile_plist(custom, mail_plist()))
    assert [(item.payload_type, item.path, item.support) for item in result.ignored] == [
        ("com.example.custom", (), Support.UNKNOWN_KEY)]
    assert result.profile.payloads[0].content == {"Anything": [1, 2]}
    exc = refusal(profile_plist({**custom, "PayloadVersion": "1"}))
    assert chain_of(exc) == [INVALID, (2003, MC_PAYLOAD)]


def test_encrypted_profile_needs_no_payload_content() -> None:
    plist = profile_plist(PayloadContent=None, IsEncrypted=True, EncryptedPayloadContent=b"\x30\x80")
    profile = validate_profile(plist).profile
    assert profile.payloads == () and profile.encrypted
    assert "PayloadContent" not in profile.to_plist()
    assert parse_profile(encode_profile(profile)) == profile
    exc = refusal(profile_plist(PayloadContent=None, IsEncrypted=True))
    assert chain_of(exc) == [INVALID, (1002, MC_PROFILE)]
    assert "EncryptedPayloadContent" in exc.chain[1].localized_description


# --- builders ------------------------------------------------------------------------------------------

def _ios_keys(payload_type: str) -> set[str]:
    own, _ = schema_validator.payload_keys(payload_type)
    common = {key["key"] for key in schema_validator.schema("CommonPayloadKeys")["payloadkeys"]}
    return {key["key"] for key in own if key["key"] not in common
            and ((key.get("supportedOS") or {}).get("iOS") or {}).get("introduced") != "n/a"}


@pytest.mark.parametrize(("builder", "table", "payload_type"), [(mail_payload, MAIL_KEYS, MAIL),
                                                                (eas_payload, EAS_KEYS, EAS)])
def test_account_builders_take_every_ios_key(builder: Any, table: dict[str, str], payload_type: str) -> None:
    assert set(table.values()) == _ios_keys(payload_type)
    parameters = set(inspect.signature(builder).parameters)
    assert parameters == set(table) | {"identifier", "uuid", "display_name", "description", "organization"}
    assert {key for key in table.values() if key.startswith("SMIME")} == {
        "SMIMEEnabled", "SMIMESigningEnabled", "SMIMESigningCertificateUUID", "SMIMESigningUserOverrideable",
        "SMIMESigningCertificateUUIDUserOverrideable", "SMIMEEncryptionEnabled",
        "SMIMEEncryptionCertificateUUID",
        "SMIMEEncryptByDefault", "SMIMEEncryptByDefaultUserOverrideable",
        "SMIMEEncryptionCertificateUUIDUserOverrideable", "SMIMEEnablePerMessageSwitch",
        "SMIMEEnableEncryptionPerMessageSwitch"}


def test_only_given_keys_are_written() -> None:
    payload = Payload.from_plist(mail_plist())
    assert set(payload.content) == {"EmailAccountType", "IncomingMailServerHostName",
                                    "IncomingMailServerAuthentication", "OutgoingMailServerHostName",
                                    "OutgoingMailServerAuthentication"}
    signing = eas_payload(identifier="e", host="h", smime_signing_enabled=False, smime_enabled=None)
    assert dict(signing.content) == {"Host": "h", "SMIMESigningEnabled": False}


def test_mdm_builder_defaults_and_omissions() -> None:
    payload = mdm_payload("https://mdm.example.com/mdm", "com.apple.mgmt.X", "ID-UUID", identifier="m")
    assert dict(payload.content) == {"ServerURL": "https://mdm.example.com/mdm", "Topic": "com.apple.mgmt.X",
                                     "IdentityCertificateUUID": "ID-UUID", "SignMessage": True,
                                     "AccessRights": 8191, "CheckOutWhenRemoved": True}
    bare = mdm_payload("https://m", "t", "i", identifier="m", sign_message=None, access_rights=None,
                       check_out_when_removed=None, check_in_url="https://m/checkin")
    assert dict(bare.content) == {"ServerURL": "https://m", "Topic": "t", "IdentityCertificateUUID": "i",
                                  "CheckInURL": "https://m/checkin"}


def test_certificate_builders_write_apples_keys() -> None:
    creds = credentials()
    p12 = pkcs12_payload(creds["p12"], identifier="p", password="secret", file_name="user.p12")
    assert p12.payload_type == "com.apple.security.pkcs12"
    assert dict(p12.content) == {"PayloadContent": creds["p12"], "Password": "secret",
                                 "PayloadCertificateFileName": "user.p12"}
    root = root_certificate_payload(creds["der"], identifier="r", display_name="Corp CA")
    assert (root.payload_type, root.display_name, dict(root.content)) == (
        "com.apple.security.root", "Corp CA", {"PayloadContent": creds["der"]})
    x509.load_der_x509_certificate(root.content["PayloadContent"])  # real bytes, not a placeholder


def test_scep_builder_nests_its_keys_in_payload_content() -> None:
    payload = scep_payload("https://ca.example.com/scep", identifier="s",
                           subject=[("C", "US"), ("CN", "dev")], key_size=2048, key_type="RSA",
                           subject_alt_name={"rfc822Name": "u@example.com"})
    assert payload.content == {"PayloadContent": {
        "URL": "https://ca.example.com/scep", "Subject": [[["C", "US"]], [["CN", "dev"]]], "Keysize": 2048,
        "Key Type": "RSA", "SubjectAltName": {"rfc822Name": "u@example.com"}}}


def test_default_uuids_are_fresh_upper_case_uuid4() -> None:
    first, second = new_uuid(), new_uuid()
    assert first != second and first == first.upper() and first[14] == "4" and len(first) == 36
    payload = eas_payload(identifier="e", host="h")
    assert len(payload.uuid) == 36
    assert configuration_profile([payload], identifier="p").uuid != payload.uuid


@pytest.mark.parametrize(("build", "code"), [
    (lambda: pkcs12_payload("not bytes", identifier="p"), 2003),  # type: ignore[arg-type]
    (lambda: mail_payload(identifier="m", email_account_type="EmailTypeEAS",
                          incoming_mail_server_host_name="i",
                          incoming_mail_server_authentication="EmailAuthNone",
                          outgoing_mail_server_host_name="o",
                          outgoing_mail_server_authentication="EmailAuthNone"), 2004),
    (lambda: mdm_payload("https://m", "t", "i", identifier="m", access_rights=2), 2004),
    (lambda: eas_payload(identifier="e", mail_number_of_past_days_to_sync=10, host="h"), 2004),
    (lambda: eas_payload(identifier="e"), 21003),
    (lambda: scep_payload(None, identifier="s"), 2002),  # type: ignore[arg-type]
])
def test_builders_refuse_what_ios_would(build: Any, code: int) -> None:
    with pytest.raises(ProfileError) as info:
        build()
    assert info.value.code == code and info.value.chain[0].code == 4000


def test_configuration_profile_refuses_duplicates() -> None:
    payload = eas_payload(identifier="e", host="h")
    with pytest.raises(ProfileError) as info:
        configuration_profile([payload, payload], identifier="p")
    assert info.value.code == 1007


# --- the model ----------------------------------------------------------------------------------------

def test_payload_content_cannot_hold_model_fields() -> None:
    with pytest.raises(ProfileError, match="PayloadIdentifier"):
        Payload(MAIL, "m", "u", {"PayloadIdentifier": "other"})


def test_profile_extra_cannot_hold_model_fields() -> None:
    with pytest.raises(ProfileError, match="PayloadContent"):
        Profile("p", "u", (), extra={"PayloadContent": []})


def test_content_is_a_read_only_plist_shaped_copy() -> None:
    source = {"Subject": (("C", "US"),)}
    payload = Payload("com.example.x", "x", "u", source)
    source["Subject"] = ()
    assert payload.content == {"Subject": [["C", "US"]]}
    with pytest.raises(TypeError):
        payload.content["Subject"] = []  # type: ignore[index]


def test_profile_lookups() -> None:
    p12 = pkcs12_payload(credentials()["p12"], identifier="p12", password="secret")
    mdm = mdm_payload("https://m", "com.apple.mgmt.x", p12.uuid, identifier="mdm")
    profile = configuration_profile([p12, mdm], identifier="enroll")
    identity = profile.payload_by_uuid(profile.payloads_of_type(MDM)[0].content["IdentityCertificateUUID"])
    assert identity is p12
    assert profile.payload_by_uuid("nope") is None


def test_encoded_profile_is_an_xml_mobileconfig() -> None:
    payload = eas_payload(identifier="e", host="h")
    profile = configuration_profile([payload], identifier="p", display_name="Mail")
    data = encode_profile(profile)
    assert data.startswith(b"<?xml") and b"<key>PayloadType</key>\n\t<string>Configuration</string>" in data
    assert b"<key>PayloadVersion</key>\n\t<integer>1</integer>" in data


def test_payload_spec_drives_validation_of_every_catalogued_type() -> None:
    # A payload of each catalogued type missing a required key is refused with 2002.
    for payload_type in ("com.apple.security.pem", "com.apple.security.pkcs1", "com.apple.security.pkcs12"):
        assert "PayloadContent" in payload_spec(payload_type).required_keys
        item = {"PayloadType": payload_type, "PayloadVersion": 1, "PayloadIdentifier": "x",
                "PayloadUUID": "u"}
        assert chain_of(refusal(profile_plist(item))) == [INVALID, (2002, MC_PAYLOAD)]


def test_builders_module_exports_every_builder() -> None:
    for name in ("root_certificate_payload", "pkcs1_payload", "pem_payload", "pkcs12_payload", "scep_payload",
                 "mdm_payload", "mail_payload", "eas_payload", "configuration_profile"):
        assert callable(getattr(builders, name))


# --- the top-level check skips walking payload keys only where it would find nothing in them ----------------

_plist_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), text, st.binary(max_size=4),
                          st.lists(st.integers(0, 2), max_size=2), st.dictionaries(text, st.integers(), max_size=2))


def _outcome(plist: dict[str, Any], version: str | None) -> Any:
    try:
        result = validate_profile(plist, os_version=version)
    except ProfileError as exc:
        return ("refused", exc.reason, exc.chain)
    return ("accepted", result.profile, result.ignored)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(extra=st.dictionaries(st.one_of(text, st.integers(0, 3)), _plist_values, max_size=3),
       where=st.integers(0, 2), replace=st.one_of(st.none(), _plist_values),
       version=st.sampled_from([None, "4.0", "12.0", "17.5"]))
def test_the_top_level_check_finds_the_same_with_and_without_walking_payload_keys(extra, where, replace, version):
    import mdm_protocol.profile as module

    payloads = [root_certificate_payload(credentials()["der"], identifier="com.example.root"),
                pkcs12_payload(credentials()["p12"], identifier="com.example.p12", password="secret"),
                mdm_payload("https://mdm.example.com/mdm", "com.apple.mgmt.x", new_uuid(),
                            identifier="com.example.mdm")]
    plist = configuration_profile(payloads, identifier="com.example.profile").to_plist()
    plist["PayloadContent"][where].update(extra)  # unknown keys, wrong types, even a non-string key
    if replace is not None:
        plist["PayloadContent"][where] = replace  # not a dictionary at all (or another one)
    skipping = _outcome(plist, version)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "_payloads_free_form", lambda version: False)
        assert skipping == _outcome(plist, version)
    event(skipping[0])


def test_payload_keys_are_left_to_their_own_schema_only_where_the_device_reads_payloads_as_free_form():
    from mdm_protocol.osversion import OSVersion
    from mdm_protocol.profile import _payloads_free_form

    assert _payloads_free_form(OSVersion.parse("17.5")) and _payloads_free_form(None)
    assert not _payloads_free_form(OSVersion.parse("3.0"))  # TopLevel's "ANY" item came with iOS 4
