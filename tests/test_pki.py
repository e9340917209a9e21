"""Server PKI: the CA on disk, TLS server and device certificates, PKCS#12 export, TLS files.

TLS files are checked the way the web layer will use them: loaded into twisted's CertificateOptions.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm_protocol.certificate_chain import verify_chain
from mdm_server.pki import (
    CertificateAuthority,
    Pkcs12Encryption,
    PkiError,
    export_pkcs12,
    load_pkcs12,
    random_password,
    server_tls_files,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPENSSL = shutil.which("openssl")
# Algorithm identifiers as DER, to see which suite a PKCS#12 really uses.
OID_3DES_PBE = bytes.fromhex("060a2a864886f70d010c0103")  # pbeWithSHAAnd3-KeyTripleDES-CBC
OID_PBES2 = bytes.fromhex("06092a864886f70d01050d")
OID_AES256_CBC = bytes.fromhex("060960864801650304012a")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("mdmsim Test CA", now=NOW)


@pytest.fixture(scope="module")
def identity(ca):
    return ca.issue_device_identity("device-0001", NOW)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _extension(certificate: x509.Certificate, kind):
    return certificate.extensions.get_extension_for_class(kind)


# --- the CA --------------------------------------------------------------------------------------------


def test_new_ca_is_a_p256_ca_for_leaves_only(ca):
    certificate = ca.certificate
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)
    assert ca.private_key.curve.name == "secp256r1"
    constraints = _extension(certificate, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert _extension(certificate, x509.KeyUsage).value.key_cert_sign
    certificate.verify_directly_issued_by(certificate)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mdmsim Test CA"
    assert certificate.not_valid_before_utc == NOW - timedelta(hours=1)
    assert certificate.not_valid_after_utc == NOW + timedelta(days=3650)


def test_fingerprint_is_colon_separated_sha256(ca):
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", ca.fingerprint)
    assert ca.fingerprint.replace(":", "").lower() == ca.certificate.fingerprint(hashes.SHA256()).hex()


def test_rsa_ca_on_request():
    rsa_ca = CertificateAuthority.create("RSA CA", key_type="rsa", now=NOW)
    assert isinstance(rsa_ca.private_key, rsa.RSAPrivateKey) and rsa_ca.private_key.key_size == 2048
    device, _ = rsa_ca.issue_device_identity("device", NOW)
    verify_chain(device, [rsa_ca.certificate], now=NOW)


def test_unknown_key_type_is_refused():
    with pytest.raises(PkiError, match="unknown key type 'dsa'"):
        CertificateAuthority.create("CA", key_type="dsa", now=NOW)


def test_load_or_create_is_idempotent_and_private(tmp_path):
    data_dir = tmp_path / "data" / "pki"
    first = CertificateAuthority.load_or_create(data_dir, now=NOW)
    files = {name: (data_dir / name).read_bytes() for name in ("ca.pem", "ca.key")}
    second = CertificateAuthority.load_or_create(data_dir, now=NOW + timedelta(days=9))
    assert second.fingerprint == first.fingerprint
    assert second.private_key.private_numbers() == first.private_key.private_numbers()
    assert {name: (data_dir / name).read_bytes() for name in files} == files
    assert _mode(data_dir / "ca.pem") == 0o600 and _mode(data_dir / "ca.key") == 0o600
    assert _mode(data_dir) == 0o700
    assert sorted(p.name for p in data_dir.iterdir()) == ["ca.key", "ca.pem"]  # no temporary files left


def test_load_or_create_refuses_a_half_present_ca(tmp_path):
    CertificateAuthority.load_or_create(tmp_path, now=NOW)
    (tmp_path / "ca.key").unlink()
    with pytest.raises(PkiError, match="ca.pem but not .*ca.key"):
        CertificateAuthority.load_or_create(tmp_path, now=NOW)
    assert not (tmp_path / "ca.key").exists()  # nothing silently replaced


def test_load_or_create_refuses_corrupt_or_mismatched_files(tmp_path, ca):
    CertificateAuthority.load_or_create(tmp_path, now=NOW)
    key_path = tmp_path / "ca.key"
    original_key = key_path.read_bytes()
    key_path.write_bytes(ca.private_key_pem)  # another CA's key
    with pytest.raises(PkiError, match="does not belong"):
        CertificateAuthority.load_or_create(tmp_path, now=NOW)
    key_path.write_bytes(original_key)
    (tmp_path / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(PkiError, match="not readable PEM"):
        CertificateAuthority.load_or_create(tmp_path, now=NOW)


def test_a_leaf_is_not_accepted_as_ca(ca, identity):
    certificate, key = identity
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PkiError, match="CA:TRUE"):
        CertificateAuthority.from_pem(pem, key_pem)


# --- issued certificates -------------------------------------------------------------------------------


def test_server_certificate_passes_a_tls_clients_checks(ca):
    certificate, key = ca.issue_server_certificate(["localhost", "127.0.0.1", "mdm.example.test"], NOW)
    assert key.public_key() == certificate.public_key() and isinstance(key, ec.EllipticCurvePrivateKey)
    san = _extension(certificate, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "mdm.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(_extension(certificate, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc <= timedelta(days=398)
    builder = verification.PolicyBuilder().store(verification.Store([ca.certificate])).time(NOW)
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        builder.build_server_verifier(name).verify(certificate, [])
    with pytest.raises(verification.VerificationError):
        builder.build_server_verifier(x509.DNSName("elsewhere.example")).verify(certificate, [])


@pytest.mark.parametrize("names", [[], ["bad name"], ["émdm.example"], ["a..b"]])
def test_server_certificate_refuses_bad_names(ca, names):
    with pytest.raises(PkiError):
        ca.issue_server_certificate(names, NOW)


def test_device_identity_is_a_client_certificate_with_a_short_random_serial(ca, identity):
    certificate, key = identity
    assert key.public_key() == certificate.public_key()
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "device-0001"
    assert list(_extension(certificate, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not _extension(certificate, x509.BasicConstraints).value.ca
    assert 0 < certificate.serial_number < 2**64
    other, _ = ca.issue_device_identity("device-0001", NOW)
    assert other.serial_number != certificate.serial_number
    verify_chain(certificate, [ca.certificate], now=NOW)


def test_rsa_device_identity(ca):
    certificate, key = ca.issue_device_identity("device-rsa", NOW, key_type="rsa")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert _extension(certificate, x509.KeyUsage).value.key_encipherment


def test_leaf_never_outlives_its_ca(ca):
    late = ca.certificate.not_valid_after_utc - timedelta(days=10)
    certificate, _ = ca.issue_device_identity("late-device", late)
    assert certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


# --- PKCS#12 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [1, 2048])
@pytest.mark.parametrize("encryption", list(Pkcs12Encryption), ids=lambda e: e.name)
def test_pkcs12_round_trip(ca, identity, encryption, rounds):
    certificate, key = identity
    password = random_password()
    bundle = export_pkcs12(certificate, key, password.encode(), "Device identity", chain=[ca.certificate],
                           encryption=encryption, kdf_rounds=rounds)
    contents = load_pkcs12(bundle, password)
    assert contents.certificate == certificate
    assert contents.private_key.private_numbers() == key.private_numbers()
    assert contents.chain == (ca.certificate,)
    assert contents.friendly_name == "Device identity"


def test_pkcs12_wrong_password_fails(identity):
    bundle = export_pkcs12(*identity, b"right password", "device")
    with pytest.raises(PkiError, match="wrong password"):
        load_pkcs12(bundle, b"wrong password")
    with pytest.raises(PkiError, match="wrong password"):
        load_pkcs12(b"not a pkcs12 at all", b"right password")


def test_pkcs12_suites_are_the_ones_chosen(identity):
    legacy = export_pkcs12(*identity, b"pw", "device")
    modern = export_pkcs12(*identity, b"pw", "device", encryption=Pkcs12Encryption.MODERN)
    assert OID_3DES_PBE in legacy and OID_PBES2 not in legacy
    assert OID_PBES2 in modern and OID_AES256_CBC in modern and OID_3DES_PBE not in modern


@pytest.mark.skipif(OPENSSL is None, reason="openssl command line not on PATH")
def test_openssl_reads_the_default_pkcs12(tmp_path, identity):
    (tmp_path / "id.p12").write_bytes(export_pkcs12(*identity, b"s3cret", "device"))
    result = subprocess.run(
        [OPENSSL, "pkcs12", "-in", str(tmp_path / "id.p12"), "-passin", "pass:s3cret", "-nokeys", "-info"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in result.stderr and "MAC: sha1" in result.stderr


def test_pkcs12_refuses_bad_input(ca, identity):
    certificate, key = identity
    with pytest.raises(PkiError, match="must not be empty"):
        export_pkcs12(certificate, key, b"", "device")
    with pytest.raises(PkiError, match="does not belong"):
        export_pkcs12(ca.certificate, key, b"pw", "device")
    certificate_only = pkcs12.serialize_key_and_certificates(
        b"ca", None, None, [ca.certificate], serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(PkiError, match="certificate and its private key"):
        load_pkcs12(certificate_only, b"pw")


def test_random_passwords_are_long_and_distinct():
    passwords = {random_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24}", p) for p in passwords)


# --- TLS files for the web layer -----------------------------------------------------------------------


def test_server_tls_files_are_created_reused_and_renewed(tmp_path):
    first = server_tls_files(tmp_path, now=NOW)
    certificate = x509.load_pem_x509_certificate(first.certificate_pem)
    key = serialization.load_pem_private_key(first.private_key_pem, password=None)
    assert key.public_key() == certificate.public_key()
    assert first.ca_certificate_pem == (tmp_path / "ca.pem").read_bytes()
    assert first.chain_pem == first.certificate_pem + first.ca_certificate_pem
    assert all(_mode(tmp_path / name) == 0o600 for name in ("server.pem", "server.key", "ca.pem", "ca.key"))

    assert server_tls_files(tmp_path, now=NOW + timedelta(days=100)) == first
    renewed = server_tls_files(tmp_path, now=NOW + timedelta(days=380))  # within 30 days of expiry
    assert renewed.certificate_pem != first.certificate_pem
    assert renewed.ca_certificate_pem == first.ca_certificate_pem
    wider = server_tls_files(tmp_path, ["localhost", "127.0.0.1", "mdm.local"], now=NOW + timedelta(days=381))
    names = x509.load_pem_x509_certificate(wider.certificate_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    assert "mdm.local" in names


def test_server_tls_files_replace_a_corrupt_certificate(tmp_path):
    first = server_tls_files(tmp_path, now=NOW)
    (tmp_path / "server.pem").write_bytes(b"garbage")
    again = server_tls_files(tmp_path, now=NOW)
    assert again.certificate_pem != first.certificate_pem
    key = serialization.load_pem_private_key(again.private_key_pem, password=None)
    assert x509.load_pem_x509_certificate(again.certificate_pem).public_key() == key.public_key()


def test_server_tls_files_load_into_twisted(tmp_path):
    """What the web layer will do with them; twisted refuses a key that does not match the certificate."""
    from twisted.internet import error, ssl

    files = server_tls_files(tmp_path, now=NOW)
    private = ssl.PrivateCertificate.loadPEM(files.certificate_pem + files.private_key_pem)
    assert private.privateKey.matches(private.getPublicKey())
    ssl.Certificate.loadPEM(files.ca_certificate_pem)
    other_key = server_tls_files(tmp_path / "other", now=NOW).private_key_pem
    with pytest.raises(error.VerifyError):
        ssl.PrivateCertificate.loadPEM(files.certificate_pem + other_key)


# --- PKCS#12 KDF rounds (the enrollment identity uses 1: its random password travels with it) -------------


def mac_iterations(bundle: bytes) -> int:
    """The MAC's KDF rounds as the file states them (DER omits the DEFAULT of 1)."""
    from pyasn1.codec.der import decoder
    from pyasn1_modules import rfc7292

    pfx, rest = decoder.decode(bundle, asn1Spec=rfc7292.PFX())
    assert rest == b""
    return int(pfx["macData"]["iterations"])


