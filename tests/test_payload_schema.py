"""The whole payload schema: every iOS type validated, installed when minimal, refused when mistyped; lint
(mdm_protocol.profile) and the device (device_sim.install_rules) agree; macOS-only types are refused on iOS."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kits import schema_payloads
from kits.corpus import SCHEMA, require
from kits.keychain_pki import NOW
from kits.schema_payloads import STATEFUL, minimal_profile, random_payloads, schema_types, version_for, wrong_value

from device_sim.profiles import DeviceProfiles
from mdm_protocol.errors import ProfileError
from mdm_protocol.key_catalogue import WILDCARD, payload_spec, payload_types
from mdm_protocol.plist import encode_plist
from mdm_protocol.profile import validate_profile

MAIL, EAS = "com.apple.mail.managed", "com.apple.eas.account"
# Types the device checks beyond the schema (certificates, identities, accounts): lint cannot see those.
DEVICE_RULES = (*STATEFUL, MAIL, EAS)


def codes(chain) -> list[tuple[int, str]]:
    return [(item.code, item.domain) for item in chain]


def lint(profile: dict, version) -> tuple[bool, list[tuple[int, str]]]:
    try:
        validate_profile(encode_plist(profile), os_version=version)
    except ProfileError as exc:
        return False, codes(exc.chain)
    return True, []


def device_install(profile: dict, version):
    return DeviceProfiles().install(encode_plist(profile), os_version=version, now=NOW)


@pytest.mark.parametrize("payload_type", schema_types())
def test_a_minimal_valid_payload_of_every_ios_type_installs(payload_type: str) -> None:
    require(SCHEMA)
    version = version_for(payload_type)
    profile = minimal_profile(payload_type, version)
    result = device_install(profile, version)
    assert result.ok, (payload_type, result.reason)
    assert lint(profile, version) == (True, [])
    # The type was read, not skipped as unknown: nothing of the payload itself is ignored.
    assert not any(item.path == () for item in result.ignored_keys), result.ignored_keys


def _typed_keys(payload_type: str, version) -> list:
    return [spec for spec in payload_spec(payload_type).keys
            if spec.name not in ("PayloadType", WILDCARD) and wrong_value(spec) is not None
            and spec.ios.at(version).honoured]


@pytest.mark.parametrize("payload_type", schema_types())
def test_a_wrongly_typed_key_of_every_ios_type_is_refused(payload_type: str) -> None:
    require(SCHEMA)
    version = version_for(payload_type)
    keys = _typed_keys(payload_type, version)
    assert keys, payload_type
    for spec in keys:
        profile = minimal_profile(payload_type, version)
        profile["PayloadContent"][0][spec.name] = wrong_value(spec)
        result = device_install(profile, version)
        assert not result.ok, (payload_type, spec.name)
        assert codes(result.error_chain) == [(4000, "MCInstallationErrorDomain"), (2003, "MCPayloadErrorDomain")]
        assert lint(profile, version) == (False, codes(result.error_chain))


def test_every_schema_type_not_on_ios_is_refused_by_lint_and_device() -> None:
    require(SCHEMA)
    macos_only = [name for name in payload_types() if payload_spec(name).ios.introduced is None]
    assert "com.apple.dock" in macos_only and len(macos_only) > 60
    for payload_type in macos_only:
        profile = minimal_profile("com.apple.webClip.managed", schema_payloads.LATEST)
        profile["PayloadContent"] = [{"PayloadType": payload_type, "PayloadVersion": 1,
                                      "PayloadIdentifier": "com.example.mac", "PayloadUUID": "MAC"}]
        result = device_install(profile, "18.1")
        assert not result.ok, payload_type
        assert codes(result.error_chain) == [(4000, "MCInstallationErrorDomain"), (2004, "MCPayloadErrorDomain")]
        assert "not available on iOS" in result.reason
        assert lint(profile, "18.1") == (False, codes(result.error_chain))
        assert lint(profile, None)[0] is False  # lint without an OS version still validates for iOS


def test_a_vendor_payload_type_outside_the_schema_still_installs_unread() -> None:
    profile = minimal_profile("com.apple.webClip.managed", schema_payloads.LATEST)
    profile["PayloadContent"].append({"PayloadType": "com.example.vendor", "PayloadVersion": 1,
                                      "PayloadIdentifier": "com.example.vendor", "PayloadUUID": "V"})
    result = device_install(profile, "18.1")
    assert result.ok
    assert [(item.payload_identifier, item.path) for item in result.ignored_keys] == [("com.example.vendor", ())]


_CASES = st.sampled_from(schema_types()).flatmap(
    lambda name: st.tuples(st.just(name), random_payloads(name, version_for(name))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CASES)
def test_lint_and_device_agree_on_random_payloads_from_the_schema(case) -> None:
    require(SCHEMA)
    payload_type, payload = case
    version = version_for(payload_type)
    profile = minimal_profile(payload_type, version)
    profile["PayloadContent"][0] = payload | ({"IdentityCertificateUUID": "UUID-1"}
                                              if payload_type == "com.apple.mdm" else {})
    accepted, lint_chain = lint(profile, version)
    result = device_install(profile, version)
    if not accepted:  # what lint refuses, the device refuses with the same chain
        assert not result.ok and codes(result.error_chain) == lint_chain
    elif payload_type not in DEVICE_RULES:  # no device-only rule for the type: lint OK is an install
        assert result.ok, result.reason
    else:  # a device rule may still refuse, but never as a schema (4000) failure
        assert result.ok or codes(result.error_chain)[0] != (4000, "MCInstallationErrorDomain")
