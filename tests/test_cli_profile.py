"""`mdmsim profile render` and `mdmsim profile lint` on real files: outputs, messages and exit codes."""

from __future__ import annotations

import argparse
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from kits.admin_kit import PASSWORD, identity, p12_for
from kits.corpus import SCHEMA, require

from mdm_protocol.plist import decode_plist, encode_plist
from mdmsim import cli_profile

EXCHANGE = {"kind": "exchange", "id": "s7", "name": "Exchange", "host": "mail.example.com",
            "smime": {"signing_enabled": True, "signing_identity": "s1", "encryption_identity": "s2",
                      "per_message_switch": True}}
DEVICE = {"device_id": "UDID-1", "user_id": "alice",
          "facts": {"UDID": "UDID-1", "OSVersion": "12.0", "ProductName": "iPhone11,2"}}
USER = {"user_id": "alice", "email": "alice@example.com"}


@pytest.fixture(autouse=True)
def schema_present():
    require(SCHEMA)


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mdmsim")
    cli_profile.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["profile", *argv])
    return args.func(args)


def write_json(path, value) -> str:
    path.write_text(json.dumps(value))
    return str(path)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "sign.p12").write_bytes(p12_for("alice-sign"))
    (tmp_path / "enc.p12").write_bytes(p12_for("alice-enc"))
    return {"setting": write_json(tmp_path / "setting.json", EXCHANGE),
            "device": write_json(tmp_path / "device.json", DEVICE),
            "user": write_json(tmp_path / "user.json", USER),
            "sign": str(tmp_path / "sign.p12"), "enc": str(tmp_path / "enc.p12"),
            "out": tmp_path / "out.mobileconfig", "dir": tmp_path}


def render_args(files, *extra: str) -> list[str]:
    return ["render", "--setting-json", files["setting"], "--device-json", files["device"],
            "--user-json", files["user"], *extra]


# render ----------------------------------------------------------------------------------------------------


def test_render_writes_a_profile_that_lints_clean(files, capsys):
    code = run(*render_args(files, "--identity", f"s1={files['sign']}", "--identity", f"s2={files['enc']}",
                            "--p12-password", PASSWORD, "-o", str(files["out"])))
    assert code == 0
    profile = decode_plist(files["out"].read_bytes())
    assert profile["PayloadIdentifier"] == "com.mdmsim.setting.s7"
    types = [payload["PayloadType"] for payload in profile["PayloadContent"]]
    assert types == ["com.apple.security.pkcs12", "com.apple.security.pkcs12", "com.apple.eas.account"]
    assert "wrote" in capsys.readouterr().err
    assert run("lint", str(files["out"]), "--os-version", "12.0") == 0
    assert ": OK on iOS 12.0: com.mdmsim.setting.s7, 3 payload(s)" in capsys.readouterr().out


def test_render_without_identities_warns_and_goes_to_stdout(files, capsysbinary):
    assert run(*render_args(files)) == 0
    captured = capsysbinary.readouterr()
    assert captured.out.startswith(b"<?xml")
    assert b"warning: smime-signing: no --identity s1=FILE.p12 was given" in captured.err
    types = [payload["PayloadType"] for payload in decode_plist(captured.out)["PayloadContent"]]
    assert types == ["com.apple.eas.account"]


def test_a_device_file_may_hold_just_the_facts(files, capsysbinary):
    facts = write_json(files["dir"] / "facts.json", DEVICE["facts"])
    code = run("render", "--setting-json", files["setting"], "--device-json", facts,
               "--user-json", files["user"])
    assert code == 0
    assert b"<string>alice</string>" in capsysbinary.readouterr().out  # $USERID$ came from --user-json


def test_a_device_that_cannot_have_the_setting_exits_1(files, capsys):
    setting = write_json(files["dir"] / "apple-id.json", {**EXCHANGE, "user_name": "$MANAGED_APPLE_ID$"})
    code = run("render", "--setting-json", setting, "--device-json", files["device"],
               "--user-json", files["user"])
    assert code == 1
    expected = "$MANAGED_APPLE_ID$ is only available on Shared iPad and User Enrollment"
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.json", None, "cannot read"),
    ("broken.json", "{not json", "is not JSON"),
    ("unknown.json", {**EXCHANGE, "colour": "blue"}, "unknown field colour"),
])
def test_unusable_inputs_exit_2(files, capsys, name, content, message):
    path = files["dir"] / name
    if isinstance(content, dict):
        path.write_text(json.dumps(content))
    elif content is not None:
        path.write_text(content)
    code = run("render", "--setting-json", str(path), "--device-json", files["device"])
    assert code == 2 and message in capsys.readouterr().err


