"""Detached CMS signatures (Mdm-Signature): round trips, tampering, malformed input, BER, chains, OpenSSL.

Measured with timeit on this container (AMD EPYC, 2.1 KB plist body, one embedded certificate, header in):
verify_mdm_signature takes ~140 µs for EC P-256 and ~87 µs for RSA-2048 (it was ~570 / ~520 µs with pyasn1
decoding the structure), of which ~35 µs is reading the structure and ~75 µs (EC) / ~25 µs (RSA) loading
the certificate, its key and checking the signature; sign_detached ~55 µs (EC) / ~275 µs (RSA);
verify_chain ~115 µs.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import encoder
from pyasn1.type import univ, useful

from mdm_protocol import _cms_asn1
from mdm_protocol.certificate_chain import verify_chain
from mdm_protocol.cms import (
    SignatureError,
    SignedDataInfo,
    mdm_signature,
    sign_detached,
    verify_detached,
    verify_mdm_signature,
)
from mdm_protocol.errors import ProtocolError
from mdm_protocol.plist import encode_plist
from mdm_server.ca import CertificateAuthority

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UDID = "0000A1B2-000C3D4E5F601234"
# A real Idle report, as a device PUTs it after a push.
BODY = encode_plist({"Status": "Idle", "UDID": UDID})
OTHER_BODY = encode_plist({"Status": "Idle", "UDID": "0000FFFF-000000000000FFFF"})
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command line not on PATH")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("mdmsim Test CA", now=NOW)


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority.create("Some Other CA", now=NOW)


@pytest.fixture(scope="module")
def ec_identity(ca):
    return ca.issue_device_identity(UDID, NOW)


@pytest.fixture(scope="module")
def rsa_identity(ca):
    return ca.issue_device_identity(UDID, NOW, "rsa")


@pytest.fixture(scope="module", params=["ec", "rsa"])
def identity(request, ec_identity, rsa_identity):
    return ec_identity if request.param == "ec" else rsa_identity


@pytest.fixture(scope="module")
def signature(ec_identity) -> bytes:
    return sign_detached(BODY, *ec_identity)


def _reason(excinfo: pytest.ExceptionInfo[SignatureError]) -> str:
    return excinfo.value.reason


# --- round trips ---------------------------------------------------------------------------------------


def test_round_trip_returns_signer_digest_and_signing_time(identity):
    certificate, key = identity
    info = verify_detached(sign_detached(BODY, certificate, key), BODY)
    assert isinstance(info, SignedDataInfo)
    assert info.signer == certificate
    assert info.certificates == ()
    assert info.digest_algorithm == "sha256"
    assert info.signing_time is not None and info.signing_time.tzinfo == UTC
    assert info.signer_fingerprint == certificate.fingerprint(hashes.SHA256()).hex()


@pytest.mark.parametrize("algorithm", [hashes.SHA384(), hashes.SHA512()], ids=["sha384", "sha512"])
def test_other_hashes_are_reported(ec_identity, algorithm):
    signature = sign_detached(BODY, *ec_identity, hash=algorithm)
    assert verify_detached(signature, BODY).digest_algorithm == algorithm.name


def test_rsa_pss_round_trip(rsa_identity):
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    signature = sign_detached(BODY, *rsa_identity, rsa_padding=pss)
    assert verify_detached(signature, BODY).signer == rsa_identity[0]
    with pytest.raises(SignatureError, match="different body"):
        verify_detached(signature, OTHER_BODY)


def test_mdm_signature_header_round_trip(ec_identity):
    header = mdm_signature(BODY, *ec_identity)
    assert header.isascii() and "\n" not in header
    assert verify_mdm_signature(header, BODY).signer == ec_identity[0]
    assert verify_mdm_signature(f" {header}\t".encode(), BODY).signer == ec_identity[0]


def test_signature_error_is_a_protocol_error():
    assert issubclass(SignatureError, ProtocolError)


# --- what must fail ------------------------------------------------------------------------------------


def test_signature_over_another_body_fails(signature):
    with pytest.raises(SignatureError) as excinfo:
        verify_detached(signature, OTHER_BODY)
    assert "signature over a different body" in _reason(excinfo)


def test_tampered_signature_value_fails(signature):
    # The signature value is the last field of the last SignerInfo: the final byte is inside it.
    tampered = signature[:-1] + bytes([signature[-1] ^ 0x01])
    with pytest.raises(SignatureError) as excinfo:
        verify_detached(tampered, BODY)
    assert "bad signature" in _reason(excinfo)


def test_tampered_signed_attribute_fails(signature):
    # Move the signingTime attribute (its UTCTime follows the OID 1.2.840.113549.1.9.5 and a SET header) by
    # a year: the messageDigest still matches, the signature must not.
    at = signature.index(bytes.fromhex("06092a864886f70d010905")) + 11 + 2 + 2 + 1
    tampered = signature[:at] + bytes([signature[at] ^ 0x01]) + signature[at + 1 :]
    with pytest.raises(SignatureError) as excinfo:
        verify_detached(tampered, BODY)
    assert "bad signature" in _reason(excinfo)


def test_signature_without_the_signer_certificate_fails(ec_identity):
    certificate, key = ec_identity
    builder = pkcs7.PKCS7SignatureBuilder().set_data(BODY).add_signer(certificate, key, hashes.SHA256())
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCerts]
    with pytest.raises(SignatureError, match="signer certificate is not among the embedded"):
        verify_detached(builder.sign(serialization.Encoding.DER, options), BODY)


def test_signature_embedding_its_content_is_refused(ec_identity):
    certificate, key = ec_identity
    builder = pkcs7.PKCS7SignatureBuilder().set_data(BODY).add_signer(certificate, key, hashes.SHA256())
    embedded = builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    with pytest.raises(SignatureError, match="embeds its content"):
        verify_detached(embedded, BODY)


def test_enveloped_data_is_not_signed_data(rsa_identity):
    enveloped = (
        pkcs7.PKCS7EnvelopeBuilder().set_data(BODY).add_recipient(rsa_identity[0])
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    with pytest.raises(SignatureError, match="not SignedData"):
        verify_detached(enveloped, BODY)


def test_certificates_only_signed_data_has_no_signer(ec_identity):
    certs_only = pkcs7.serialize_certificates([ec_identity[0]], serialization.Encoding.DER)
    with pytest.raises(SignatureError, match="no signer"):
        verify_detached(certs_only, BODY)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda s: b"", "empty"),
        (lambda s: b"\x00", "not CMS"),
        (lambda s: b"definitely not DER", "not CMS"),
        (lambda s: s[: len(s) // 2], "not CMS"),
        (lambda s: s[:-1], "not CMS"),
        (lambda s: s + b"\x00", "trailing"),
        (lambda s: s * 100, "over"),
    ],
    ids=["empty", "zero", "text", "half", "one-short", "trailing", "huge"],
)
def test_malformed_input_fails_with_a_reason(signature, mangle, reason):
    with pytest.raises(SignatureError) as excinfo:
        verify_detached(mangle(signature), BODY)
    assert reason in _reason(excinfo)


def test_header_that_is_not_base64_fails():
    for header in ("", "   ", "not base64!", "QUJD=="[:-1] + "*"):
        with pytest.raises(SignatureError) as excinfo:
            verify_mdm_signature(header, BODY)
        assert "empty" in _reason(excinfo) or "not base64" in _reason(excinfo)


def test_base64_of_garbage_is_not_cms():
    with pytest.raises(SignatureError, match="not CMS"):
        verify_mdm_signature(base64.b64encode(b"\x30\x03\x02\x01"), BODY)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_signature_error(data):
    with pytest.raises(SignatureError):
        verify_detached(data, BODY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_signatures_never_raise_anything_else(signature, data):
    """Bytes outside the signed parts (digestAlgorithms, version) may change harmlessly; nothing may crash."""
    position = data.draw(st.integers(0, len(signature) - 1))
    action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if action == "flip":
        mutated = signature[:position] + bytes([signature[position] ^ data.draw(st.integers(1, 255))])
        mutated += signature[position + 1 :]
    elif action == "truncate":
        mutated = signature[:position]
    else:
        mutated = signature[:position] + data.draw(st.binary(min_size=1, max_size=4)) + signature[position:]
    try:
        info = verify_detached(mutated, BODY)
    except SignatureError:
        return
    assert info.signer.public_key() == verify_detached(signature, BODY).signer.public_key()


def test_indefinite_length_ber_is_accepted(signature):
    """Apple's CMS encoder writes indefinite lengths on the outer layers; they must verify like DER."""
    assert signature[:2] == b"\x30\x82" and signature[2 + 2 + 11 : 2 + 2 + 11 + 2] == b"\xa0\x82"
    signed_data = signature[2 + 2 + 11 + 4 :]
    ber = b"\x30\x80" + signature[4:15] + b"\xa0\x80" + signed_data + b"\x00\x00\x00\x00"
    assert verify_detached(ber, BODY).signer == verify_detached(signature, BODY).signer


