"""The generated declaration catalogue (up to date with Apple's YAML) and the declaration validator."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from kits.corpus import SCHEMA, require

from mdm_protocol.declaration_schema import (
    REASON_CODES,
    DeclarationKind,
    Reason,
    declaration_spec,
    declaration_types,
    status_item_ios,
    validate_credential,
    validate_declaration,
)
from mdm_protocol.osversion import OSVersion

ROOT = Path(__file__).resolve().parents[1]
MAIL = "com.apple.configuration.account.mail"
IDENTITY = "com.apple.asset.credential.identity"


def _generator():
    sys.path.insert(0, str(ROOT / "tools"))
    path = ROOT / "tools" / "gen_declaration_catalogue.py"
    spec = importlib.util.spec_from_file_location("gen_declaration_catalogue", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mail(**payload):
    body = {"IncomingServer": {"ServerType": "IMAP", "HostName": "imap.example.com", "AuthenticationMethod": "None"},
            "OutgoingServer": {"HostName": "smtp.example.com", "AuthenticationMethod": "None"}}
    body.update(payload)
    return {"Type": MAIL, "Identifier": "mail-1", "ServerToken": "t1", "Payload": body}


SMIME = {"Signing": {"Enabled": True, "IdentityAssetReference": "id-1"},
         "Encryption": {"Enabled": False, "PerMessageSwitchEnabled": True}}


# --- the generated module against the YAML ---------------------------------------------------------------

def test_committed_module_equals_a_fresh_generation() -> None:
    require(SCHEMA)
    committed = (ROOT / "mdm_protocol" / "_declaration_catalogue.py").read_text(encoding="utf-8")
    assert committed == _generator().render(SCHEMA), "run tools/gen_declaration_catalogue.py and commit the result"
    assert _generator().main(["--schema", str(SCHEMA), "--check"]) == 0


def test_check_mode_reports_a_stale_module(tmp_path: Path) -> None:
    require(SCHEMA)
    stale = tmp_path / "stale.py"
    stale.write_text("# old\n", encoding="utf-8")
    assert _generator().main(["--schema", str(SCHEMA), "--output", str(stale), "--check"]) == 1


def test_every_declaration_file_is_catalogued_with_its_kind_and_ios_version() -> None:
    folder = require(SCHEMA / "declarative" / "declarations")
    seen = {}
    for kind in ("activations", "assets", "configurations", "management"):
        for path in (folder / kind).glob("*.yaml"):
            payload = yaml.safe_load(path.read_text(encoding="utf-8"))["payload"]
            seen[payload["declarationtype"]] = (kind, (payload["supportedOS"].get("iOS") or {}).get("introduced"))
    assert set(declaration_types()) == set(seen)
    for name, (kind, introduced) in seen.items():
        spec = declaration_spec(name)
        assert spec.kind.value + ("s" if kind != "management" else "") == kind
        assert (None if introduced in (None, "n/a") else OSVersion.parse(introduced)) == spec.ios.introduced


def test_reason_codes_are_the_schemas() -> None:
    base = yaml.safe_load(require(SCHEMA / "declarative" / "declarations" / "declarationbase.yaml").read_text())
    assert {item["value"] for item in base["reasons"]} == REASON_CODES
    with pytest.raises(ValueError, match="not a reason code"):
        Reason("Error.Made.Up", "no")
    with pytest.raises(ValueError, match="has no details"):
        Reason("Error.MissingAssets", "no", {"Colour": "red"})


def test_asset_references_name_their_asset_types() -> None:
    references = dict(declaration_spec(MAIL).asset_references)
    assert IDENTITY in references[("SMIME", "Signing", "IdentityAssetReference")]
    assert status_item_ios("security.certificate.list").introduced == OSVersion(17)
    assert status_item_ios("no.such.item") is None


# --- the validator ------------------------------------------------------------------------------------------

def test_a_mail_account_with_smime_is_valid_on_ios_17_and_reads_every_key() -> None:
    verdict = validate_declaration(mail(SMIME=SMIME), "17.0", kind=DeclarationKind.CONFIGURATION)
    assert (verdict.valid, verdict.reasons, verdict.ignored_keys) == (True, (), ())
    assert (verdict.identifier, verdict.server_token, verdict.declaration_type) == ("mail-1", "t1", MAIL)


def test_smime_before_ios_17_is_ignored_not_invalid() -> None:
    verdict = validate_declaration(mail(SMIME=SMIME), "16.4")
    assert (verdict.valid, verdict.ignored_keys) == (True, ("SMIME",))


def test_missing_required_and_wrong_type_give_one_deserialization_reason() -> None:
    document = mail(OutgoingServer={"HostName": 25})
    verdict = validate_declaration(document, "17.0")
    assert not verdict.valid
    [reason] = verdict.reasons
    assert reason.code == "Error.ConfigurationCannotBeDeserialized"
    assert "OutgoingServer.HostName must be <string>, not int" in reason.description
    assert "required key OutgoingServer.AuthenticationMethod is missing" in reason.description
    assert reason.to_status()["details"]["Error"] == reason.details["Error"]


def test_values_outside_the_rangelist_are_invalid() -> None:
    bad = mail(IncomingServer={"ServerType": "MAPI", "HostName": "h", "AuthenticationMethod": "None"})
    [reason] = validate_declaration(bad, "17.0").reasons
    assert "IncomingServer.ServerType is 'MAPI'; allowed: 'IMAP', 'POP'" in reason.description


def test_unknown_payload_keys_are_listed() -> None:
    verdict = validate_declaration(mail(Colour="red", SMIME={**SMIME, "Shade": 1}), "17.0")
    [reason] = verdict.reasons
    assert reason.to_error() == {
        "Code": "Error.UnknownPayloadKeys", "Description": "unknown payload keys: Payload.Colour, Payload.SMIME.Shade",
        "Details": {"UnknownPayloadKeys": ["Payload.Colour", "Payload.SMIME.Shade"]}}


@pytest.mark.parametrize(("document", "version", "kind", "expected"), [
    ({"Type": IDENTITY, "Identifier": "a", "ServerToken": "1", "Payload": {"Reference": {"DataURL": "https://x"}}},
     "16.0", None, "com.apple.asset.credential.identity is not supported on iOS 16.0: it arrived in iOS 17.0"),
    ({"Type": "com.example.nope", "Identifier": "a", "ServerToken": "1", "Payload": {}}, "17.0", None,
     "declaration type 'com.example.nope' is not known to iOS 17.0"),
    (mail(), "17.0", DeclarationKind.ASSET,
     "com.apple.configuration.account.mail is a configuration declaration, fetched as a asset"),
    ({"Type": "com.apple.configuration.screensharing.host.settings", "Identifier": "a", "ServerToken": "1",
      "Payload": {}}, "17.0", None,
     "com.apple.configuration.screensharing.host.settings is not supported on iOS 17.0: it does not exist on iOS"),
])
def test_unsupported_declarations(document, version, kind, expected) -> None:
    verdict = validate_declaration(document, version, kind=kind)
    assert [(r.code, r.description, dict(r.details)) for r in verdict.reasons] == [
        ("Error.ConfigurationNotSupported", expected,
         {"Identifier": document["Identifier"], "ServerToken": document["ServerToken"]})]


def test_enrollment_types_the_schema_forbids() -> None:
    document = {"Type": "com.apple.configuration.softwareupdate.enforcement.specific", "Identifier": "a",
                "ServerToken": "1",
                "Payload": {"TargetOSVersion": "18.0", "TargetLocalDateTime": "2026-12-24T10:00:00"}}
    allowed = declaration_spec(document["Type"]).allowed_enrollments
    assert validate_declaration(document, "18.0", enrollment=allowed[0]).valid
    forbidden = next(kind for kind in ("supervised", "device", "user", "local") if kind not in allowed)
    [reason] = validate_declaration(document, "18.0", enrollment=forbidden).reasons
    assert reason.code == "Error.ConfigurationNotSupported" and forbidden in reason.description


@pytest.mark.parametrize("document", [[], "x", {"Type": MAIL}, {**mail(), "Payload": []}, {**mail(), "ServerToken": 3}])
def test_malformed_declarations_are_invalid_payloads(document) -> None:
    verdict = validate_declaration(document, "17.0")
    assert not verdict.valid and [r.code for r in verdict.reasons] == ["Error.InvalidPayload"]


def test_credential_documents_are_checked_as_json() -> None:
    good = {"Type": "com.apple.credential.identity", "Password": "pw", "Identity": "MIIB"}
    assert validate_credential(good, "com.apple.credential.identity", "17.0") == ()
    assert validate_credential({**good, "Identity": "not base64!"}, "com.apple.credential.identity", "17.0") == (
        "Identity must be <data>, not str",)
    assert validate_credential({**good, "Type": "x"}, "com.apple.credential.identity", "17.0") == (
        "the credential's Type is 'x', expected 'com.apple.credential.identity'",)
    assert validate_credential({"Type": "com.apple.credential.identity"}, "com.apple.credential.identity",
                               "17.0") == ("required key Password is missing", "required key Identity is missing")