def openssl_rounds(tmp_path: Path, bundle: bytes, password: str) -> list[str]:
    """What `openssl pkcs12 -info` reports for the MAC and each encrypted bag ("MAC: sha1, Iteration 1", ...)."""
    (tmp_path / "x.p12").write_bytes(bundle)
    result = subprocess.run(
        [OPENSSL, "pkcs12", "-in", str(tmp_path / "x.p12"), "-passin", f"pass:{password}", "-info", "-noout"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in (result.stdout + result.stderr).splitlines() if "Iteration" in line]


def test_default_kdf_rounds_stay_2048_for_key_bags_and_mac(identity):
    bundle = export_pkcs12(*identity, "pw", "device")
    assert mac_iterations(bundle) == 2048
    assert b"\x02\x02\x08\x00" in bundle  # INTEGER 2048 in the bags' PBE parameters


@pytest.mark.parametrize("rounds", [1, 2, 1000, 2048, 3000])
def test_kdf_rounds_reach_the_mac_as_written(identity, rounds):
    bundle = export_pkcs12(*identity, "pw", "device", kdf_rounds=rounds)
    assert mac_iterations(bundle) == rounds
    assert load_pkcs12(bundle, "pw").certificate == identity[0]


def test_one_round_mac_leaves_iterations_out_as_der_requires(identity):
    bundle = export_pkcs12(*identity, "pw", "device", kdf_rounds=1)
    sha1_digest_info = bytes.fromhex("3021300906052b0e03021a05000414")
    mac_data = bundle[bundle.rindex(sha1_digest_info) - 2:]
    # SEQUENCE { DigestInfo (33 bytes), OCTET STRING salt (8 bytes) } and nothing after: no INTEGER 1
    assert mac_data[:2] == bytes([0x30, 2 + 33 + 2 + 8]) and len(mac_data) == 2 + 2 + 33 + 2 + 8


@pytest.mark.skipif(OPENSSL is None, reason="openssl command line not on PATH")
@pytest.mark.parametrize("encryption", list(Pkcs12Encryption), ids=lambda e: e.name)
def test_openssl_reads_one_round_pkcs12_with_every_derivation_at_one(tmp_path, identity, encryption):
    bundle = export_pkcs12(*identity, "s3cret", "device", encryption=encryption, kdf_rounds=1)
    lines = openssl_rounds(tmp_path, bundle, "s3cret")
    assert len(lines) == 3, lines  # the MAC, the certificate bag, the shrouded key bag
    assert all(re.search(r"Iteration 1\b", line) for line in lines), lines
    assert lines[0].startswith("MAC: sha1" if encryption is Pkcs12Encryption.LEGACY else "MAC: sha256")


@settings(max_examples=25, deadline=None)
@given(password=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), min_size=1,
                        max_size=40),
       rounds=st.integers(1, 40), encryption=st.sampled_from(list(Pkcs12Encryption)))