# --- BER, DER and the structure around the signature ---------------------------------------------------
# The helpers below take DER apart and put it back together independently of mdm_protocol._cms_asn1, so
# the tests can write the BER that Apple's encoder sends and structures that no library would write.

TreePath = tuple[int, ...]
CONTENT_INFO = (0,)
EXPLICIT_CONTENT = (0, 1)
SIGNED_DATA = (0, 1, 0)
DIGEST_ALGORITHMS = (*SIGNED_DATA, 1)
ENCAP_CONTENT_INFO = (*SIGNED_DATA, 2)
CERTIFICATES = (*SIGNED_DATA, 3)
SIGNER_INFOS = (*SIGNED_DATA, 4)
SIGNER_INFO = (*SIGNER_INFOS, 0)
SID = (*SIGNER_INFO, 1)
SIGNED_ATTRS = (*SIGNER_INFO, 3)
SIGNATURE_ALGORITHM = (*SIGNER_INFO, 4)
SIGNATURE = (*SIGNER_INFO, 5)
# Apple's CMS encoder (like NSS's) streams these layers with indefinite lengths; certificates stay DER.
APPLE_INDEFINITE = {CONTENT_INFO, EXPLICIT_CONTENT, SIGNED_DATA, ENCAP_CONTENT_INFO, CERTIFICATES}
# Every constructed layer CMS itself defines, outside the signed attributes, the certificates and the issuer.
CMS_LAYERS = APPLE_INDEFINITE | {
    DIGEST_ALGORITHMS, (*DIGEST_ALGORITHMS, 0), SIGNER_INFOS, SIGNER_INFO, SID, (*SIGNER_INFO, 2),
    SIGNED_ATTRS, SIGNATURE_ALGORITHM,
}
PKCS9 = "1.2.840.113549.1.9."


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _tree(der: bytes) -> list:
    """[tag, content bytes or child nodes] for each TLV of definite-length DER."""
    nodes, offset = [], 0
    while offset < len(der):
        tag, length, offset = der[offset], der[offset + 1], offset + 2
        if length & 0x80:
            count = length & 0x7F
            length, offset = int.from_bytes(der[offset : offset + count], "big"), offset + count
        content, offset = der[offset : offset + length], offset + length
        nodes.append([tag, _tree(content) if tag & 0x20 else content])
    return nodes


