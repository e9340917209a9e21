"""What a device holds, as the server knows it: its installed profiles and last CertificateList, replayed from
the commands it acknowledged. The evidence `expected_readiness` judges S/MIME readiness from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc5652

from mdm_protocol.commands import CertificateListItem, parse_certificate_list, parse_profile_list
from mdm_protocol.errors import ProtocolError
from mdm_protocol.plist import decode_plist
from mdm_protocol.report import decode_command, decode_report

from ..storage.interface import CommandStatus, QueuedCommand


@dataclass(frozen=True, slots=True)
class InstalledProfile:
    identifier: str
    plist: Mapping[str, Any]
    acknowledged_at: float


@dataclass(frozen=True, slots=True)
class Evidence:
    """The device's profiles and keychain as far as its acknowledged commands tell."""

    profiles: Mapping[str, InstalledProfile]
    certificate_list: tuple[CertificateListItem, ...] | None = None
    certificate_list_at: float | None = None
    profile_list_at: float | None = None
    pending_installs: int = 0
    notes: tuple[str, ...] = ()


def gather_evidence(commands: Iterable[QueuedCommand]) -> Evidence:
    """Replay acknowledged commands in the order their answers arrived."""
    commands = list(commands)
    profiles: dict[str, InstalledProfile] = {}
    state: dict[str, Any] = {"notes": [], "pending": 0}
    done = sorted((c for c in commands if c.result_at is not None and c.status is CommandStatus.ACKNOWLEDGED),
                  key=lambda c: (c.result_at, c.queued_at))
    for command in commands:
        if command.pending and command.request_type == "InstallProfile":
            state["pending"] += 1
    for command in done:
        try:
            _replay(command, profiles, state)
        except ProtocolError as exc:
            state["notes"].append(f"{command.request_type} {command.command_uuid} unreadable: {exc.reason}")
    return Evidence(profiles, state.get("certificates"), state.get("certificates_at"),
                    state.get("profile_list_at"), state["pending"], tuple(state["notes"]))


def _replay(command: QueuedCommand, profiles: dict[str, InstalledProfile], state: dict[str, Any]) -> None:
    at = command.result_at or 0.0
    if command.request_type == "InstallProfile":
        payload = decode_command(command.payload).keys.get("Payload")  # raw admin commands may lack it
        plist = _profile_plist(payload) if isinstance(payload, bytes) else None
        if plist is None:
            state["notes"].append(f"profile of {command.command_uuid} is encrypted or not a plist")
        else:
            profiles[plist["PayloadIdentifier"]] = InstalledProfile(plist["PayloadIdentifier"], plist, at)
    elif command.request_type == "RemoveProfile":
        identifier = decode_command(command.payload).keys.get("Identifier")
        if isinstance(identifier, str):
            profiles.pop(identifier, None)
    elif command.request_type == "ProfileList" and command.result:
        listed = {item.payload_identifier for item in parse_profile_list(decode_report(command.result))}
        for identifier in set(profiles) - listed:  # removed on the device (by the user, or expired)
            del profiles[identifier]
        state["profile_list_at"] = at
    elif command.request_type == "CertificateList" and command.result:
        state["certificates"] = parse_certificate_list(decode_report(command.result))
        state["certificates_at"] = at


def _profile_plist(data: bytes) -> dict[str, Any] | None:
    """The profile dictionary of plain or CMS-signed profile bytes; None when encrypted or unreadable."""
    if data[:1] == b"\x30":  # DER: a signed profile; the plist is the SignedData's content
        try:
            info, _ = decoder.decode(data, asn1Spec=rfc5652.ContentInfo())
            signed, _ = decoder.decode(info["content"], asn1Spec=rfc5652.SignedData())
            data = bytes(signed["encapContentInfo"]["eContent"])
        except (PyAsn1Error, KeyError, TypeError, ValueError):
            return None
    try:
        plist = decode_plist(data)
    except ProtocolError:
        return None
    if not isinstance(plist, dict) or not isinstance(plist.get("PayloadIdentifier"), str):
        return None
    return None if plist.get("IsEncrypted") is True else plist