def test_a_wrong_identity_password_exits_2(files, capsys):
    code = run(*render_args(files, "--identity", f"s1={files['sign']}", "--p12-password", "nope"))
    assert code == 2 and "wrong password for this P12 file" in capsys.readouterr().err


# lint ------------------------------------------------------------------------------------------------------


def _profile(**account) -> bytes:
    payload = {"PayloadType": "com.apple.eas.account", "PayloadVersion": 1, "PayloadIdentifier": "x.eas",
               "PayloadUUID": "0A6B9E1C-3F39-4B7E-9F61-4D6C1C1D0001", "UserName": "alice", **account}
    return encode_plist({"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "x",
                         "PayloadUUID": "0A6B9E1C-3F39-4B7E-9F61-4D6C1C1D0000", "PayloadContent": [payload]})


def test_lint_prints_the_error_chain_of_an_invalid_profile(tmp_path, capsys):
    path = tmp_path / "no-host.mobileconfig"
    path.write_bytes(_profile())  # Exchange without Host and without OAuth
    assert run("lint", str(path)) == 1
    out = capsys.readouterr().out
    assert "INVALID: payload x.eas: Host is required unless OAuth is on" in out
    assert "  MCInstallationErrorDomain 4000: Invalid Profile" in out
    assert "  MCEASErrorDomain 21003:" in out


def test_lint_lists_keys_an_older_ios_ignores(tmp_path, capsys):
    path = tmp_path / "oauth.mobileconfig"
    path.write_bytes(_profile(Host="mail.example.com", OAuth=True, SMIMEEncryptByDefault=True))
    assert run("lint", str(path), "--os-version", "11.4") == 0
    out = capsys.readouterr().out
    assert "x.eas (com.apple.eas.account): OAuth ignored" in out
    assert "SMIMEEncryptByDefault ignored" in out


def test_lint_reads_cms_signed_profiles(tmp_path, capsys):
    certificate, key = identity("signer")
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(_profile(Host="h.example.com"))
              .add_signer(certificate, key, hashes.SHA256()).sign(serialization.Encoding.DER, []))
    path = tmp_path / "signed.mobileconfig"
    path.write_bytes(signed)
    assert run("lint", str(path)) == 0
    assert "(CMS-signed; signature not verified)" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, b"\x00\x01 definitely not a plist", b"\x30\x03\x02\x01\x01"])
def test_lint_of_an_unreadable_file_exits_2(tmp_path, capsys, content):
    path = tmp_path / "bad.mobileconfig"
    if content is not None:
        path.write_bytes(content)
    assert run("lint", str(path)) == 2
    assert "mdmsim profile lint:" in capsys.readouterr().err


def test_lint_refuses_a_malformed_os_version(tmp_path):
    with pytest.raises(SystemExit) as caught:
        run("lint", str(tmp_path / "x"), "--os-version", "twelve")
    assert caught.value.code == 2


def test_lint_refuses_a_macos_only_payload_as_the_device_does(tmp_path, capsys):
    require(SCHEMA)
    dock = {"PayloadType": "com.apple.dock", "PayloadVersion": 1, "PayloadIdentifier": "x.dock",
            "PayloadUUID": "D", "orientation": "left"}
    path = tmp_path / "dock.mobileconfig"
    path.write_bytes(encode_plist({"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "x",
                                   "PayloadUUID": "P", "PayloadContent": [dock]}))
    assert run("lint", str(path), "--os-version", "18.1") == 1
    out = capsys.readouterr().out
    assert "INVALID: payload x.dock: PayloadType com.apple.dock is not available on iOS" in out
    assert "  MCPayloadErrorDomain 2004:" in out


def test_lint_validates_a_wifi_payload_now_that_the_whole_schema_is_catalogued(tmp_path, capsys):
    require(SCHEMA)
    wifi = {"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1, "PayloadIdentifier": "x.wifi",
            "PayloadUUID": "W", "SSID_STR": "Office", "AutoJoin": "yes"}
    path = tmp_path / "wifi.mobileconfig"
    path.write_bytes(encode_plist({"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "x",
                                   "PayloadUUID": "P", "PayloadContent": [wifi]}))
    assert run("lint", str(path)) == 1
    assert "  MCPayloadErrorDomain 2003:" in capsys.readouterr().out
