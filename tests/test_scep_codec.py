"""The SCEP codec against independent implementations: PKCSReqs made with the openssl CLI (CSR, envelope) and
pyasn1's RFC 5652 classes (SignedData with the SCEP attributes) are served by our server; our CertReps are
verified and opened by `openssl cms` and read by cryptography.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import char, univ
from pyasn1_modules import rfc5280, rfc5652
from server_kit import START, make_server

from device_sim.memory_http import MemoryHTTP
from mdm_protocol.scep import (
    FailInfo,
    MessageType,
    PkiStatus,
    ScepError,
    build_pki_message,
    new_nonce,
    pkcs_req,
    read_pki_message,
)
from mdm_protocol.scep_envelope import ContentCipher, EnvelopeError, envelope, open_envelope
from mdm_protocol.scep_operations import build_csr, parse_ca_certificates, requester_certificate
from mdm_server.ca import CertificateAuthority
from mdm_server.scep_service import UnreadableRequest

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
SCEP = "2.16.840.1.113733.1.9."


def _openssl(*args: str, data: bytes | None = None, cwd=None) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True, cwd=cwd).stdout


@pytest.fixture
def server(tmp_path):
    return make_server(tmp_path, enrollment_identity="scep")


def _ra(server, tmp_path):
    answer = MemoryHTTP(server.site).request("GET", "/scep?operation=GetCACert")
    certificates = parse_ca_certificates(answer.headers["content-type"], answer.body)
    # A degenerate PKCS#7's SET OF certificates has no order: tell them apart by what they are.
    (ra,) = [c for c in certificates if c.subject != c.issuer]
    (ca,) = [c for c in certificates if c.subject == c.issuer]
    (tmp_path / "ra.pem").write_bytes(ra.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ra, ca


def _openssl_request(tmp_path, challenge: str, cipher: str) -> tuple[bytes, bytes]:
    """(self-signed certificate PEM, enveloped CSR DER) made by openssl alone."""
    (tmp_path / "req.cnf").write_text(
        "[req]\ndistinguished_name=dn\nattributes=attrs\nprompt=no\n[dn]\nCN=openssl device\n"
        f"[attrs]\nchallengePassword={challenge}\n")
    _openssl("genrsa", "-out", "me.key", "2048", cwd=tmp_path)
    _openssl("req", "-new", "-key", "me.key", "-config", "req.cnf", "-outform", "DER", "-out", "csr.der",
             cwd=tmp_path)
    _openssl("req", "-x509", "-key", "me.key", "-subj", "/CN=openssl device", "-days", "1", "-out", "me.pem",
             cwd=tmp_path)
    enveloped = _openssl("cms", "-encrypt", "-binary", f"-{cipher}", "-in", "csr.der", "-outform", "DER",
                         "ra.pem", cwd=tmp_path)
    return (tmp_path / "me.pem").read_bytes(), enveloped


def _attribute(oid: str, value) -> rfc5652.Attribute:
    attribute = rfc5652.Attribute()
    attribute["attrType"] = univ.ObjectIdentifier(oid)
    attribute["attrValues"].append(value)
    return attribute


def _pyasn1_signed(content: bytes, certificate_pem: bytes, key_pem: bytes, nonce: bytes, transaction: str,
                   digest: str = "sha256") -> bytes:
    """A PKCSReq SignedData built with pyasn1's RFC 5652 classes, signed by cryptography: not our encoder."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    digest_oid = {"sha256": "2.16.840.1.101.3.4.2.1", "sha512": "2.16.840.1.101.3.4.2.3"}[digest]
    attributes = rfc5652.SignedAttributes().subtype(implicitTag=rfc5652.tag.Tag(
        rfc5652.tag.tagClassContext, rfc5652.tag.tagFormatConstructed, 0))
    for attribute in (
        _attribute("1.2.840.113549.1.9.3", univ.ObjectIdentifier("1.2.840.113549.1.7.1")),
        _attribute("1.2.840.113549.1.9.4", univ.OctetString(hashlib.new(digest, content).digest())),
        _attribute(SCEP + "2", char.PrintableString("19")),
        _attribute(SCEP + "7", char.PrintableString(transaction)),
        _attribute(SCEP + "5", univ.OctetString(nonce)),
    ):
        attributes.append(attribute)
    to_sign = encoder.encode(attributes.clone(tagSet=univ.SetOf.tagSet, cloneValueFlag=True))
    algorithm = {"sha256": hashes.SHA256, "sha512": hashes.SHA512}[digest]()
    signature = key.sign(to_sign, padding.PKCS1v15(), algorithm)

    signer = rfc5652.SignerInfo()
    signer["version"] = 1
    sid = rfc5652.IssuerAndSerialNumber()
    sid["issuer"] = decoder.decode(certificate.issuer.public_bytes(), asn1Spec=rfc5280.Name())[0]
    sid["serialNumber"] = certificate.serial_number
    signer["sid"]["issuerAndSerialNumber"] = sid
    signer["digestAlgorithm"]["algorithm"] = univ.ObjectIdentifier(digest_oid)
    signer["signedAttrs"] = attributes
    signer["signatureAlgorithm"]["algorithm"] = univ.ObjectIdentifier("1.2.840.113549.1.1.1")
    signer["signature"] = signature

    signed = rfc5652.SignedData()
    signed["version"] = 1
    algorithm_id = rfc5280.AlgorithmIdentifier()
    algorithm_id["algorithm"] = univ.ObjectIdentifier(digest_oid)
    signed["digestAlgorithms"].append(algorithm_id)
    signed["encapContentInfo"]["eContentType"] = univ.ObjectIdentifier("1.2.840.113549.1.7.1")
    encapsulated = signed["encapContentInfo"]
    encapsulated["eContent"] = encapsulated["eContent"].clone(content)
    choice = rfc5652.CertificateChoices()
    choice["certificate"] = decoder.decode(certificate.public_bytes(serialization.Encoding.DER),
                                           asn1Spec=rfc5280.Certificate())[0]
    signed["certificates"].append(choice)
    signed["signerInfos"].append(signer)
    info = rfc5652.ContentInfo()
    info["contentType"] = univ.ObjectIdentifier("1.2.840.113549.1.7.2")
    info["content"] = info["content"].clone(encoder.encode(signed))
    return encoder.encode(info)


