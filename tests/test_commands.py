"""Command builders and parsers: Apple's wire shapes, request validation, device answers and round trips."""

from __future__ import annotations

import datetime
import plistlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from kits.corpus import DEVICE_MESSAGES, require

from mdm_protocol.commands import (
    APPLICATION_ITEMS,
    CertificateListItem,
    InstalledApplication,
    ProfileListItem,
    ProfileListPayload,
    UnknownRequestType,
    certificate_list,
    certificate_list_response,
    check_command,
    device_information,
    device_information_response,
    install_profile,
    installed_application_list,
    installed_application_list_response,
    parse_certificate_list,
    parse_device_information,
    parse_installed_application_list,
    parse_profile_list,
    profile_list,
    profile_list_response,
    remove_profile,
)
from mdm_protocol.errors import MC_MDM, MDM_ERRORS, MessageError, error_chain
from mdm_protocol.report import (
    Command,
    CommandReport,
    Status,
    decode_report,
    decode_server_response,
    encode_command,
    encode_report,
)

UDID = "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"


def self_signed_der(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


ROOT_DER = self_signed_der("Example Root CA")


def wire(command: Command) -> dict:
    return plistlib.loads(encode_command(command))


# --- builders ----------------------------------------------------------------------------------------------

def test_install_profile_wire_shape():
    profile = plistlib.dumps({"PayloadType": "Configuration", "PayloadIdentifier": "com.example.p"})
    assert wire(install_profile(profile, command_uuid="C1")) == {
        "CommandUUID": "C1", "Command": {"RequestType": "InstallProfile", "Payload": profile}}
    assert install_profile(bytearray(profile)).keys["Payload"] == profile


@pytest.mark.parametrize(("command", "keys"), [
    (remove_profile("com.example.wifi"), {"RequestType": "RemoveProfile", "Identifier": "com.example.wifi"}),
    (profile_list(), {"RequestType": "ProfileList"}),
    (profile_list(managed_only=False), {"RequestType": "ProfileList", "ManagedOnly": False}),
    (certificate_list(managed_only=True), {"RequestType": "CertificateList", "ManagedOnly": True}),
    (device_information(("UDID", "OSVersion")), {"RequestType": "DeviceInformation",
                                                 "Queries": ["UDID", "OSVersion"]}),
    (device_information(["UDID"], b"nonce"), {"RequestType": "DeviceInformation", "Queries": ["UDID"],
                                              "DeviceAttestationNonce": b"nonce"}),
    (installed_application_list(), {"RequestType": "InstalledApplicationList"}),
    (installed_application_list(["com.example.app"], True, ["Name", "Version"]), {
        "RequestType": "InstalledApplicationList", "Identifiers": ["com.example.app"],
        "ManagedAppsOnly": True, "Items": ["Name", "Version"]}),
])
def test_builders_emit_apples_keys_and_omit_unset_ones(command, keys):
    assert wire(command)["Command"] == keys


def test_command_uuid_is_passed_through():
    assert remove_profile("x", command_uuid="fixed").command_uuid == "fixed"


@pytest.mark.parametrize(("build", "match"), [
    (lambda: install_profile("<plist/>"), "Payload must be data"),  # type: ignore[arg-type]
    (lambda: install_profile(b""), "Payload is empty"),
    (lambda: remove_profile(""), "Identifier is empty"),
    (lambda: remove_profile(None), "missing required key Identifier"),  # type: ignore[arg-type]
    (lambda: remove_profile(42), "Identifier must be a string"),  # type: ignore[arg-type]
    (lambda: profile_list(managed_only="yes"), "ManagedOnly must be a boolean"),  # type: ignore[arg-type]
    (lambda: device_information("UDID"), "Queries must be a list of strings, not str"),
    (lambda: device_information(["UDID", 3]), "every item of Queries must be a string"),  # type: ignore[list-item]
    (lambda: device_information(["UDID"], "nonce"), "DeviceAttestationNonce must be data"),  # type: ignore[arg-type]
    (lambda: installed_application_list(items=["Nmae"]), r"unknown Items \['Nmae'\]"),
    (lambda: installed_application_list(identifiers="com.x"), "Identifiers must be a list of strings"),
])
def test_builders_refuse_bad_requests(build, match):
    with pytest.raises(MessageError, match=match):
        build()


def test_remove_profile_without_identifier_is_a_format_error():
    # A device answers CommandFormatError for this (SPEC 2, [DEC] MDMUserParser): a MessageError, not the
    # UnknownRequestType that becomes Error 12021.
    command = decode_server_response(encode_command(Command("RemoveProfile", {}, "C1")))
    with pytest.raises(MessageError, match="RemoveProfile: missing required key Identifier") as info:
        check_command(command)
    assert not isinstance(info.value, UnknownRequestType)


def test_unknown_request_type_reads_like_ios():
    body = require(DEVICE_MESSAGES / "commandment/Errors/error_invalid_request_type.plist").read_bytes()
    ios_text = decode_report(body).error_chain[0].localized_description
    # The capture is OSUpdateStatus, which mdmsim now speaks (iOS 9-26); UserList stays unknown to it.
    with pytest.raises(UnknownRequestType) as info:
        check_command(Command("UserList"))
    assert info.value.reason == ios_text.replace("OSUpdateStatus", "UserList")
    assert isinstance(info.value, MessageError)


def test_items_accepts_every_schema_key():
    every = sorted(APPLICATION_ITEMS)
    assert installed_application_list(items=every).keys["Items"] == every


# --- parsers on real reports -------------------------------------------------------------------------------

def test_parse_device_information_from_a_real_ipad():
    body = require(DEVICE_MESSAGES / "commandment/DeviceInformation/iOS-11.3.1.xml").read_bytes()
    info = parse_device_information(decode_report(body))
    assert info["ModelName"] == "iPad" and info["ProductName"] == "iPad4,1" and info["OSVersion"] == "11.3.1"
    assert info["DeviceCapacity"] == pytest.approx(26.914535522460938)
    assert info["DataRoamingEnabled"] is False and info["SubscriberMCC"] == ""


def test_parse_device_information_from_nanomdm():
    body = require(DEVICE_MESSAGES / "nanomdm/DeviceInformation.1.plist").read_bytes()
    info = parse_device_information(decode_report(body))
    assert info == {"HostName": "fruit.example.com", "UDID": "66ADE930-5FDF-5EC4-8429-15640684C489"}


def test_parsers_refuse_reports_that_were_not_acknowledged():
    # The iPhone's answer to RemoveProfile for a profile that is not installed (SPEC 3).
    chain = error_chain((MDM_ERRORS[12075], "The profile \u201cFleet.WiFi\u201d is not installed."))
    report = decode_report(encode_report(CommandReport(Status.ERROR, UDID, None, "C1", chain)))
    assert report.error_chain[0].domain == MC_MDM and report.error_chain[0].code == 12075
    with pytest.raises(MessageError, match="not acknowledged: Status Error .*Fleet.WiFi"):
        parse_profile_list(report)
    with pytest.raises(MessageError, match="Status NotNow"):
        parse_certificate_list(CommandReport(Status.NOT_NOW, UDID, command_uuid="C2"))


@pytest.mark.parametrize(("parse", "extra", "match"), [
    (parse_profile_list, {}, "ProfileList report has no ProfileList"),
    (parse_profile_list, {"ProfileList": {"a": 1}}, "ProfileList must be an array"),
    (parse_certificate_list, {"CertificateList": [{"CommonName": "x", "IsIdentity": True}]},
     "missing required key Data"),
    (parse_device_information, {"QueryResponses": ["UDID"]}, "QueryResponses must be"),
    (parse_installed_application_list, {"InstalledApplicationList": [{"Name": "Mail"}]},
     "missing required key Identifier"),
    (parse_installed_application_list, {"InstalledApplicationList": ["com.apple.mail"]},
     "must be a dictionary"),
    (parse_profile_list, {"ProfileList": [{"PayloadUUID": "U", "PayloadIdentifier": "I",
                                           "IsManaged": "yes"}]}, "IsManaged must be a boolean"),
    (parse_profile_list, {"ProfileList": [{"PayloadUUID": "U", "PayloadIdentifier": "I",
                                           "PayloadContent": [{"PayloadType": "com.apple.mdm"}]}]},
     "PayloadContent item: missing required key PayloadVersion"),
    (parse_profile_list, {"ProfileList": [{"PayloadUUID": "U", "PayloadIdentifier": "I",
                                           "SignerCertificates": ["PEM text"]}]},
     "every item of SignerCertificates must be bytes"),
])
def test_parsers_refuse_malformed_answers(parse, extra, match):
    with pytest.raises(MessageError, match=match):
        parse(CommandReport(Status.ACKNOWLEDGED, UDID, command_uuid="C1", extra=extra))


def test_profile_list_item_from_a_device_shaped_answer():
    answer = {
        "PayloadUUID": "9F3C6E8A-1D2B-4C5D-8E9F-0A1B2C3D4E5F", "PayloadIdentifier": "com.example.mdm",
        "PayloadVersion": 1, "PayloadDisplayName": "MDM", "PayloadOrganization": "Example",
        "PayloadRemovalDisallowed": False, "HasRemovalPasscode": False, "IsEncrypted": False,
        "IsManaged": True,
        "SignerCertificates": [ROOT_DER], "Source": "Declarative Device Management",
        "PayloadContent": [
            {"PayloadType": "com.apple.security.root", "PayloadVersion": 1,
             "PayloadIdentifier": "com.example.mdm.root", "PayloadUUID": "1B7A",
             "PayloadDisplayName": "Root"},
            {"PayloadType": "com.apple.mdm", "PayloadVersion": 1, "PayloadIdentifier": "com.example.mdm.mdm"},
        ],
    }
    report = CommandReport(Status.ACKNOWLEDGED, UDID, command_uuid="C1", extra={"ProfileList": [answer]})
    (item,) = parse_profile_list(decode_report(encode_report(report)))
    assert item.is_managed and not item.is_encrypted and item.payload_version == 1
    assert x509.load_der_x509_certificate(item.signer_certificates[0]).subject.rfc4514_string() == (
        "CN=Example Root CA")
    assert item.payload_content is not None
    assert [p.payload_type for p in item.payload_content] == ["com.apple.security.root", "com.apple.mdm"]
    assert item.payload_content[1].payload_uuid is None  # before iOS 17 payloads carry no PayloadUUID
    assert item.to_plist() == answer


def test_encrypted_profile_lists_no_payload_content():
    (item,) = parse_profile_list(profile_list_response(UDID, "C1", [
        ProfileListItem("U", "com.example.secret", is_encrypted=True)]))
    assert item.payload_content is None and "PayloadContent" not in item.to_plist()


def test_certificate_list_answer_carries_real_der():
    report = certificate_list_response(UDID, "C1", [CertificateListItem("Example Root CA", False, ROOT_DER)])
    (item,) = parse_certificate_list(decode_report(encode_report(report)))
    assert x509.load_der_x509_certificate(item.data).subject.rfc4514_string() == "CN=Example Root CA"


def test_installed_application_keeps_unknown_keys():
    app = {"Identifier": "com.example.app", "Name": "App", "Version": "42", "ShortVersion": "1.2",
           "BundleSize": 1024, "DynamicSize": 2048, "IsValidated": True, "Installing": False,
           "BetaApp": False, "ExternalVersionIdentifier": 849}
    extra = {"InstalledApplicationList": [app]}
    report = CommandReport(Status.ACKNOWLEDGED, UDID, command_uuid="C1", extra=extra)
    (parsed,) = parse_installed_application_list(report)
    assert parsed.bundle_size == 1024 and parsed.is_validated is True
    assert dict(parsed.extra) == {"BetaApp": False, "ExternalVersionIdentifier": 849}
    assert parsed.to_plist() == app


def test_response_builders_refuse_wrong_item_types():
    with pytest.raises(MessageError, match="expected ProfileListItem"):
        profile_list_response(UDID, "C1", [{"PayloadUUID": "U"}])  # type: ignore[list-item]
    with pytest.raises(MessageError, match="QueryResponses must be a mapping"):
        device_information_response(UDID, "C1", ["UDID"])  # type: ignore[arg-type]


# --- round trips -------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
               max_size=16)
