"""Enrollment profiles filled into a once-built skeleton: the same profile the payload builders write, fresh
UUIDs, password and identity per device, a one-round PKCS#12 that the device opens.
"""

from __future__ import annotations

import plistlib
import re
from datetime import UTC, datetime

from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from device_sim.install_rules import open_pkcs12
from mdm_protocol.payloads import configuration_profile, mdm_payload, pkcs12_payload, root_certificate_payload
from mdm_protocol.profile import encode_profile, parse_profile
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import (
    ACCESS_RIGHTS,
    ENROLLMENT_IDENTIFIER,
    ENROLLMENT_KDF_ROUNDS,
    ENROLLMENT_PASSWORD_BITS,
    build_enrollment,
    identity_user,
    profile_template,
)
from mdm_server.pki import load_pkcs12

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://mdm.example.com:8443"
TOPIC = "com.apple.mgmt.External.5107a000-0000-4000-8000-000000000001"
CA = CertificateAuthority.create("enrollment test CA", now=NOW)
CA_DER = CA.certificate.public_bytes(Encoding.DER)


def mac_iterations(bundle: bytes) -> int:
    from pyasn1.codec.der import decoder
    from pyasn1_modules import rfc7292

    return int(decoder.decode(bundle, asn1Spec=rfc7292.PFX())[0]["macData"]["iterations"])


def payloads_by_type(profile: bytes) -> dict[str, dict]:
    return {item["PayloadType"]: item for item in plistlib.loads(profile)["PayloadContent"]}


def slow_profile(filled: bytes, url: str = URL, topic: str = TOPIC) -> bytes:
    """The same profile built the long way (payload builders, validation, plistlib) from the filled one's
    UUIDs, password and PKCS#12: what every enrollment profile was before the skeleton."""
    top, found = plistlib.loads(filled), payloads_by_type(filled)
    root_uuid = found["com.apple.security.root"]["PayloadUUID"]
    p12 = found["com.apple.security.pkcs12"]
    root = root_certificate_payload(CA_DER, identifier=f"{ENROLLMENT_IDENTIFIER}.root", uuid=root_uuid,
                                    file_name="mdmsim-ca.cer", display_name="mdmsim CA")
    identity = pkcs12_payload(p12["PayloadContent"], identifier=f"{ENROLLMENT_IDENTIFIER}.identity",
                              uuid=p12["PayloadUUID"], password=p12["Password"], file_name="identity.p12",
                              display_name="MDM identity")
    mdm = mdm_payload(f"{url}/mdm/connect", topic, identity.uuid, identifier=f"{ENROLLMENT_IDENTIFIER}.mdm",
                      uuid=found["com.apple.mdm"]["PayloadUUID"], check_in_url=f"{url}/mdm/checkin",
                      sign_message=True, access_rights=ACCESS_RIGHTS, check_out_when_removed=True,
                      display_name="mdmsim MDM")
    return encode_profile(configuration_profile(
        [root, identity, mdm], identifier=ENROLLMENT_IDENTIFIER, uuid=top["PayloadUUID"],
        display_name="mdmsim enrollment", organization="mdmsim"))


def test_filled_profile_is_the_profile_the_builders_write():
    enrollment = build_enrollment(CA, server_url=URL, topic=TOPIC, now=NOW, user_id="alice")
    assert plistlib.loads(enrollment.profile) == plistlib.loads(slow_profile(enrollment.profile))
    parsed = parse_profile(enrollment.profile, os_version="9.3.5")  # validates as the oldest iOS we emulate
    assert parsed.identifier == ENROLLMENT_IDENTIFIER


def test_each_enrollment_has_its_own_uuids_password_and_identity():
    first, second = (build_enrollment(CA, server_url=URL, topic=TOPIC, now=NOW) for _ in range(2))
    uuids = []
    for enrollment in (first, second):
        top, found = plistlib.loads(enrollment.profile), payloads_by_type(enrollment.profile)
        assert found["com.apple.mdm"]["IdentityCertificateUUID"] == found["com.apple.security.pkcs12"]["PayloadUUID"]
        uuids.append({top["PayloadUUID"], *(item["PayloadUUID"] for item in found.values())})
    assert len(uuids[0]) == len(uuids[1]) == 4 and not uuids[0] & uuids[1]
    assert all(re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}", u)
               for u in uuids[0] | uuids[1])
    passwords = {payloads_by_type(e.profile)["com.apple.security.pkcs12"]["Password"] for e in (first, second)}
    assert len(passwords) == 2
    assert first.identity.serial_number != second.identity.serial_number


def test_the_identity_is_a_one_round_pkcs12_under_a_random_144_bit_password():
    enrollment = build_enrollment(CA, server_url=URL, topic=TOPIC, now=NOW, user_id="bob")
    p12 = payloads_by_type(enrollment.profile)["com.apple.security.pkcs12"]
    assert ENROLLMENT_PASSWORD_BITS >= 128
    # token_urlsafe: 6 bits per character, so 24 characters hold the 144 random bits
    assert re.fullmatch(rf"[A-Za-z0-9_-]{{{ENROLLMENT_PASSWORD_BITS // 6}}}", p12["Password"])
    assert ENROLLMENT_KDF_ROUNDS == 1 and mac_iterations(p12["PayloadContent"]) == 1
    contents = load_pkcs12(p12["PayloadContent"], p12["Password"])
    assert contents.certificate == enrollment.identity and identity_user(contents.certificate) == "bob"
    # the device side opens it as iOS would (the same memoised loader)
    assert open_pkcs12(p12["PayloadContent"], p12["Password"]).certificate == enrollment.identity


def test_the_skeleton_is_built_once_per_ca_url_and_topic():
    assert profile_template(CA_DER, URL, TOPIC) is profile_template(CA_DER, URL, TOPIC)
    other = build_enrollment(CA, server_url="https://other.example.com", topic=TOPIC, now=NOW)
    assert payloads_by_type(other.profile)["com.apple.mdm"]["ServerURL"] == "https://other.example.com/mdm/connect"
    second_ca = CertificateAuthority.create("second CA", now=NOW)
    enrollment = build_enrollment(second_ca, server_url=URL, topic=TOPIC, now=NOW)
    root = payloads_by_type(enrollment.profile)["com.apple.security.root"]["PayloadContent"]
    assert root == second_ca.certificate.public_bytes(Encoding.DER)


@settings(max_examples=30, deadline=None)
@given(path=st.text(alphabet="ab%&<>'\"-_/;=?", max_size=12), topic_tail=st.text(alphabet="ab%&<-.", max_size=8))
def test_urls_and_topics_with_xml_and_percent_characters_survive_the_slots(path, topic_tail):
    url, topic = f"{URL}/{path}".rstrip("/"), f"{TOPIC}{topic_tail}"
    enrollment = build_enrollment(CA, server_url=url, topic=topic, now=NOW)
    mdm = payloads_by_type(enrollment.profile)["com.apple.mdm"]
    assert (mdm["ServerURL"], mdm["CheckInURL"], mdm["Topic"]) == (f"{url}/mdm/connect", f"{url}/mdm/checkin", topic)
    assert plistlib.loads(enrollment.profile) == plistlib.loads(slow_profile(enrollment.profile, url, topic))

