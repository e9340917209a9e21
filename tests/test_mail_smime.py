"""S/MIME for simulated devices: sign/verify, RFC 8551 types, tampering, AES-128/256 envelopes, archived keys,
the not-for-me error, and interop with the openssl command line in both directions.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import encoder
from pyasn1.type import univ

from device_sim.mail import (
    OrganisationCA,
    SMIMEError,
    Usage,
    decrypt,
    decrypt_detailed,
    encrypt,
    sign,
    verify,
)
from device_sim.mail.mime_entity import multipart_parts, parse_entity
from device_sim.mail.smime import message_kind, require_fixed_cryptography
from mdm_protocol.cms import verify_detached

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command line not on PATH")
ENTITY = (b"Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n"
          b"Quarterly numbers attached.\nRegards, Alice\n")


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Pki:
    """One organisation's CA and users, RSA-2048 keys made once for the module (~50 ms each)."""

    def __init__(self) -> None:
        self.ca = OrganisationCA.create("Acme", "acme.test", rsa_key(), now=NOW)
        self.keys = {name: rsa_key() for name in ("alice", "bob", "carol", "bob-old")}
        self.certs = {name: self.ca.issue(f"{name.split('-')[0]}@acme.test", key, now=NOW)
                      for name, key in self.keys.items()}
        self.other_ca = OrganisationCA.create("Elsewhere", "elsewhere.test", rsa_key(), now=NOW)

    def identity(self, name: str):
        return self.certs[name], self.keys[name]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def mail(text: str = "Quarterly numbers attached.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "alice@acme.test", "bob@acme.test", "Q1"
    message.set_content(text)
    return message


# --- signing ------------------------------------------------------------------------------------------------


def test_sign_then_verify_round_trip(pki):
    signed = sign(mail(), *pki.identity("alice"))
    verified = verify(signed, roots=[pki.ca.certificate], now=NOW)
    assert verified.signer == pki.certs["alice"]
    assert verified.addresses == ("alice@acme.test",)
    assert b"Quarterly numbers attached." in verified.content
    # Message headers stay outside the signed entity; the entity keeps only its Content-* fields.
    assert signed.startswith(b"From: alice@acme.test\r\nTo: bob@acme.test\r\nSubject: Q1\r\n")
    assert b"Subject" not in verified.content and verified.content.startswith(b"Content-Type: text/plain")


def test_signed_message_uses_the_rfc8551_content_types(pki):
    signed = sign(ENTITY, *pki.identity("alice"))
    outer = parse_entity(signed)
    assert outer.content_type == "multipart/signed"
    assert outer.param("protocol") == "application/pkcs7-signature"
    assert outer.param("micalg") == "sha-256"
    signature_part = parse_entity(multipart_parts(outer)[1])
    assert signature_part.content_type == "application/pkcs7-signature"
    assert signature_part.param("name") == "smime.p7s"
    assert b"x-pkcs7" not in signed  # cryptography writes application/x-pkcs7-signature; we rewrote it


def test_the_rewrite_keeps_the_signed_part_byte_identical(pki):
    signed = sign(ENTITY, *pki.identity("alice"))
    first, signature = multipart_parts(parse_entity(signed))
    assert first == ENTITY.replace(b"\n", b"\r\n")  # canonical CRLF form of exactly what we passed in
    info = verify_detached(parse_entity(signature).decoded_body(), first)
    assert info.signer == pki.certs["alice"] and info.digest_algorithm == "sha256"


def test_a_signed_message_stored_with_bare_line_feeds_still_verifies(pki):
    signed = sign(mail(), *pki.identity("alice"))
    verified = verify(signed.replace(b"\r\n", b"\n"), roots=[pki.ca.certificate], now=NOW)
    assert verified.signer == pki.certs["alice"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_byte_of_the_signed_part_fails_verification(pki, data):
    signed = sign(ENTITY, *pki.identity("alice"))
    first = multipart_parts(parse_entity(signed))[0]
    start = signed.index(first)
    offset = data.draw(st.integers(0, len(first) - 1), label="offset")
    original = signed[start + offset]
    replacement = data.draw(st.integers(0x21, 0x7E).filter(lambda b: b != original), label="byte")
    tampered = signed[:start + offset] + bytes([replacement]) + signed[start + offset + 1:]
    with pytest.raises(SMIMEError, match="signature does not match the content"):
        verify(tampered, roots=[pki.ca.certificate], now=NOW)


def test_signer_from_an_untrusted_ca_is_refused(pki):
    signed = sign(mail(), *pki.identity("alice"))
    with pytest.raises(SMIMEError, match="signer alice@acme.test is not trusted"):
        verify(signed, roots=[pki.other_ca.certificate], now=NOW)


def test_expired_signer_is_refused(pki):
    signed = sign(mail(), *pki.identity("alice"))
    with pytest.raises(SMIMEError, match="expired"):
        verify(signed, roots=[pki.ca.certificate], now=NOW + timedelta(days=400))


def test_verify_refuses_what_is_not_a_signed_message(pki):
    with pytest.raises(SMIMEError, match="not a signed message: its Content-Type is text/plain"):
        verify(ENTITY, roots=[pki.ca.certificate], now=NOW)
    signed = sign(ENTITY, *pki.identity("alice"))
    truncated = signed[: signed.rindex(b"--\r\n") - 10]
    with pytest.raises(SMIMEError, match="no closing delimiter"):
        verify(truncated, roots=[pki.ca.certificate], now=NOW)


# --- encryption ---------------------------------------------------------------------------------------------

AES_OIDS = {False: "2.16.840.1.101.3.4.1.2", True: "2.16.840.1.101.3.4.1.42"}  # aes128-CBC, aes256-CBC


@pytest.mark.parametrize("aes256", [False, True], ids=["AES-128", "AES-256"])
def test_encrypt_then_decrypt(pki, aes256):
    encrypted = encrypt(mail(), [pki.certs["bob"]], aes256=aes256)
    outer = parse_entity(encrypted)
    content_type = [f for f in outer.fields if f.lower().startswith(b"content-type:")]
    expected = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m"
    assert content_type == [expected]
    der = outer.decoded_body()
    assert encoder.encode(univ.ObjectIdentifier(AES_OIDS[aes256])) in der
    assert encoder.encode(univ.ObjectIdentifier(AES_OIDS[not aes256])) not in der
    entity = decrypt(encrypted, [pki.identity("bob")])
    assert entity.startswith(b"Content-Type: text/plain") and b"Quarterly numbers attached." in entity
    assert message_kind(encrypted) == "encrypted" and message_kind(entity) == "plain"


def test_signed_then_encrypted_message_opens_to_a_verifiable_signature(pki):
    encrypted = encrypt(sign(mail(), *pki.identity("alice")), [pki.certs["bob"], pki.certs["alice"]])
    for reader in ("bob", "alice"):
        inner = decrypt(encrypted, [pki.identity(reader)])
        assert verify(inner, roots=[pki.ca.certificate], now=NOW).signer == pki.certs["alice"]


def test_decrypt_falls_back_to_an_archived_key(pki):
    old_mail = encrypt(mail(), [pki.certs["bob-old"]])
    keys = [pki.identity("bob"), pki.identity("bob-old")]  # current first, then the archive
    opened = decrypt_detailed(old_mail, keys)
    assert opened.key_index == 1 and opened.certificate == pki.certs["bob-old"]
    assert b"Quarterly" in opened.content


def test_a_message_for_another_recipient_names_who_it_was_for(pki):
    for_bob = encrypt(mail(), [pki.certs["bob"]])
    serial = f"{pki.certs['bob'].serial_number:#x}"
    expected = (r"no key on this device can decrypt this message \(it was encrypted for certificate serial "
                + serial + r" issued by CN=Acme S/MIME CA, O=Acme\)")
    with pytest.raises(SMIMEError, match=expected):
        decrypt(for_bob, [pki.identity("carol"), pki.identity("alice")])
    with pytest.raises(SMIMEError, match="no key on this device"):
        decrypt(for_bob, [])


def test_a_key_that_does_not_belong_to_the_named_certificate_fails_cleanly(pki):
    for_bob = encrypt(mail(), [pki.certs["bob"]])
    with pytest.raises(SMIMEError, match="could not be decrypted with the key for bob@acme.test"):
        decrypt(for_bob, [(pki.certs["bob"], pki.keys["carol"])])


def test_an_ec_recipient_is_a_clear_error(pki):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_cert = pki.ca.issue("dave@acme.test", ec_key, now=NOW, usage=Usage.ENCRYPTION)
    expected = r"cannot encrypt to dave@acme.test: .*an elliptic-curve \(EC\) key .*RSA recipients only"
    with pytest.raises(SMIMEError, match=expected):
        encrypt(mail(), [pki.certs["bob"], ec_cert])
    with pytest.raises(SMIMEError, match="at least one recipient"):
        encrypt(mail(), [])


def test_decrypt_refuses_what_is_not_an_encrypted_message(pki):
    with pytest.raises(SMIMEError, match="not an encrypted message"):
        decrypt(sign(mail(), *pki.identity("alice")), [pki.identity("bob")])
    encrypted = encrypt(mail(), [pki.certs["bob"]])
    damaged = encrypted[:-300] + b"\r\n"
    with pytest.raises(SMIMEError, match="malformed"):
        decrypt(damaged, [pki.identity("bob")])


def test_decryption_refuses_cryptography_releases_with_the_oracle():
    with pytest.raises(SMIMEError, match="CVE-2026-69247"):
        require_fixed_cryptography("49.0.1")
    require_fixed_cryptography("50.0.0")
    with pytest.raises(SMIMEError, match="cannot tell"):
        require_fixed_cryptography("dev")


# --- openssl interop ----------------------------------------------------------------------------------------


def _write(directory: Path, pki: Pki, name: str) -> tuple[Path, Path]:
    certificate, key = pki.identity(name)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _openssl(*args: str | Path, data: bytes) -> bytes:
    result = subprocess.run([OPENSSL, *map(str, args)], input=data, capture_output=True, timeout=30,
                            check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@needs_openssl
def test_openssl_accepts_our_signed_and_encrypted_messages(tmp_path, pki):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca.certificate.public_bytes(serialization.Encoding.PEM))
    bob_cert, bob_key = _write(tmp_path, pki, "bob")
    at = ("-attime", str(int(NOW.timestamp())))
    signed = sign(mail(), *pki.identity("alice"))
    content = _openssl("smime", "-verify", "-CAfile", ca, "-purpose", "smimesign", *at, data=signed)
    assert b"Quarterly numbers attached." in content
    encrypted = encrypt(signed, [pki.certs["bob"]], aes256=True)
    inner = _openssl("cms", "-decrypt", "-recip", bob_cert, "-inkey", bob_key, data=encrypted)
    assert b"Quarterly numbers attached." in _openssl("cms", "-verify", "-CAfile", ca, *at, data=inner)


@needs_openssl
def test_we_accept_openssl_signed_and_encrypted_messages(tmp_path, pki):
    alice_cert, alice_key = _write(tmp_path, pki, "alice")
    bob_cert, bob_key = _write(tmp_path, pki, "bob")
    signed = _openssl("smime", "-sign", "-signer", alice_cert, "-inkey", alice_key, "-md", "sha256",
                      data=ENTITY)
    assert b"application/x-pkcs7-signature" in signed  # openssl's legacy type, accepted on input
    assert verify(signed, roots=[pki.ca.certificate], now=NOW).signer == pki.certs["alice"]
    encrypted = _openssl("cms", "-encrypt", "-aes256", bob_cert, data=ENTITY)
    assert b"Quarterly numbers attached." in decrypt(encrypted, [pki.identity("alice"), pki.identity("bob")])
    # -keyid names the recipient by subject key identifier, which cryptography cannot read: a clear refusal.
    by_key_id = _openssl("cms", "-encrypt", "-aes256", "-keyid", bob_cert, data=ENTITY)
    with pytest.raises(SMIMEError, match=r"names the key with subject key identifier [0-9a-f:]+, and crypto"):
        decrypt(by_key_id, [pki.identity("bob")])
    with pytest.raises(SMIMEError, match="no key on this device can decrypt"):
        decrypt(by_key_id, [pki.identity("carol")])