WORD = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=12)
OPT = st.none() | TEXT
OPT_INT = st.none() | st.integers(0, 2**62)
OPT_BOOL = st.none() | st.booleans()
WORDS = st.lists(WORD, max_size=3)

COMMANDS = st.one_of(
    st.builds(install_profile, st.binary(min_size=1, max_size=200), command_uuid=st.none() | WORD),
    st.builds(remove_profile, WORD, command_uuid=st.none() | WORD),
    st.builds(profile_list, OPT_BOOL), st.builds(certificate_list, OPT_BOOL),
    st.builds(device_information, WORDS, st.none() | st.binary(max_size=32)),
    st.builds(installed_application_list, st.none() | WORDS, OPT_BOOL,
              st.none() | st.lists(st.sampled_from(sorted(APPLICATION_ITEMS)), max_size=4)),
)


@given(COMMANDS, st.booleans())
def test_every_command_round_trips_and_stays_valid(command, binary):
    decoded = decode_server_response(encode_command(command, binary=binary))
    assert decoded == command
    assert check_command(decoded) is decoded


PAYLOADS = st.builds(ProfileListPayload, WORD, st.integers(0, 10), WORD, st.none() | WORD, OPT, OPT, OPT)
PROFILES = st.builds(
    ProfileListItem, WORD, WORD, OPT_INT, OPT, OPT, OPT, st.booleans(), st.booleans(), st.booleans(),
    st.booleans(), st.lists(st.binary(min_size=1, max_size=64), max_size=2).map(tuple), OPT,
    st.none() | st.lists(PAYLOADS, max_size=3).map(tuple))