def _encode(nodes: list, *, indefinite=frozenset(), long_form=frozenset(), path: TreePath = ()) -> bytes:
    """`_tree` nodes encoded again: DER, except indefinite or padded 4-byte lengths at the given paths."""
    out = []
    for index, (tag, value) in enumerate(nodes):
        here = (*path, index)
        content = value if isinstance(value, bytes) else _encode(
            value, indefinite=indefinite, long_form=long_form, path=here
        )
        if here in indefinite:
            out.append(bytes([tag, 0x80]) + content + b"\x00\x00")
        elif here in long_form:
            out.append(bytes([tag, 0x84]) + len(content).to_bytes(4, "big") + content)
        else:
            out.append(_tlv(tag, content))
    return b"".join(out)


def _node(nodes: list, path: TreePath) -> list:
    for index in path[:-1]:
        nodes = nodes[index][1]
    return nodes[path[-1]]


def _edited(signature: bytes, edit) -> bytes:
    tree = _tree(signature)
    edit(tree)
    return _encode(tree)


def _attribute(oid: str, *values: bytes) -> list:
    return _tree(_tlv(0x30, encoder.encode(univ.ObjectIdentifier(oid)) + _tlv(0x31, b"".join(values))))[0]


def _attribute_index(attributes: list, oid: str) -> int:
    encoded = encoder.encode(univ.ObjectIdentifier(oid))[2:]
    return next(i for i, attribute in enumerate(attributes) if attribute[1][0][1] == encoded)