@pytest.mark.parametrize("cipher", ["aes128", "aes256", "des3"])
def test_an_openssl_and_pyasn1_request_is_issued_and_openssl_opens_our_certrep(server, tmp_path, cipher):
    _ra(server, tmp_path)
    challenge = server.scep.new_challenge()
    me_pem, enveloped = _openssl_request(tmp_path, challenge, cipher)
    nonce = os.urandom(16)
    request = _pyasn1_signed(enveloped, me_pem, (tmp_path / "me.key").read_bytes(), nonce, "OPENSSL-1")
    answer = MemoryHTTP(server.site).request("POST", "/scep?operation=PKIOperation", request,
                                             {"Content-Type": "application/x-pki-message"})
    assert answer.status == 200 and answer.headers["content-type"] == "application/x-pki-message"
    assert server.scep.outcomes == {"issued": 1}
    (tmp_path / "rep.der").write_bytes(answer.body)
    # openssl checks the RA's signature up to our CA, then opens the envelope with the device's key.
    inner = _openssl("cms", "-verify", "-inform", "DER", "-in", "rep.der", "-CAfile", "ca.pem", "-binary",
                     "-purpose", "any", cwd=tmp_path)
    (tmp_path / "rep.env").write_bytes(inner)
    degenerate = _openssl("cms", "-decrypt", "-inform", "DER", "-in", "rep.env", "-recip", "me.pem", "-inkey",
                          "me.key", "-binary", cwd=tmp_path)
    issued = x509.load_pem_x509_certificate(_openssl("pkcs7", "-inform", "DER", "-print_certs", data=degenerate))
    csr_key = x509.load_der_x509_csr((tmp_path / "csr.der").read_bytes()).public_key()
    assert issued.public_key() == csr_key and issued.issuer == server.ca.certificate.subject
    # The envelope's cipher is the request's (what the requester showed it reads).
    printed = _openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", "rep.env", cwd=tmp_path).decode()
    assert {"aes128": "aes-128-cbc", "aes256": "aes-256-cbc", "des3": "des-ede3-cbc"}[cipher] in printed
    reply = read_pki_message(answer.body)
    assert (reply.message_type, reply.pki_status, reply.transaction_id) == (
        MessageType.CERT_REP, PkiStatus.SUCCESS, "OPENSSL-1")
    assert reply.recipient_nonce == nonce and reply.sender_nonce != nonce


