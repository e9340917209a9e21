"""An enrolled device as plist-ready data and back: its facts, enrollment, push token, profiles and keychain.

`snapshot` and `restore` are pure (no files); `fleet_state` keeps the documents on disk. A document that does not
read back raises SnapshotError with a reason for humans, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm_protocol.key_catalogue import Support
from mdm_protocol.profile import IgnoredKey
from mdm_protocol.profile_signing import SignatureStatus

from .facts import DeviceFacts, DeviceKind, make_facts
from .keychain import ArchivedKey, Identity, Keychain, PrivateKey, StoredCertificate
from .machine import DeviceMachine, MdmEnrollment
from .profiles import DeviceProfiles, InstalledProfile

DER = serialization.Encoding.DER
_ENROLLMENT_KEYS = ("profile_identifier", "server_url", "check_in_url", "topic", "identity_uuid", "display_name")


class SnapshotError(Exception):
    """A saved device that cannot be read back; `reason` is for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SavedDevice:
    """What a resumed device needs: its facts as they were, then the state `DeviceMachine.resume` takes."""

    facts: DeviceFacts
    profiles: DeviceProfiles
    enrollment: MdmEnrollment
    push_token: bytes
    push_magic: str


def snapshot(machine: DeviceMachine) -> dict[str, Any]:
    """An enrolled machine as a plist-ready dictionary (keys in clear: the file holding it is 0600)."""
    enrollment = machine.enrollment
    assert enrollment is not None, "only enrolled devices are saved"
    facts, keychain = machine.facts, machine.profiles.keychain
    return {
        "Index": facts.index, "UDID": facts.udid, "DeviceKind": facts.kind.value,
        "OSVersion": str(facts.os_version), "DeviceName": facts.device_name,
        "PushToken": machine.push_token, "PushMagic": machine.push_magic,
        "Enrollment": {**{key: getattr(enrollment, key) for key in _ENROLLMENT_KEYS},
                       "sign_message": enrollment.sign_message},
        "Profiles": [_profile(item) for item in machine.profiles.installed()],
        "Identities": [_identity(item) for item in keychain.identities()],
        "Certificates": [{"DER": _der(item.certificate), "Profile": item.profile_identifier,
                          "TrustedRoot": item.trusted_root} for item in keychain.certificates()],
        "Archive": [{"DER": _der(item.certificate), "Key": _key(item.private_key)} for item in keychain.archive],
    }


def restore(document: Mapping[str, Any], *, seed: int) -> SavedDevice:
    """The device `snapshot` saved; SnapshotError when the document is not one (missing keys, bad DER, ...)."""
    try:
        facts = make_facts(seed, int(document["Index"]), document["OSVersion"], DeviceKind(document["DeviceKind"]))
        if facts.udid != document["UDID"]:
            raise SnapshotError(f"UDID {document['UDID']} is not device {facts.index}'s with --seed {seed} "
                                f"({facts.udid}): saved by another fleet")
        facts = replace(facts, device_name=str(document["DeviceName"]))  # Settings DeviceName may have renamed it
        keychain = Keychain.restored(
            (_restore_identity(item) for item in document["Identities"]),
            (StoredCertificate(_cert(item["DER"]), item["Profile"], bool(item["TrustedRoot"]))
             for item in document["Certificates"]),
            (ArchivedKey(_cert(item["DER"]), _load_key(item["Key"])) for item in document["Archive"]))
        profiles = DeviceProfiles.restored(keychain, (_restore_profile(item) for item in document["Profiles"]))
        saved = document["Enrollment"]
        enrollment = MdmEnrollment(**{key: str(saved[key]) for key in _ENROLLMENT_KEYS},
                                   sign_message=saved["sign_message"] is True)
        token, magic = document["PushToken"], document["PushMagic"]
        if not isinstance(token, bytes) or len(token) != 32 or not isinstance(magic, str):
            raise SnapshotError("the push token is not 32 bytes or the push magic is not text")
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # ValueError: bad DER, unknown version
        raise SnapshotError(f"not a saved device ({type(exc).__name__}: {exc})") from None
    if keychain.identity(enrollment.identity_uuid) is None:
        raise SnapshotError(f"the MDM identity {enrollment.identity_uuid} is not in the saved keychain")
    return SavedDevice(facts, profiles, enrollment, token, magic)


# Pieces ---------------------------------------------------------------------------------------------------------


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(DER)


def _cert(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _key(key: PrivateKey) -> bytes:
    return key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_key(der: bytes) -> PrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    return key  # type: ignore[return-value]  # only EC and RSA keys are ever saved


def _when(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _utc(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(float(seconds), UTC)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}  # plists have no null


def _identity(item: Identity) -> dict[str, Any]:
    return _without_none({
        "PayloadUUID": item.payload_uuid, "Profile": item.profile_identifier, "DER": _der(item.certificate),
        "Key": None if item.private_key is None else _key(item.private_key), "FileName": item.file_name,
        "InstalledAt": _when(item.installed_at), "Chain": [_der(cert) for cert in item.chain],
        "KeyDeletedAt": _when(item.key_deleted_at)})


def _restore_identity(item: Mapping[str, Any]) -> Identity:
    key = item.get("Key")
    return Identity(item["PayloadUUID"], item["Profile"], _cert(item["DER"]), None if key is None else _load_key(key),
                    item.get("FileName"), datetime.fromtimestamp(item["InstalledAt"], UTC),
                    tuple(_cert(der) for der in item["Chain"]), _utc(item.get("KeyDeletedAt")))


def _profile(item: InstalledProfile) -> dict[str, Any]:
    return _without_none({
        "Identifier": item.identifier, "UUID": item.uuid, "DisplayName": item.display_name,
        "Organization": item.organization, "Payloads": [dict(payload) for payload in item.payloads],
        "InstalledAt": _when(item.installed_at), "Managed": item.is_managed, "Description": item.description,
        "RemovalDisallowed": item.removal_disallowed, "HasRemovalPasscode": item.has_removal_passcode,
        "Encrypted": item.is_encrypted, "Signers": list(item.signer_certificates),
        "Signature": None if item.signature is None else item.signature.value,
        "Ignored": [_without_none({"Payload": key.payload_identifier, "Type": key.payload_type,
                                   "Path": list(key.path), "Support": key.support.value})
                    for key in item.ignored_keys]})


def _restore_profile(item: Mapping[str, Any]) -> InstalledProfile:
    ignored = tuple(IgnoredKey(key.get("Payload"), key["Type"], tuple(key["Path"]), Support(key["Support"]))
                    for key in item["Ignored"])
    signature = item.get("Signature")
    return InstalledProfile(
        item["Identifier"], item["UUID"], item.get("DisplayName"), item.get("Organization"),
        tuple(MappingProxyType(dict(payload)) for payload in item["Payloads"]),
        datetime.fromtimestamp(item["InstalledAt"], UTC),
        ignored, item["Managed"] is True, item.get("Description"), item["RemovalDisallowed"] is True,
        item["HasRemovalPasscode"] is True, item["Encrypted"] is True, tuple(item["Signers"]),
        None if signature is None else SignatureStatus(signature))