def _resigned(signature: bytes, key: ec.EllipticCurvePrivateKey, edit) -> bytes:
    """`signature` with its signed attributes changed by `edit`, then signed again over their DER SET OF."""
    tree = _tree(signature)
    attributes = _node(tree, SIGNED_ATTRS)[1]
    edit(attributes)
    message = _tlv(0x31, b"".join(sorted(_encode([attribute]) for attribute in attributes)))
    _node(tree, SIGNATURE)[1] = key.sign(message, ec.ECDSA(hashes.SHA256()))
    return _encode(tree)


def test_tree_helpers_round_trip_der(signature):
    assert _encode(_tree(signature)) == signature


def test_apple_style_indefinite_lengths_verify(identity):
    certificate, key = identity
    ber = _encode(_tree(sign_detached(BODY, certificate, key)), indefinite=APPLE_INDEFINITE)
    assert ber.startswith(bytes.fromhex("3080" "06092a864886f70d010702" "a080" "3080"))
    assert verify_detached(ber, BODY).signer == certificate
    with pytest.raises(SignatureError, match="different body"):
        verify_detached(ber, OTHER_BODY)


@pytest.mark.parametrize("form", ["indefinite", "long_form"])
def test_every_cms_layer_may_use_ber_lengths(signature, ec_identity, form):
    ber = _encode(_tree(signature), **{form: CMS_LAYERS})
    assert len(ber) > len(signature)
    assert verify_detached(ber, BODY).signer == ec_identity[0]


@pytest.mark.parametrize("form", ["indefinite", "long_form"])
@pytest.mark.parametrize("where", [(*SIGNED_ATTRS, 0), (*SIGNED_ATTRS, 1, 1), (*SIGNED_ATTRS, 2, 0)])
def test_signed_attributes_must_be_der(signature, form, where):
    """The signature covers their DER: any other length form is refused before the signature is checked."""
    if form == "indefinite" and not _node(_tree(signature), where)[0] & 0x20:
        where = where[:-1]
    with pytest.raises(SignatureError, match="not DER"):
        verify_detached(_encode(_tree(signature), **{form: {where}}), BODY)


def test_signed_attributes_verify_in_any_order(signature, ec_identity):
    """They are signed as a DER SET OF, sorted, whatever order the encoder wrote them in."""
    reordered = _edited(signature, lambda tree: _node(tree, SIGNED_ATTRS)[1].reverse())
    assert reordered != signature
    assert verify_detached(reordered, BODY).signer == ec_identity[0]