def test_any_password_opens_its_pkcs12_at_any_round_count_and_no_other_does(password, rounds, encryption):
    certificate, key = _HYPOTHESIS_IDENTITY
    bundle = export_pkcs12(certificate, key, password, "device", encryption=encryption, kdf_rounds=rounds)
    assert mac_iterations(bundle) == rounds
    contents = load_pkcs12(bundle, password)
    assert contents.certificate == certificate and contents.private_key.public_key() == key.public_key()
    with pytest.raises(PkiError, match="wrong password"):
        load_pkcs12(bundle, password + "x")


def test_device_opens_one_round_pkcs12_as_ios_would(identity):
    from device_sim.install_rules import Pkcs12Refusal, open_pkcs12

    bundle = export_pkcs12(*identity, "s3cret", "MDM identity", kdf_rounds=1)
    assert open_pkcs12(bundle, "s3cret").certificate == identity[0]
    with pytest.raises(Pkcs12Refusal) as refused:
        open_pkcs12(bundle, "wrong")
    assert refused.value.code == 9000


@pytest.mark.parametrize("rounds", [0, -5, True, 1.5, "1"])
def test_kdf_rounds_must_be_a_positive_whole_number(identity, rounds):
    with pytest.raises(PkiError, match="KDF rounds"):
        export_pkcs12(*identity, "pw", "device", kdf_rounds=rounds)


