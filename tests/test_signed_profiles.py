"""Signed and encrypted profiles (issue 12 part 3, SPEC 8): our signer checked by openssl, openssl's signatures
and envelopes installed by the device, tampered and unreadable CMS, and EncryptedPayloadContent.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from kits.keychain_pki import NOW, certificate, der, identity, new_key, pki, trusting_keychain
from kits.profile_kit import imap, profile_bytes

from device_sim.keychain import Keychain
from device_sim.profiles import DeviceProfiles
from mdm_protocol.commands import parse_profile_list, profile_list_response
from mdm_protocol.plist import encode_plist
from mdm_protocol.profile_signing import SignatureStatus, open_signed_profile, sign_profile
from mdm_protocol.scep_envelope import ContentCipher, EnvelopeError, envelope

IOS = "17.1"
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def signer():
    """A profile-signing certificate issued by the test CA (no EKU, as our server's)."""
    key = new_key()
    return certificate("mdmsim profile signing", key, issuer=pki().ca, issuer_key=pki().ca_key, eku=None), key


@functools.cache
def plain() -> bytes:
    return profile_bytes(imap(), identifier="com.example.signed", display_name="Signed Mail")


def pem(path: Path, *items) -> Path:
    blobs = []
    for item in items:
        if hasattr(item, "public_bytes") and hasattr(item, "subject"):
            blobs.append(item.public_bytes(serialization.Encoding.PEM))
        else:
            blobs.append(item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    path.write_bytes(b"".join(blobs))
    return path


def openssl(*args: str, stdin: bytes = b"") -> bytes:
    done = subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def install(data: bytes, device: DeviceProfiles | None = None):
    device = DeviceProfiles(trusting_keychain()) if device is None else device  # an empty one is falsy
    return device, device.install(data, os_version=IOS, now=NOW)


# --- our signer, checked by independent implementations ---------------------------------------------------

@needs_openssl
@pytest.mark.parametrize("command", ["cms", "smime"])
def test_openssl_verifies_our_signed_profile_against_the_ca(tmp_path, command):
    cert, key = signer()
    signed = sign_profile(plain(), cert, key, chain=[pki().ca])
    (tmp_path / "p.der").write_bytes(signed)
    out = openssl(command, "-verify", "-inform", "DER", "-in", str(tmp_path / "p.der"),
                  "-CAfile", str(pem(tmp_path / "ca.pem", pki().ca)), "-purpose", "any",
                  "-attime", str(int(NOW.timestamp())))  # the test PKI is valid around NOW
    assert out == plain()


def test_cryptography_reads_our_signature_and_content():
    cert, key = signer()
    signed = sign_profile(plain(), cert, key)
    assert pkcs7.load_der_pkcs7_certificates(signed) == [cert]
    opened = open_signed_profile(signed, roots=[pki().ca], now=NOW)
    assert opened is not None and opened.content == plain() and opened.signer == cert and opened.verified


# --- the device -----------------------------------------------------------------------------------------

def test_a_signed_profile_installs_verified_and_profile_list_names_its_signer():
    cert, key = signer()
    device, result = install(sign_profile(plain(), cert, key))
    assert result.ok, result.reason
    assert result.profile.signature is SignatureStatus.VERIFIED and result.profile.verified
    (item,) = parse_profile_list(profile_list_response("UDID", "C1", device.profile_list_items(os_version=IOS)))
    assert item.signer_certificates == (der(cert),) and not item.is_encrypted


def test_a_signer_the_device_does_not_trust_installs_not_verified():
    cert, key = signer()
    device, result = install(sign_profile(plain(), cert, key), DeviceProfiles())
    assert result.ok and result.profile.signature is SignatureStatus.UNTRUSTED and not result.profile.verified
    assert result.profile.signer_certificates == (der(cert),)


def test_an_unsigned_profile_records_no_signature():
    _, result = install(plain())
    assert result.ok and result.profile.signature is None and result.profile.signer_certificates == ()


@needs_openssl
def test_a_profile_signed_by_openssl_installs_verified(tmp_path):
    cert, key = signer()
    (tmp_path / "p.plist").write_bytes(plain())
    signed = openssl("cms", "-sign", "-nodetach", "-binary", "-outform", "DER", "-in", str(tmp_path / "p.plist"),
                     "-signer", str(pem(tmp_path / "s.pem", cert)), "-inkey", str(pem(tmp_path / "k.pem", key)),
                     "-certfile", str(pem(tmp_path / "ca.pem", pki().ca)))
    _, result = install(signed)
    assert result.ok, result.reason
    assert result.profile.signature is SignatureStatus.VERIFIED and result.profile.identifier == "com.example.signed"


def test_a_tampered_signed_profile_installs_as_not_verified_as_ios_does():
    cert, key = signer()
    signed = sign_profile(plain(), cert, key)
    tampered = signed.replace(b"Signed Mail", b"Signed Maim")
    assert tampered != signed
    _, result = install(tampered)
    assert result.ok, result.reason  # SPEC 8: the signature only changes what the UI shows
    assert result.profile.signature is SignatureStatus.INVALID and result.profile.display_name == "Signed Maim"
    assert result.profile.signer_certificates == (der(cert),)


@pytest.mark.parametrize("make", [
    lambda signed: envelope(plain(), pki().bob),  # CMS, but EnvelopedData where a profile was expected
    lambda signed: pkcs7.PKCS7SignatureBuilder().set_data(plain()).add_signer(
        signer()[0], signer()[1], pkcs7.hashes.SHA256()).sign(
        serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature]),  # no content
], ids=["enveloped", "detached"])
def test_cms_that_is_no_signed_profile_is_refused_4000_1000_and_changes_nothing(make):
    cert, key = signer()
    device, result = install(make(sign_profile(plain(), cert, key)))
    assert not result.ok and len(device) == 0
    assert [(item.code, item.domain) for item in result.error_chain] == [
        (4000, "MCInstallationErrorDomain"), (1000, "MCProfileErrorDomain")]
    assert "CMS" in result.reason or "SignedData" in result.reason or "content" in result.reason


# --- EncryptedPayloadContent ----------------------------------------------------------------------------

def encrypted_profile(encrypted: bytes) -> bytes:
    return encode_plist({"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.enc",
                         "PayloadUUID": "E0000000-0000-4000-8000-000000000001", "PayloadDisplayName": "Secret",
                         "IsEncrypted": True, "EncryptedPayloadContent": encrypted})


def payload_array() -> bytes:
    return encode_plist([imap().to_plist()])


def with_bob() -> DeviceProfiles:
    device = DeviceProfiles(trusting_keychain())
    device.keychain.add_identity(identity(pki().bob, pki().bob_key, uuid="MDM-ID", profile="com.example.mdm"))
    return device


@needs_openssl
@pytest.mark.parametrize("cipher", ["-aes256", "-aes128", "-des3"])
def test_a_payload_encrypted_by_openssl_to_the_device_identity_installs(tmp_path, cipher):
    (tmp_path / "a.plist").write_bytes(payload_array())
    encrypted = openssl("cms", "-encrypt", "-binary", cipher, "-outform", "DER", "-in", str(tmp_path / "a.plist"),
                        str(pem(tmp_path / "bob.pem", pki().bob)))
    device, result = install(encrypted_profile(encrypted), with_bob())
    assert result.ok, result.reason
    assert result.profile.is_encrypted and result.profile.payloads[0]["PayloadType"] == "com.apple.mail.managed"
    (item,) = parse_profile_list(profile_list_response("UDID", "C1", device.profile_list_items(os_version=IOS)))
    assert item.is_encrypted and item.payload_content is None


def test_a_signed_and_encrypted_profile_installs():
    cert, key = signer()
    data = sign_profile(encrypted_profile(envelope(payload_array(), pki().bob)), cert, key)
    _, result = install(data, with_bob())
    assert result.ok and result.profile.is_encrypted and result.profile.verified


def test_a_payload_encrypted_to_someone_else_is_1006_and_changes_nothing():
    other_key = new_key("rsa")
    other = certificate("other device", other_key, issuer=pki().ca, issuer_key=pki().ca_key)
    device = with_bob()
    _, result = install(encrypted_profile(envelope(payload_array(), other)), device)
    assert not result.ok and len(device) == 0
    assert [item.code for item in result.error_chain] == [4001, 4001, 1009, 1006]
    assert "not addressed" in result.reason


def test_an_encrypted_payload_that_is_not_an_array_is_1006():
    _, result = install(encrypted_profile(envelope(encode_plist({"a": 1}), pki().bob)), with_bob())
    assert not result.ok and result.error_chain[-1].code == 1006 and "not an array" in result.reason


# --- profile lint agrees with the device ------------------------------------------------------------------

def lint(tmp_path, data: bytes, capsys, *roots) -> tuple[int, str]:
    from mdmsim import cli_profile

    path = tmp_path / "p.mobileconfig"
    path.write_bytes(data)
    trust = [str(pem(tmp_path / f"root{index}.pem", root)) for index, root in enumerate(roots)]
    args = argparse.Namespace(file=path, os_version=None, trust_root=[Path(item) for item in trust])
    code = cli_profile.run_lint(args)
    return code, capsys.readouterr().out


def test_lint_and_device_agree_on_a_verified_signature(tmp_path, capsys):
    # lint judges at the wall clock: a CA and signer valid today (the shared test PKI is valid around NOW).
    today = datetime.now(UTC)
    ca_key, key = new_key(), new_key()
    ca = certificate("Today CA", ca_key, ca=True, eku=None, not_before=today - timedelta(days=1),
                     not_after=today + timedelta(days=30))
    cert = certificate("mdmsim profile signing", key, issuer=ca, issuer_key=ca_key, eku=None,
                       not_before=today - timedelta(days=1), not_after=today + timedelta(days=30))
    signed = sign_profile(plain(), cert, key)
    code, out = lint(tmp_path, signed, capsys, ca)
    assert code == 0 and "(CMS-signed; signature verified)" in out and "CN=mdmsim profile signing" in out
    keychain = Keychain()
    keychain.add_root(ca, "com.example.trust")
    device = DeviceProfiles(keychain)
    assert device.install(signed, os_version=IOS, now=today).profile.verified


def test_lint_and_device_agree_on_an_untrusted_signer(tmp_path, capsys):
    cert, key = signer()
    code, out = lint(tmp_path, sign_profile(plain(), cert, key), capsys)
    assert code == 0 and "signature valid but not verified" in out
    assert install(sign_profile(plain(), cert, key), DeviceProfiles())[1].profile.signature is SignatureStatus.UNTRUSTED


def test_lint_and_device_agree_on_a_tampered_signature(tmp_path, capsys):
    cert, key = signer()
    tampered = sign_profile(plain(), cert, key).replace(b"Signed Mail", b"Signed Maim")
    code, out = lint(tmp_path, tampered, capsys, pki().ca)
    assert code == 0 and "does NOT verify" in out and "messageDigest" in out
    assert install(tampered)[1].profile.signature is SignatureStatus.INVALID


def test_lint_and_device_agree_on_cms_that_holds_no_profile(tmp_path, capsys):
    data = envelope(plain(), pki().bob)
    code, out = lint(tmp_path, data, capsys)
    _, result = install(data)
    assert code == 1 and "MCInstallationErrorDomain 4000" in out and "MCProfileErrorDomain 1000" in out
    assert [item.code for item in result.error_chain] == [4000, 1000]


def test_lint_notes_encrypted_payloads_it_cannot_check(tmp_path, capsys):
    code, out = lint(tmp_path, encrypted_profile(envelope(payload_array(), pki().bob)), capsys)
    assert code == 0 and "payloads encrypted" in out


# --- the server's signing identity -----------------------------------------------------------------------

def _enrollment(server) -> bytes:
    from server_kit import MemoryHTTP

    response = MemoryHTTP(server.http).request("GET", f"/mdm/enroll?token={server.state.enroll_token}", b"", {})
    assert response.status == 200
    return response.body


@needs_openssl
def test_the_server_signs_enrollment_profiles_and_openssl_verifies_them_with_its_ca(tmp_path):
    from server_kit import make_server

    server = make_server(tmp_path)
    data = tmp_path / "data"
    signed = _enrollment(server)
    (tmp_path / "e.der").write_bytes(signed)
    at = str(int(server.now().timestamp()))
    content = openssl("cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "e.der"), "-purpose", "any",
                      "-CAfile", str(data / "ca.pem"), "-attime", at)
    embedded = pkcs7.load_der_pkcs7_certificates(signed)  # the signer and our CA, for the device's chain
    assert b"com.apple.mdm" in content and server.profile_signer.certificate in embedded
    assert server.ca.certificate in embedded
    assert (data / "profile-signing.key").stat().st_mode & 0o077 == 0
    # Kept in the data dir: a restarted server signs with the same identity.
    assert make_server(tmp_path).profile_signer.certificate == server.profile_signer.certificate


def test_serve_takes_no_sign_profiles_and_then_sends_plain_enrollment_profiles(tmp_path):
    from server_kit import make_server

    from mdmsim.cli import build_parser

    assert build_parser().parse_args(["serve", "--no-sign-profiles"]).sign_profiles is False
    assert build_parser().parse_args(["serve"]).sign_profiles is True
    assert _enrollment(make_server(tmp_path, sign_profiles=False)).startswith(b"<?xml")


# --- EncryptedPayloadContent to an EC identity (key agreement: ECDH, X9.63 KDF, AES key wrap) --------------

@functools.cache
def ec_device_identity(curve: str = "secp256r1"):
    key = ec.generate_private_key(ec.SECP384R1() if curve == "secp384r1" else ec.SECP256R1())
    return certificate(f"EC device ({curve})", key, issuer=pki().ca, issuer_key=pki().ca_key), key


def with_ec(curve: str = "secp256r1") -> DeviceProfiles:
    cert, key = ec_device_identity(curve)
    device = DeviceProfiles(trusting_keychain())
    device.keychain.add_identity(identity(cert, key, uuid="MDM-EC", profile="com.example.mdm"))
    return device


@needs_openssl
@pytest.mark.parametrize(("curve", "cipher", "options"), [
    ("secp256r1", "-aes128", ()),  # openssl's default scheme: dhSinglePass-stdDH-sha1kdf, aes128-wrap
    ("secp256r1", "-aes256", ("-keyopt", "ecdh_kdf_md:sha256")),
    ("secp384r1", "-aes256", ("-keyopt", "ecdh_kdf_md:sha384")),
    ("secp256r1", "-aes128", ("-keyid",)),  # the recipient named by its subject key identifier
    ("secp256r1", "-aes256", ("-keyopt", "ecdh_cofactor_mode:1")),
], ids=["p256-default", "p256-sha256", "p384-sha384", "p256-keyid", "p256-cofactor"])
def test_a_payload_encrypted_by_openssl_to_an_ec_identity_installs(tmp_path, curve, cipher, options):
    (tmp_path / "a.plist").write_bytes(payload_array())
    cert, _ = ec_device_identity(curve)
    encrypted = openssl("cms", "-encrypt", "-binary", cipher, "-outform", "DER", "-in", str(tmp_path / "a.plist"),
                        "-recip", str(pem(tmp_path / "device.pem", cert)), *options)
    _, result = install(encrypted_profile(encrypted), with_ec(curve))
    assert result.ok, result.reason
    assert result.profile.is_encrypted and result.profile.payloads[0]["PayloadType"] == "com.apple.mail.managed"


@needs_openssl
@pytest.mark.parametrize("cipher", [ContentCipher.AES128, ContentCipher.AES256])
def test_openssl_decrypts_what_we_encrypt_to_an_ec_identity(tmp_path, cipher):
    cert, key = ec_device_identity("secp256r1")
    content = payload_array()
    (tmp_path / "e.der").write_bytes(envelope(content, cert, cipher))
    out = openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(tmp_path / "e.der"),
                  "-recip", str(pem(tmp_path / "c.pem", cert)), "-inkey", str(pem(tmp_path / "k.pem", key)))
    assert out == content
    _, result = install(encrypted_profile(envelope(content, cert, cipher)), with_ec())
    assert result.ok and result.profile.is_encrypted


def test_a_payload_for_another_ec_key_or_with_a_damaged_key_is_1006_and_changes_nothing():
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = certificate("other EC device", other_key, issuer=pki().ca, issuer_key=pki().ca_key)
    device = with_ec()
    _, result = install(encrypted_profile(envelope(payload_array(), other)), device)
    assert not result.ok and len(device) == 0 and result.error_chain[-1].code == 1006
    assert "not addressed" in result.reason
    data = bytearray(envelope(payload_array(), ec_device_identity("secp256r1")[0]))
    # Flip a byte of the ephemeral public point (the BIT STRING 03 42 00 04 ...): the key agreement fails.
    point = data.index(b"\x03\x42\x00\x04") + 10
    data[point] ^= 0x01
    _, result = install(encrypted_profile(bytes(data)), device)
    assert not result.ok and len(device) == 0 and result.error_chain[-1].code == 1006
    assert "none of their keys opens it" in result.reason


def test_3des_content_cannot_go_to_an_ec_identity():
    with pytest.raises(EnvelopeError, match="AES"):
        envelope(payload_array(), ec_device_identity("secp256r1")[0], ContentCipher.DES3)