def _set(path: TreePath, position: int, value):
    return lambda tree: _node(tree, path).__setitem__(position, value)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set(SIGNATURE, 0, 0x03), "lacks its signature"),
        (lambda tree: _node(tree, SIGNER_INFO)[1].append([0xA2, []]), "unexpected field"),
        (lambda tree: _node(tree, CONTENT_INFO)[1].append([0x05, b""]), "unexpected field"),
        (lambda tree: _node(tree, EXPLICIT_CONTENT)[1].append([0x05, b""]), "not one SEQUENCE"),
        (_set(DIGEST_ALGORITHMS, 1, [[0x05, b""]]), "not a SEQUENCE"),
        (_set(SIGNER_INFOS, 0, 0x30), "lacks its signerInfos"),
        (_set((*SIGNER_INFOS, 0), 0, 0x31), "a SignerInfo has tag 0x31"),
        (_set((*SID, 1), 1, b""), "INTEGER is empty"),
        (_set((*SIGNATURE_ALGORITHM, 0), 1, b"\x80\x2a\x86\x48\xce\x3d\x04\x03\x02"), "shortest form"),
        (_set((*SIGNATURE_ALGORITHM, 0), 1, b"\x2a\x86"), "truncated"),
        (lambda tree: _node(tree, SIGNATURE_ALGORITHM)[1].extend([[0x05, b""], [0x05, b""]]), "2 parameters"),
        (_set((*SIGNER_INFO, 0), 0, 0x1F), "unexpected tag 0x1f"),
    ],
    ids=["signature-bit-string", "signer-info-extra", "content-info-extra", "content-extra",
         "digest-algorithm-null", "signer-infos-sequence", "signer-info-set", "empty-serial",
         "padded-oid-arc", "truncated-oid", "two-parameters", "high-tag-number"],
)
def test_structure_errors_are_refused_with_a_reason(signature, edit, reason):
    with pytest.raises(SignatureError) as excinfo:
        verify_detached(_edited(signature, edit), BODY)
    assert reason in _reason(excinfo)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x30\x80\x04\x80\x00\x00\x00\x00", "indefinite length on tag 0x04"),
        (b"\x30\x80" * 1000 + b"\x00\x00" * 1000, "nested over 16 deep"),
        (b"\x30\x80\x06\x01\x00", "no end-of-contents"),
        (b"\x30\x80\x00\x01", "malformed end-of-contents"),
        (b"\x30\x85\x00\x00\x00\x00\x01", "bad length"),
        (b"\x30\x84\xff\xff\xff\xff", "runs past its container"),
        (b"\x30\x04\x30\x05\x00\x00", "runs past its container"),
        (b"\x30\x80" + (b"\x30\x80" * 15 + b"\x00\x00" * 15) * 1000 + b"\x00\x00", "lacks its contentType"),
    ],
    ids=["indefinite-primitive", "deep", "no-eoc", "bad-eoc", "five-length-octets", "huge-length",
         "child-overruns", "wide-and-deep"],
)
def test_hostile_framing_is_not_cms(data, reason):
    with pytest.raises(SignatureError, match="not CMS") as excinfo:
        verify_detached(data, BODY)
    assert reason in _reason(excinfo)


def _without(oid: str):
    return lambda attributes: attributes.pop(_attribute_index(attributes, oid))


def _replace(oid: str, *values: bytes):
    def edit(attributes: list) -> None:
        attributes[_attribute_index(attributes, oid)] = _attribute(oid, *values)
    return edit


def _duplicate(oid: str):
    return lambda attributes: attributes.append(attributes[_attribute_index(attributes, oid)])