@pytest.mark.parametrize("rounds", [1, 2048])
def test_export_refuses_a_password_or_name_that_is_not_utf8(identity, rounds):
    with pytest.raises(PkiError, match="password must be UTF-8"):
        export_pkcs12(*identity, b"\xff\xfe", "device", kdf_rounds=rounds)
    with pytest.raises(PkiError, match="friendly name must be UTF-8"):
        export_pkcs12(*identity, "pw", b"\xff\xfe", kdf_rounds=rounds)


def test_a_nul_in_a_password_is_refused_not_a_crash(identity):
    from device_sim.install_rules import Pkcs12Refusal, open_pkcs12

    with pytest.raises(PkiError, match="NUL"):
        export_pkcs12(*identity, "pass\0word", "device")
    bundle = export_pkcs12(*identity, "pass", "device", kdf_rounds=1)
    # cryptography itself panics on such a password; a profile may carry one, so it reads as a wrong password.
    with pytest.raises(PkiError, match="wrong password"):
        load_pkcs12(bundle, "pass\0word")
    with pytest.raises(Pkcs12Refusal) as refused:
        open_pkcs12(bundle, "pass\0")
    assert refused.value.code == 9000


_HYPOTHESIS_IDENTITY = CertificateAuthority.create("hypothesis CA", now=NOW).issue_device_identity("device", NOW)


