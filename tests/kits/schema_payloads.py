"""Payload dictionaries built from the key catalogue: a minimal valid one of every iOS type, and random ones.

The schema tests install them on a simulated device and lint them, to show the two agree on every type.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from kits.keychain_pki import der, p12, pki
from mdm_protocol.key_catalogue import WILDCARD, KeySpec, ValueType, ios_payload_types, payload_spec
from mdm_protocol.osversion import OSVersion

LATEST = OSVersion.parse("18.1")  # the schema tree's release
ROOT, PKCS1, PEM = "com.apple.security.root", "com.apple.security.pkcs1", "com.apple.security.pem"
PKCS12, MDM, EAS = "com.apple.security.pkcs12", "com.apple.mdm", "com.apple.eas.account"
# Types whose install reads more than the schema (certificates, identities, the MDM enrollment).
STATEFUL = (ROOT, PKCS1, PEM, PKCS12, MDM)


def version_for(payload_type: str) -> OSVersion:
    """An iOS version that reads `payload_type`: 18.1, or the last one before the type was removed."""
    ios = payload_spec(payload_type).ios
    assert ios.introduced is not None, payload_type
    if ios.removed is not None and ios.removed <= LATEST:
        return ios.introduced
    return max(ios.introduced, LATEST)


def sample(spec: KeySpec, version: OSVersion) -> Any:
    """A value of `spec`'s type, inside its rangelist and range, with the required subkeys filled in."""
    if spec.rangelist:
        return spec.rangelist[0]
    kind = spec.type
    if kind is ValueType.INTEGER:
        return int(spec.range[0]) if spec.range and spec.range[0] is not None else 1
    if kind is ValueType.REAL:
        return float(spec.range[0]) if spec.range and spec.range[0] is not None else 1.0
    if kind is ValueType.DICTIONARY:
        return required_keys(spec.subkeys, version)
    if kind is ValueType.ARRAY:
        item = spec.item
        low = (item.repetition or (None, None))[0] if item is not None else None
        return [sample(item, version) for _ in range(low or 0)] if item is not None else []
    return {ValueType.STRING: "example", ValueType.BOOLEAN: False, ValueType.DATA: b"data",
            ValueType.DATE: datetime(2026, 1, 1, tzinfo=UTC), ValueType.ANY: "example"}[kind]


def required_keys(keys: tuple[KeySpec, ...], version: OSVersion) -> dict[str, Any]:
    return {spec.name: sample(spec, version) for spec in keys
            if spec.required and spec.name != WILDCARD and spec.ios.at(version).honoured}


_COMMON = ("PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID")


def minimal_payload(payload_type: str, version: OSVersion, *, index: int = 0) -> dict[str, Any]:
    """The smallest payload of `payload_type` that iOS `version` installs (real data where it is read)."""
    own = {name: value for name, value in required_keys(payload_spec(payload_type).keys, version).items()
           if name not in _COMMON}
    if payload_type in (ROOT, PKCS1):
        own["PayloadContent"] = der(pki().ca)
    elif payload_type == PEM:
        from cryptography.hazmat.primitives.serialization import Encoding
        own["PayloadContent"] = pki().ca.public_bytes(Encoding.PEM)
    elif payload_type == PKCS12:
        own.update(PayloadContent=p12(pki().alice, pki().alice_key), Password="secret")
    elif payload_type == EAS:
        own["Host"] = "mail.example.com"  # SPEC 4: required unless OAuth without a sign-in URL
    return {"PayloadType": payload_type, "PayloadVersion": 1, "PayloadIdentifier": f"com.example.p{index}",
            "PayloadUUID": f"UUID-{index}", **own}


def minimal_profile(payload_type: str, version: OSVersion) -> dict[str, Any]:
    """A profile holding a minimal `payload_type` payload (and, for MDM, the identity it names)."""
    payloads = [minimal_payload(payload_type, version)]
    if payload_type == MDM:
        identity = minimal_payload(PKCS12, version, index=1)
        payloads[0]["IdentityCertificateUUID"] = identity["PayloadUUID"]
        payloads.append(identity)
    return {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "com.example.profile",
            "PayloadUUID": "PROFILE-UUID", "PayloadContent": payloads}


def schema_types() -> list[str]:
    return sorted(ios_payload_types())


_WRONG = {ValueType.STRING: 7, ValueType.INTEGER: "7", ValueType.BOOLEAN: "yes", ValueType.DATA: "data",
          ValueType.DATE: "2026-01-01", ValueType.REAL: "1.5", ValueType.ARRAY: "list",
          ValueType.DICTIONARY: ["dict"]}


def wrong_value(spec: KeySpec) -> Any:
    """A value of a type `spec` does not accept (None for `<any>`, which accepts everything)."""
    return _WRONG.get(spec.type)


@st.composite
def random_payloads(draw: st.DrawFn, payload_type: str, version: OSVersion) -> dict[str, Any]:
    """A minimal payload with schema keys added, dropped, mistyped or pushed out of their rangelist."""
    payload = minimal_payload(payload_type, version)
    keys = [spec for spec in payload_spec(payload_type).keys if spec.name not in _COMMON and spec.name != WILDCARD]
    for spec in draw(st.lists(st.sampled_from(keys), max_size=4, unique_by=lambda spec: spec.name)) if keys else []:
        choice = draw(st.sampled_from(("good", "wrong", "drop", "outside")))
        if choice == "drop":
            payload.pop(spec.name, None)
        elif choice == "wrong" and wrong_value(spec) is not None:
            payload[spec.name] = wrong_value(spec)
        elif choice == "outside" and spec.rangelist and spec.type is ValueType.STRING:
            payload[spec.name] = "not-in-the-rangelist"
        else:
            payload[spec.name] = sample(spec, version)
    return payload
