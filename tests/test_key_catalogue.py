"""The generated key catalogue: up to date with Apple's YAML, faithful to it, and its typed API."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from datetime import datetime
from pathlib import Path

import pytest
from kits import schema_validator
from kits.corpus import SCHEMA, require

from mdm_protocol import key_catalogue
from mdm_protocol.errors import MessageError
from mdm_protocol.key_catalogue import (
    Issue,
    KeySpec,
    Support,
    ValueType,
    check_keys,
    format_path,
    ios_payload_types,
    key_support,
    payload_spec,
    payload_types,
)
from mdm_protocol.osversion import OSVersion

ROOT = Path(__file__).resolve().parents[1]
MAIL, EAS, MDM = "com.apple.mail.managed", "com.apple.eas.account", "com.apple.mdm"
SCEP = "com.apple.security.scep"


def _generator():
    path = ROOT / "tools" / "gen_key_catalogue.py"
    spec = importlib.util.spec_from_file_location("gen_key_catalogue", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_key_catalogue", module)
    spec.loader.exec_module(module)
    return module


# --- the generated module against the YAML ---------------------------------------------------------------

def test_committed_module_equals_a_fresh_generation() -> None:
    require(SCHEMA)
    committed = (ROOT / "mdm_protocol" / "_key_catalogue.py").read_text(encoding="utf-8")
    assert committed == _generator().render(SCHEMA), "run tools/gen_key_catalogue.py and commit the result"


def test_check_mode_passes_on_the_committed_module() -> None:
    require(SCHEMA)
    assert _generator().main(["--schema", str(SCHEMA), "--check"]) == 0


def test_check_mode_reports_stale_and_current(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require(SCHEMA)
    gen = _generator()
    out = tmp_path / "catalogue.py"
    out.write_text("PAYLOADS = {}\n")
    assert gen.main(["--schema", str(SCHEMA), "--output", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert gen.main(["--schema", str(SCHEMA), "--output", str(out)]) == 0
    assert gen.main(["--schema", str(SCHEMA), "--output", str(out), "--check"]) == 0


def test_generator_refuses_a_schema_dir_without_the_files(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.main(["--schema", str(tmp_path), "--output", str(tmp_path / "x.py")]) == 2
    assert not (tmp_path / "x.py").exists()


def test_generator_refuses_an_unquoted_float_version(tmp_path: Path) -> None:
    # YAML reads `introduced: 10.10` as the float 10.1; recording "10.1" would be silently wrong.
    path = tmp_path / "com.example.yaml"
    path.write_text("title: X\npayload:\n  payloadtype: com.example\n  supportedOS:\n    iOS:\n"
                    "      introduced: '4.0'\npayloadkeys:\n- key: A\n  type: <string>\n  supportedOS:\n"
                    "    iOS:\n      introduced: 10.10\n")
    gen = _generator()
    with pytest.raises(gen.SchemaError, match="not a string"):
        gen.load_payload(path)


def test_generator_refuses_unknown_key_fields(tmp_path: Path) -> None:
    path = tmp_path / "com.example.yaml"
    path.write_text("title: X\npayload:\n  payloadtype: com.example\npayloadkeys:\n"
                    "- key: A\n  type: <string>\n  newfield: 1\n")
    gen = _generator()
    with pytest.raises(gen.SchemaError, match="newfield"):
        gen.load_payload(path)


def _all_paths(keys: tuple[KeySpec, ...], prefix: tuple[str, ...] = ()):
    for spec in keys:
        path = (*prefix, spec.name)
        yield path
        nested = spec
        while nested.type is ValueType.ARRAY and nested.item is not None:
            nested = nested.item
        if nested.type is ValueType.DICTIONARY:
            yield from _all_paths(nested.subkeys, path)


def _boundary_versions() -> list[str]:
    found = {"3.0", "4.0", "99.0"}
    for payload_type in (*payload_types(), "TopLevel"):
        for path in _all_paths(payload_spec(payload_type).keys):
            ios = payload_spec(payload_type).key_at(path).ios
            for version in (ios.introduced, ios.deprecated, ios.removed):
                if version is not None:
                    found.update({str(version), f"{version.major}.{version.minor}.{version.patch + 1}"})
                    if version.minor:
                        found.add(f"{version.major}.{version.minor - 1}.9")
    return sorted(found, key=OSVersion.parse)


def test_every_key_support_matches_the_yaml_at_every_boundary_version() -> None:
    require(SCHEMA)
    versions = _boundary_versions()
    checked = 0
    for payload_type in (*payload_types(), "TopLevel"):
        for path, version in itertools.product(_all_paths(payload_spec(payload_type).keys), versions):
            if path == ("ConsentText", "ANY"):
                continue  # the generator flattens ConsentText's "ConsentTextItem" wrapper on purpose
            expected = schema_validator.key_support(payload_type, path, version)
            assert key_support(payload_type, path, version).value == expected, (payload_type, path, version)
            checked += 1
    assert checked > 3000


def test_catalogue_holds_every_yaml_key_with_type_presence_default_and_rangelist() -> None:
    require(SCHEMA)
    for payload_type in (*payload_types(), "TopLevel"):
        keys, _ = schema_validator.payload_keys(payload_type)
        spec = payload_spec(payload_type)
        assert [key["key"] for key in keys] == [entry.name for entry in spec.keys]
        for key, entry in zip(keys, spec.keys, strict=True):
            assert entry.type.value == key["type"]
            assert entry.required == (key.get("presence") == "required")
            assert entry.default == key.get("default")
            assert entry.rangelist == (tuple(key["rangelist"]) if "rangelist" in key else None)


# --- facts the rest of mdmsim relies on (SPEC 4) ---------------------------------------------------------

@pytest.mark.parametrize(("payload_type", "key", "version", "expected"), [
    (MAIL, "SMIMEEnabled", "9.3.3", Support.SUPPORTED),
    (MAIL, "SMIMESigningEnabled", "9.3.5", Support.NOT_YET),
    (MAIL, "SMIMESigningEnabled", "10.0", Support.SUPPORTED),
    (MAIL, "SMIMEEnablePerMessageSwitch", "7.1", Support.NOT_YET),
    (MAIL, "SMIMEEnablePerMessageSwitch", "10.0", Support.DEPRECATED_BUT_HONOURED),
    (MAIL, "SMIMEEncryptByDefault", "11.4", Support.NOT_YET),
    (MAIL, "SMIMEEncryptByDefault", "12.0", Support.SUPPORTED),
    (MAIL, "VPNUUID", "13.7", Support.NOT_YET),
    (EAS, "SMIMEEnabled", "10.0", Support.DEPRECATED_BUT_HONOURED),
    (EAS, "SMIMESigningEnabled", "10.2", Support.NOT_YET),
    (EAS, "SMIMESigningEnabled", "10.3", Support.SUPPORTED),
    (EAS, "SMIMEEncryptionEnabled", "12.0", Support.DEPRECATED_BUT_HONOURED),
    (EAS, "SMIMEEnablePerMessageSwitch", "11.0", Support.SUPPORTED),
    (EAS, "OAuth", "11.4", Support.NOT_YET),
    (EAS, "OAuth", "12.0", Support.SUPPORTED),
    (EAS, "HeaderMagic", "6.1", Support.SUPPORTED),
    (EAS, "HeaderMagic", "7.0", Support.DEPRECATED_BUT_HONOURED),
    (EAS, ("CommunicationServiceRules", "DefaultServiceHandlers", "AudioCall"), "9.3", Support.NOT_YET),
    (EAS, ("CommunicationServiceRules", "DefaultServiceHandlers", "AudioCall"), "10.0", Support.SUPPORTED),
    (MDM, "ManagedAppleID", "13.0", Support.NOT_YET),
    (MDM, "ManagedAppleID", "17.0", Support.DEPRECATED_BUT_HONOURED),
    (MDM, "ManagedAppleID", "18.0", Support.REMOVED),
    (MDM, "PromptUserToAllowBootstrapTokenForAuthentication", "18.1", Support.NOT_ON_IOS),
    (MDM, ("ServerURLPinningCertificateUUIDs",), "13.4", Support.SUPPORTED),
    (MDM, "PayloadIdentifier", "4.0", Support.SUPPORTED),
    ("com.apple.security.pkcs12", "AllowAllAppsAccess", "18.1", Support.NOT_ON_IOS),
    (SCEP, ("PayloadContent", "URL"), "4.0", Support.SUPPORTED),  # macOS-only supportedOS: iOS inherits
    (SCEP, ("PayloadContent", "NoSuchKey"), "18.1", Support.UNKNOWN_KEY),
    (MAIL, "NoSuchKey", "18.1", Support.UNKNOWN_KEY),
    ("TopLevel", "TargetDeviceType", "12.1", Support.NOT_YET),
    ("TopLevel", "TargetDeviceType", "12.2", Support.SUPPORTED),
])
def test_key_support(payload_type: str, key: str | tuple[str, ...], version: str, expected: Support) -> None:
    assert key_support(payload_type, key, version) is expected
    assert key_support(payload_type, key, OSVersion.parse(version)) is expected


def test_honoured_means_a_device_reads_the_key() -> None:
    assert {support for support in Support if support.honoured} == {
        Support.SUPPORTED, Support.DEPRECATED_BUT_HONOURED}


def test_payload_facts() -> None:
    assert payload_spec(MDM).multiple is False
    assert payload_spec(EAS).multiple is True
    assert payload_spec(EAS).ios.introduced == OSVersion(4, 0)
    assert payload_spec(MAIL).ios.user_enrollment == "allowed"
    assert payload_spec(MAIL).shared_ipad == "allowed"
    assert {"com.apple.security.root", "com.apple.security.pkcs1", "com.apple.security.pem",
            "com.apple.security.pkcs12", SCEP, MDM, MAIL, EAS} < set(ios_payload_types())
    assert payload_spec("com.apple.wifi.managed").ios.introduced == OSVersion(4, 0)
    assert payload_spec("com.apple.dock").ios.introduced is None  # macOS only
    assert "com.apple.dock" in payload_types() and "com.apple.dock" not in ios_payload_types()


def test_every_payload_type_of_the_schema_has_a_catalogue_entry() -> None:
    require(SCHEMA)
    assert set(payload_types()) == set(schema_validator.payload_type_names())
    on_ios = {name for name in schema_validator.payload_type_names()
              if schema_validator.payload_keys(name)[1]["introduced"] not in (None, "n/a")}
    assert set(ios_payload_types()) == on_ios
    assert len(on_ios) == 48  # Apple's 18.1 tree: 48 payload types exist on iOS (72 do not)


def test_range_bounds_are_checked() -> None:
    spec = payload_spec("com.apple.mobiledevice.passwordpolicy").key("maxFailedAttempts")
    assert spec.range == (2, 11)
    low, high = spec.range
    assert check_keys((spec,), {spec.name: low if low is not None else high}).issues == ()
    outside = (high + 1) if high is not None else (low - 1)
    (issue,) = check_keys((spec,), {spec.name: outside}).issues
    assert issue.issue is Issue.NOT_ALLOWED


def test_payload_keys_include_the_common_keys() -> None:
    spec = payload_spec(MAIL)
    assert spec.required_keys == (
        "PayloadIdentifier", "PayloadUUID", "PayloadType", "PayloadVersion", "EmailAccountType",
        "IncomingMailServerAuthentication", "IncomingMailServerHostName", "OutgoingMailServerAuthentication",
        "OutgoingMailServerHostName")
    assert spec.key("PayloadVersion").rangelist == (1,)
    # The certificate payload's own PayloadContent (data) wins; there is no common PayloadContent.
    assert payload_spec("com.apple.security.root").key("PayloadContent").type is ValueType.DATA


def test_key_details() -> None:
    eas = payload_spec(EAS)
    assert eas.key("MailNumberOfPastDaysToSync").rangelist == (0, 1, 3, 7, 14, 31)
    assert eas.key("MailNumberOfPastDaysToSync").default == 7
    assert eas.key("EnableMail").default is True
    assert payload_spec(MDM).key("ServerURL").format == "^https://.*$"
    assert payload_spec("TopLevel").key("PayloadRemovalDisallowed").ios.supervised is True
    assert payload_spec(MDM).key("ManagedAppleID").ios.user_enrollment == "required"
    pair_item = payload_spec(SCEP).key_at(("PayloadContent", "Subject", "SCEPSubjectArrayPairItem"))
    assert pair_item is None  # array items are not named in paths; walk the spec instead
    subject = payload_spec(SCEP).key_at(("PayloadContent", "Subject"))
    assert subject.item.item.item.repetition == (2, 2)


def test_consent_text_is_a_free_form_dictionary_of_strings() -> None:
    consent = payload_spec("TopLevel").key("ConsentText")
    assert consent.subkey("en").type is ValueType.STRING
    assert check_keys((consent,), {"ConsentText": {"en": "Agree?", "default": "Agree?"}}).issues == ()


@pytest.mark.parametrize("bad", ["com.example.nothing", "", None, 42])
def test_unknown_payload_type_is_a_message_error(bad: object) -> None:
    with pytest.raises(MessageError, match="no schema for payload type"):
        payload_spec(bad)  # type: ignore[arg-type]
    with pytest.raises(MessageError):
        key_support(bad, "X", "17.0")  # type: ignore[arg-type]


def test_bad_os_version_is_a_message_error() -> None:
    with pytest.raises(MessageError):
        key_support(MAIL, "SMIMEEnabled", "ten")


# --- value checks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value_type", "good", "bad"), [
    (ValueType.STRING, "x", b"x"),
    (ValueType.INTEGER, 3, True),
    (ValueType.BOOLEAN, False, 0),
    (ValueType.DATA, b"\x00", "AA=="),
    (ValueType.DATE, datetime(2024, 1, 1), "2024-01-01"),
    (ValueType.REAL, 2, False),
    (ValueType.ARRAY, [], {}),
    (ValueType.DICTIONARY, {}, []),
])
def test_value_types(value_type: ValueType, good: object, bad: object) -> None:
    assert value_type.accepts(good)
    assert not value_type.accepts(bad)
    assert ValueType.ANY.accepts(bad)


def test_check_keys_reports_each_kind_of_issue_with_its_path() -> None:
    spec = payload_spec(SCEP)
    content = {"URL": 5, "Keysize": 512, "Subject": [[["CN"]]], "Other": 1}
    result = check_keys(spec.keys, {"PayloadContent": content})
    issues = {(issue.path, issue.issue) for issue in result.issues}
    assert (("PayloadIdentifier",), Issue.MISSING) in issues
    assert (("PayloadContent", "URL"), Issue.WRONG_TYPE) in issues
    assert (("PayloadContent", "Keysize"), Issue.NOT_ALLOWED) in issues
    assert (("PayloadContent", "Subject", 0, 0), Issue.NOT_ALLOWED) in issues
    assert [(skip.path, skip.support) for skip in result.skipped] == [
        (("PayloadContent", "Other"), Support.UNKNOWN_KEY)]


def test_check_keys_skips_keys_the_os_version_does_not_read() -> None:
    keys = payload_spec(MAIL).keys
    content = {"SMIMEEncryptByDefault": "yes", "SMIMEEnabled": True}
    old = check_keys(keys, content, "11.4")
    assert all(issue.issue is Issue.MISSING for issue in old.issues)
    skipped = [(skip.path, skip.support) for skip in old.skipped]
    assert skipped == [(("SMIMEEncryptByDefault",), Support.NOT_YET)]
    new = check_keys(keys, content, "12.0")
    assert (("SMIMEEncryptByDefault",), Issue.WRONG_TYPE) in {(i.path, i.issue) for i in new.issues}


def test_required_keys_a_version_does_not_know_are_not_required() -> None:
    spec = KeySpec("Later", ValueType.STRING, True, key_catalogue.IOSSupport(OSVersion(15)))
    assert check_keys((spec,), {}, "14.0").issues == ()
    assert [issue.issue for issue in check_keys((spec,), {}, "15.0").issues] == [Issue.MISSING]


def test_format_path() -> None:
    assert format_path(("PayloadContent", "Subject", 0, 1)) == "PayloadContent.Subject[0][1]"
    assert format_path(()) == ""