# --- the LEGACY writer for round counts cryptography cannot do -------------------------------------------


def openssl_layout(tmp_path: Path, bundle: bytes, password: str) -> list[str]:
    """`openssl pkcs12 -info -nodes` without what differs between two exports (base64, round counts)."""
    (tmp_path / "layout.p12").write_bytes(bundle)
    result = subprocess.run([OPENSSL, "pkcs12", "-in", str(tmp_path / "layout.p12"), "-passin",
                             f"pass:{password}", "-info", "-nodes"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = (result.stderr + result.stdout).splitlines()
    return [re.sub(r"Iteration \d+", "Iteration N", line) for line in lines
            if not re.fullmatch(r"[A-Za-z0-9+/=]+", line)]


@pytest.mark.skipif(OPENSSL is None, reason="openssl command line not on PATH")
def test_one_round_legacy_file_has_cryptographys_layout(tmp_path, ca, identity):
    ours = export_pkcs12(*identity, "pw", "MDM identity", chain=[ca.certificate], kdf_rounds=1)
    theirs = export_pkcs12(*identity, "pw", "MDM identity", chain=[ca.certificate])  # cryptography's writer
    layout = openssl_layout(tmp_path, ours, "pw")
    assert layout == openssl_layout(tmp_path, theirs, "pw")
    assert "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration N" in layout
    assert sum("localKeyID" in line for line in layout) == 2  # on the leaf and on its key, as OpenSSL pairs them


def test_one_round_legacy_file_is_strict_der(ca, identity):
    from pyasn1.codec.der import decoder, encoder
    from pyasn1_modules import rfc7292

    bundle = export_pkcs12(*identity, "pw", "MDM identity", chain=[ca.certificate], kdf_rounds=1)
    pfx, rest = decoder.decode(bundle, asn1Spec=rfc7292.PFX())
    assert rest == b"" and encoder.encode(pfx) == bundle
    inner = decoder.decode(bytes(pfx["authSafe"]["content"]), asn1Spec=rfc7292.univ.OctetString())[0]
    auth_safe, rest = decoder.decode(bytes(inner), asn1Spec=rfc7292.AuthenticatedSafe())
    assert rest == b"" and encoder.encode(auth_safe) == bytes(inner)
    key_contents = decoder.decode(bytes(auth_safe[1]["content"]), asn1Spec=rfc7292.univ.OctetString())[0]
    safe_contents, _ = decoder.decode(bytes(key_contents), asn1Spec=rfc7292.SafeContents())
    assert encoder.encode(safe_contents) == bytes(key_contents)  # attributes in DER's SET OF order
    assert safe_contents[0]["bagId"] == rfc7292.id_pkcs8ShroudedKeyBag


def test_one_round_legacy_file_holds_rsa_keys_and_any_friendly_name(ca):
    from device_sim.install_rules import open_pkcs12

    certificate, key = ca.issue_device_identity("rsa-device", NOW, "rsa")
    bundle = export_pkcs12(certificate, key, "pw", "Ünïcødé Ωmega identity", kdf_rounds=1)
    contents = load_pkcs12(bundle, "pw")
    assert contents.private_key.private_numbers() == key.private_numbers()
    assert contents.friendly_name == "Ünïcødé Ωmega identity"
    assert open_pkcs12(bundle, "pw").certificate == certificate
    # Outside the BMP the name is written as UTF-16 surrogates, byte for byte as cryptography writes it
    # (OpenSSL then reads no name from either file).
    ours, theirs = (export_pkcs12(certificate, key, "pw", "a🙂", kdf_rounds=rounds) for rounds in (1, 2048))
    assert bytes.fromhex("1e060061d83dde42") in ours and bytes.fromhex("1e060061d83dde42") in theirs