DIGEST = encoder.encode(univ.OctetString(hashes.Hash(hashes.SHA256()).finalize()))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_without(PKCS9 + "4"), "lack contentType or messageDigest"),
        (_without(PKCS9 + "3"), "lack contentType or messageDigest"),
        (_duplicate(PKCS9 + "5"), "must appear once"),
        (_replace(PKCS9 + "4", DIGEST, DIGEST), "exactly one value"),
        (_replace(PKCS9 + "3", encoder.encode(univ.ObjectIdentifier("1.2.840.113549.1.7.2"))), "differs"),
        (_replace(PKCS9 + "3", b"\x05\x00"), "not an OBJECT IDENTIFIER"),
        (_replace(PKCS9 + "4", b"\x03\x02\x00\x00"), "not an OCTET STRING"),
        (_replace(PKCS9 + "4", DIGEST), "different body"),
        (_replace(PKCS9 + "5", _tlv(0x17, b"2603011200Z")), "not a valid time"),
        (_replace(PKCS9 + "5", _tlv(0x17, b"260301120000+0100")), "not a valid time"),
        (_replace(PKCS9 + "5", _tlv(0x17, b"261301120000Z")), "not a valid time"),
        (_replace(PKCS9 + "5", _tlv(0x18, b"20260301120000.50Z")), "not a valid time"),
        (_replace(PKCS9 + "5", _tlv(0x04, b"260301120000Z")), "not a valid time"),
    ],
    ids=["no-digest", "no-content-type", "two-signing-times", "two-digest-values", "content-type-differs",
         "content-type-null", "digest-bit-string", "digest-of-nothing", "utc-no-seconds", "utc-offset",
         "month-13", "fraction-trailing-zero", "time-octet-string"],
)
def test_signed_attribute_rules_hold_under_a_valid_signature(signature, ec_identity, edit, reason):
    """Each rule is checked for itself: the attributes are signed again, so the signature would verify."""
    with pytest.raises(SignatureError) as excinfo:
        verify_detached(_resigned(signature, ec_identity[1], edit), BODY)
    assert reason in _reason(excinfo)


