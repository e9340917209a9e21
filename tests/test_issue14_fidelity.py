"""Issue #14's smaller fidelity fixes: Apple's <real>1</real> PayloadVersion installs, and an IMAP account with
S/MIME off and empty S/MIME certificate UUIDs installs (validation, lint and the device agree)."""

from __future__ import annotations

import pytest
from kits.keychain_pki import NOW
from kits.profile_kit import imap, profile_bytes

from device_sim.profiles import DeviceProfiles
from mdm_protocol.errors import ProfileError
from mdm_protocol.plist import decode_plist, encode_plist
from mdm_protocol.profile import validate_profile


def _profile(**payload_changes) -> bytes:
    plist = decode_plist(profile_bytes(imap()))
    plist["PayloadContent"][0].update(payload_changes)
    return encode_plist(plist)


@pytest.mark.parametrize("version", ["9.3.3", "17.5", "27.0"])
def test_a_real_payload_version_of_one_is_read_as_one(version):
    body = _profile(PayloadVersion=1.0)
    validation = validate_profile(body, os_version=version)
    assert validation.profile.payloads[0].version == 1 and type(validation.profile.payloads[0].version) is int
    device = DeviceProfiles()
    assert device.install(body, os_version=version, now=NOW).ok
    (item,) = device.profile_list_items(os_version=version)
    assert item.payload_content[0].payload_version == 1


def test_a_fractional_payload_version_is_still_refused():
    with pytest.raises(ProfileError, match="PayloadVersion"):
        validate_profile(_profile(PayloadVersion=1.5), os_version="17.5")


@pytest.mark.parametrize("version", ["9.3.3", "12.0", "17.5", "27.0"])
def test_imap_with_smime_off_and_empty_uuids_installs(version):
    body = _profile(SMIMEEnabled=False, SMIMESigningEnabled=False, SMIMEEncryptionEnabled=False,
                    SMIMESigningCertificateUUID="", SMIMEEncryptionCertificateUUID="")
    validate_profile(body, os_version=version)  # what `mdmsim profile lint` runs
    result = DeviceProfiles().install(body, os_version=version, now=NOW)
    assert result.ok, result.error_chain


def test_a_uuid_that_names_nothing_is_still_7003():
    body = _profile(SMIMESigningEnabled=True, SMIMESigningCertificateUUID="0E0C2E6B-0000-4000-8000-000000000000")
    result = DeviceProfiles().install(body, os_version="17.5", now=NOW)
    assert not result.ok and result.error_chain[-1].code == 7003