CERTIFICATES = st.builds(CertificateListItem, TEXT, st.booleans(), st.binary(min_size=1, max_size=64))
APPS = st.builds(InstalledApplication, WORD, OPT, OPT, OPT, OPT_INT, OPT_INT, OPT_BOOL, OPT_BOOL)


@given(st.lists(PROFILES, max_size=3), st.booleans())
def test_profile_list_answer_round_trip(items, binary):
    report = profile_list_response(UDID, "C1", items)
    assert parse_profile_list(decode_report(encode_report(report, binary=binary))) == tuple(items)


@given(st.lists(CERTIFICATES, max_size=3))
def test_certificate_list_answer_round_trip(items):
    report = certificate_list_response(None, "C1", items, enrollment_id="E1")
    assert parse_certificate_list(decode_report(encode_report(report))) == tuple(items)


@given(st.lists(APPS, max_size=3))
def test_installed_application_list_answer_round_trip(apps):
    report = installed_application_list_response(UDID, "C1", apps)
    assert parse_installed_application_list(decode_report(encode_report(report))) == tuple(apps)


@given(st.dictionaries(WORD, TEXT | st.floats(0, 1000) | st.booleans(), max_size=6))
def test_device_information_answer_round_trip(responses):
    report = device_information_response(UDID, "C1", responses)
    assert parse_device_information(decode_report(encode_report(report))) == responses