def test_a_request_whose_csr_key_is_not_the_signer_is_refused(server, tmp_path):
    _ra(server, tmp_path)
    challenge = server.scep.new_challenge()
    _, enveloped = _openssl_request(tmp_path, challenge, "aes128")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-subj", "/CN=other",
             "-days", "1", "-out", "other.pem", cwd=tmp_path)
    request = _pyasn1_signed(enveloped, (tmp_path / "other.pem").read_bytes(),
                             (tmp_path / "other.key").read_bytes(), os.urandom(16), "OTHER")
    reply = read_pki_message(server.scep.pki_operation(request))
    assert reply.pki_status is PkiStatus.FAILURE and reply.fail_info is FailInfo.BAD_MESSAGE_CHECK
    assert reply.fail_info_text == "the CSR's key is not the key that signed the request"
    assert server.scep.challenges.check(challenge, server.clock.seconds())[1].uses_left == 1


def test_our_envelopes_open_with_openssl_and_theirs_with_us(tmp_path):
    authority = CertificateAuthority.create("envelope test", key_type="rsa", now=datetime.fromtimestamp(START, UTC))
    (tmp_path / "r.pem").write_bytes(authority.certificate_pem)
    (tmp_path / "r.key").write_bytes(authority.private_key_pem)
    for cipher in ContentCipher:
        (tmp_path / "ours.der").write_bytes(envelope(b"hello " + cipher.name.encode(), authority.certificate, cipher))
        assert _openssl("cms", "-decrypt", "-inform", "DER", "-in", "ours.der", "-recip", "r.pem", "-inkey",
                        "r.key", "-binary", cwd=tmp_path) == b"hello " + cipher.name.encode()
    theirs = _openssl("cms", "-encrypt", "-binary", "-des3", "-outform", "DER", "r.pem", data=b"from openssl",
                      cwd=tmp_path)
    assert open_envelope(theirs, authority.certificate, authority.private_key).content == b"from openssl"
    damaged = bytearray(theirs)
    damaged[-3] ^= 0x55
    with pytest.raises(EnvelopeError, match="cannot be decrypted"):
        open_envelope(bytes(damaged), authority.certificate, authority.private_key)


def test_malformed_messages_are_scep_errors_not_crashes():
    for junk in (b"", b"\x30\x00", b"\x30\x80\x00\x00", os.urandom(300)):
        with pytest.raises(ScepError):
            read_pki_message(junk)


def _our_request(server, key, challenge: str | None = None) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzzed")])
    now = datetime.fromtimestamp(server.clock.seconds(), UTC)
    csr = build_csr(key, subject, challenge or server.scep.new_challenge())
    return pkcs_req(csr, requester_certificate(key, subject, now), key, server.scep.ra.certificate,
                    sender_nonce=new_nonce())


def test_a_requester_without_an_rsa_key_is_bad_alg_and_spends_nothing(server):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec device")])
    challenge = server.scep.new_challenge()
    csr = build_csr(key, subject, challenge)
    signer = requester_certificate(key, subject, datetime.fromtimestamp(server.clock.seconds(), UTC))
    sealed = envelope(csr.public_bytes(serialization.Encoding.DER), server.scep.ra.certificate)
    message = build_pki_message(sealed, signer, key, message_type=MessageType.PKCS_REQ, transaction="EC",
                                sender_nonce=new_nonce())
    reply = read_pki_message(server.scep.pki_operation(message))
    assert reply.pki_status is PkiStatus.FAILURE and reply.fail_info is FailInfo.BAD_ALG
    assert "cannot receive a SCEP reply; use RSA" in reply.fail_info_text
    assert server.scep.challenges.check(challenge, server.clock.seconds())[1].uses_left == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_requests_get_a_certrep_or_a_400_never_a_crash(server, data):
    global _FUZZ_REQUEST
    if _FUZZ_REQUEST is None:
        _FUZZ_REQUEST = _our_request(server, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                     "fuzz-challenge-not-issued")
    body = bytearray(_FUZZ_REQUEST)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(body) - 1))
        body[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(body) // 2, len(body)))
    try:
        answer = server.scep.pki_operation(bytes(body[:cut]))
    except UnreadableRequest:
        return
    reply = read_pki_message(answer)
    assert reply.message_type is MessageType.CERT_REP and reply.pki_status is PkiStatus.FAILURE


_FUZZ_REQUEST: bytes | None = None