@pytest.mark.parametrize(
    ("encoded", "moment"),
    [
        (encoder.encode(useful.UTCTime("491231235959Z")), datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (encoder.encode(useful.UTCTime("500101000000Z")), datetime(1950, 1, 1, tzinfo=UTC)),
        (encoder.encode(useful.GeneralizedTime("20600101120000.5Z")),
         datetime(2060, 1, 1, 12, 0, 0, 500000, tzinfo=UTC)),
    ],
    ids=["utc-2049", "utc-1950", "generalized-fraction"],
)
def test_signing_time_forms(signature, ec_identity, encoded, moment):
    resigned = _resigned(signature, ec_identity[1], _replace(PKCS9 + "5", encoded))
    assert verify_detached(resigned, BODY).signing_time == moment


def test_resigned_helper_keeps_a_valid_signature(signature, ec_identity):
    resigned = _resigned(signature, ec_identity[1], lambda attributes: None)
    assert resigned != signature  # ECDSA signatures are randomised
    assert verify_detached(resigned, BODY).signer == ec_identity[0]


def test_rsa_pss_with_default_parameters_is_refused_as_sha1(rsa_identity):
    """Absent RSASSA-PSS-params fields mean SHA-1 (RFC 4055), which we refuse; nothing else may escape."""
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    signature = sign_detached(BODY, *rsa_identity, rsa_padding=pss)
    pss_oid = _node(_tree(signature), (*SIGNATURE_ALGORITHM, 0))
    defaults = _edited(signature, _set(SIGNATURE_ALGORITHM, 1, [pss_oid, [0x30, []]]))
    with pytest.raises(SignatureError, match="a sha1 signature over a sha256 digest"):
        verify_detached(defaults, BODY)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_ber_signatures_never_raise_anything_else(signature, data):
    ber = _encode(_tree(signature), indefinite=APPLE_INDEFINITE)
    position = data.draw(st.integers(0, len(ber) - 1))
    mutated = ber[:position] + bytes([ber[position] ^ data.draw(st.integers(1, 255))]) + ber[position + 1 :]
    try:
        info = verify_detached(mutated, BODY)
    except SignatureError:
        return
    assert info.signer.public_key() == verify_detached(signature, BODY).signer.public_key()


# --- the TLV reader against independent encoders --------------------------------------------------------

_LEAVES = st.tuples(st.sampled_from([0x02, 0x04, 0x05, 0x06, 0x0C, 0x80, 0x81]), st.binary(max_size=300))
_TREES = st.recursive(
    _LEAVES,
    lambda children: st.tuples(st.sampled_from([0x30, 0x31, 0xA0, 0xA3]), st.lists(children, max_size=4)),
    max_leaves=12,
)


def _encode_randomly(node: tuple, data: st.DataObject) -> bytes:
    tag, value = node
    if isinstance(value, bytes):
        content, forms = value, ["der", "long"]
    else:
        content = b"".join(_encode_randomly(child, data) for child in value)
        forms = ["der", "long", "indefinite"]
    form = data.draw(st.sampled_from(forms))
    if form == "indefinite":
        return bytes([tag, 0x80]) + content + b"\x00\x00"
    if form == "long":
        return bytes([tag, 0x83]) + len(content).to_bytes(3, "big") + content
    return _tlv(tag, content)


def _read_back(reader: _cms_asn1.BerReader, item: tuple) -> tuple:
    if not item[0] & 0x20:
        return item[0], reader.content(item)
    return item[0], [_read_back(reader, child) for child in reader.children(item, "a test value")]


@settings(max_examples=300, deadline=None)
@given(_TREES, st.data())
def test_reader_reads_any_ber_length_form_back(tree, data):
    encoded = _encode_randomly(tree, data)
    reader = _cms_asn1.BerReader(encoded)
    item = reader.read(0, len(encoded))
    assert item[4] == len(encoded)
    assert _read_back(reader, item) == (tree[0], list(tree[1]) if isinstance(tree[1], list) else tree[1])


_ARCS = st.one_of(
    st.tuples(st.integers(0, 1), st.integers(0, 39)),
    st.tuples(st.just(2), st.integers(0, 2**40)),
).flatmap(lambda head: st.lists(st.integers(0, 2**70), max_size=8).map(lambda tail: (*head, *tail)))


@settings(max_examples=300, deadline=None)
@given(_ARCS)
def test_object_identifiers_read_as_pyasn1_writes_them(arcs):
    dotted = ".".join(map(str, arcs))
    assert _cms_asn1.oid_text(encoder.encode(univ.ObjectIdentifier(dotted))[2:]) == dotted


# --- certificate chains --------------------------------------------------------------------------------


def test_identity_chains_to_its_ca(ca, identity):
    verify_chain(identity[0], [ca.certificate], now=NOW)
    verify_chain(identity[0], [ca.certificate], now=NOW.replace(tzinfo=None))  # naive means UTC


def test_identity_from_another_ca_fails(ca, other_ca):
    stranger, _ = other_ca.issue_device_identity(UDID, NOW)
    with pytest.raises(SignatureError, match="does not chain to a trusted CA"):
        verify_chain(stranger, [ca.certificate], now=NOW)


def test_expired_identity_fails_at_now(ca):
    short_lived, _ = ca.issue_device_identity(UDID, NOW, validity=timedelta(days=1))
    verify_chain(short_lived, [ca.certificate], now=NOW + timedelta(hours=23))
    with pytest.raises(SignatureError, match="expired"):
        verify_chain(short_lived, [ca.certificate], now=NOW + timedelta(days=2))


def test_identity_is_not_valid_before_issue(ca, ec_identity):
    with pytest.raises(SignatureError, match="not valid before"):
        verify_chain(ec_identity[0], [ca.certificate], now=NOW - timedelta(days=1))


def test_server_certificate_is_not_a_device_identity(ca):
    server, _ = ca.issue_server_certificate(["localhost"], NOW)
    with pytest.raises(SignatureError, match="not for clientAuth"):
        verify_chain(server, [ca.certificate], now=NOW)
    verify_chain(server, [ca.certificate], now=NOW, purpose=ExtendedKeyUsageOID.SERVER_AUTH)
    verify_chain(server, [ca.certificate], now=NOW, purpose=None)


def test_no_roots_fails(ec_identity):
    with pytest.raises(SignatureError, match="no trusted root"):
        verify_chain(ec_identity[0], [], now=NOW)


# --- interoperability with OpenSSL ---------------------------------------------------------------------


def _write_identity(directory: Path, certificate: x509.Certificate, key) -> tuple[Path, Path]:
    cert_path, key_path = directory / "signer.pem", directory / "signer.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    return cert_path, key_path


def _openssl_sign(directory: Path, identity, *extra: str) -> bytes:
    cert_path, key_path = _write_identity(directory, *identity)
    body_path, out_path = directory / "body.plist", directory / "body.p7s"
    body_path.write_bytes(BODY)
    subprocess.run(
        [OPENSSL, "cms", "-sign", "-binary", "-outform", "DER", "-in", str(body_path), "-signer",
         str(cert_path), "-inkey", str(key_path), "-out", str(out_path), *extra],
        check=True, capture_output=True,
    )
    return out_path.read_bytes()


@needs_openssl
def test_verifies_signatures_made_by_openssl(tmp_path, identity):
    signature = _openssl_sign(tmp_path, identity)
    info = verify_detached(signature, BODY)
    assert info.signer == identity[0]
    with pytest.raises(SignatureError, match="different body"):
        verify_detached(signature, OTHER_BODY)


@needs_openssl
def test_openssl_verifies_our_signatures(tmp_path, ca, identity):
    (tmp_path / "ca.pem").write_bytes(ca.certificate_pem)
    (tmp_path / "body.plist").write_bytes(BODY)
    (tmp_path / "body.p7s").write_bytes(sign_detached(BODY, *identity))
    result = subprocess.run(
        [OPENSSL, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "body.p7s"),
         "-content", str(tmp_path / "body.plist"), "-CAfile", str(tmp_path / "ca.pem"), "-purpose", "any",
         "-out", str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == BODY


@needs_openssl
def test_sha1_is_refused_unless_allowed(tmp_path, ec_identity):
    signature = _openssl_sign(tmp_path, ec_identity, "-md", "sha1")
    with pytest.raises(SignatureError, match="sha1"):
        verify_detached(signature, BODY)
    assert verify_detached(signature, BODY, allow_sha1=True).digest_algorithm == "sha1"


@needs_openssl
def test_openssl_streamed_ber_with_content_is_refused_as_not_detached(tmp_path, ec_identity):
    signature = _openssl_sign(tmp_path, ec_identity, "-stream", "-nodetach")
    assert signature[:2] == b"\x30\x80"  # indefinite length: parsed, then refused for its content
    with pytest.raises(SignatureError, match="embeds its content"):
        verify_detached(signature, BODY)


@needs_openssl
def test_openssl_key_id_signer_among_several_certificates(tmp_path, ca, identity):
    """`-keyid` names the signer by subjectKeyIdentifier; `-certfile` adds the CA, a chain candidate."""
    (tmp_path / "ca.pem").write_bytes(ca.certificate_pem)
    signature = _openssl_sign(tmp_path, identity, "-keyid", "-certfile", str(tmp_path / "ca.pem"))
    info = verify_detached(signature, BODY)
    assert info.signer == identity[0]
    assert info.certificates == (ca.certificate,)
    assert info.signing_time is not None
    assert abs(info.signing_time - datetime.now(UTC)) < timedelta(minutes=10)
    with pytest.raises(SignatureError, match="different body"):
        verify_detached(signature, OTHER_BODY)


@needs_openssl
def test_openssl_rsa_pss_signatures_verify(tmp_path, rsa_identity):
    signature = _openssl_sign(tmp_path, rsa_identity, "-keyopt", "rsa_padding_mode:pss")
    assert bytes.fromhex("06092a864886f70d01010a") in signature  # id-RSASSA-PSS
    assert verify_detached(signature, BODY).signer == rsa_identity[0]
