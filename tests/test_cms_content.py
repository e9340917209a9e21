"""`signed_content`: the content a CMS SignedData embeds (signed .mobileconfig files), read with the same BER
reader as Mdm-Signature; DER from cryptography, and the BER shape (indefinite lengths, segmented octets)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from mdm_protocol.cms import sign_detached, signed_content
from mdm_protocol.errors import SignatureError
from mdm_protocol.plist import encode_plist
from mdm_server.ca import CertificateAuthority

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTENT = encode_plist({"PayloadIdentifier": "com.example.profile", "PayloadContent": []})
SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")
DATA_OID = bytes.fromhex("06092a864886f70d010701")


@pytest.fixture(scope="module")
def identity():
    return CertificateAuthority.create("content test CA", now=NOW).issue_device_identity("signer", NOW)


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x82]) + size.to_bytes(2, "big")
    return bytes([tag]) + length + content


def _indefinite(tag: int, content: bytes) -> bytes:
    return bytes([tag, 0x80]) + content + b"\x00\x00"


def test_the_content_of_a_der_signed_profile(identity):
    certificate, key = identity
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(CONTENT).add_signer(certificate, key, hashes.SHA256())
              .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    assert signed_content(signed) == CONTENT


def test_ber_indefinite_lengths_and_segmented_octets_are_joined():
    segments = b"".join(_tlv(0x04, CONTENT[i:i + 100]) for i in range(0, len(CONTENT), 100))
    encapsulated = _indefinite(0x30, DATA_OID + _indefinite(0xA0, _indefinite(0x24, segments)))
    signed_data = _indefinite(0x30, _tlv(0x02, b"\x01") + _tlv(0x31, b"") + encapsulated + _tlv(0x31, b""))
    info = _indefinite(0x30, SIGNED_DATA_OID + _indefinite(0xA0, signed_data))
    assert len(CONTENT) > 100 and signed_content(info) == CONTENT


def test_a_detached_signature_carries_no_content(identity):
    with pytest.raises(SignatureError, match="detached"):
        signed_content(sign_detached(CONTENT, *identity))


def test_cms_that_is_not_signed_data_is_refused():
    recipient, _ = CertificateAuthority.create("rsa CA", now=NOW).issue_device_identity("recipient", NOW, "rsa")
    enveloped = (pkcs7.PKCS7EnvelopeBuilder().set_data(CONTENT).add_recipient(recipient)
                 .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    with pytest.raises(SignatureError, match="not SignedData"):
        signed_content(enveloped)


@pytest.mark.parametrize("data", [CONTENT, b"", b"\x30\x03\x02\x01\x01", b"\x30\x80\x02\x01"])
def test_what_is_not_cms_is_none(data):
    assert signed_content(data) is None
