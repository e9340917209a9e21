"""Builders and parsers for the commands mdmsim speaks (SPEC section 3), in both directions.

The server builds requests and parses reports; the device simulator checks requests and builds its answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from .errors import MessageError
from .report import Command, CommandReport, Status

_set = object.__setattr__  # how frozen dataclasses set their own fields


class UnknownRequestType(MessageError):
    """A RequestType the device does not implement: iOS answers Error 12021, not CommandFormatError."""


class RequestKey(NamedTuple):
    """One key of a command request: its plist type, whether iOS needs it, the type of array elements."""

    apple: str
    kind: type
    required: bool = False
    item: type | None = None


# [ADM] application.installed.list.yaml: the keys `Items` may name (Identifier is always returned).
APPLICATION_ITEMS = frozenset({
    "AdHocCodeSigned", "AppStoreVendable", "BetaApp", "BundleSize", "DeviceBasedVPP", "DistributorIdentifier",
    "DynamicSize", "ExternalVersionIdentifier", "HasUpdateAvailable", "Identifier", "Installing", "IsAppClip",
    "IsValidated", "Name", "ShortVersion", "Version",
})
REQUEST_KEYS: Mapping[str, tuple[RequestKey, ...]] = MappingProxyType({
    "InstallProfile": (RequestKey("Payload", bytes, required=True),),
    "RemoveProfile": (RequestKey("Identifier", str, required=True),),
    "ProfileList": (RequestKey("ManagedOnly", bool),),
    "CertificateList": (RequestKey("ManagedOnly", bool),),
    "DeviceInformation": (
        RequestKey("Queries", list, required=True, item=str), RequestKey("DeviceAttestationNonce", bytes),
    ),
    "InstalledApplicationList": (
        RequestKey("Identifiers", list, item=str), RequestKey("ManagedAppsOnly", bool),
        RequestKey("Items", list, item=str),
    ),
    # The rest of the iOS set servers commonly send ([ADM] mdm/commands/*.yaml payloadkeys; iOS keys only).
    "SecurityInfo": (),
    "DeviceLock": (RequestKey("Message", str), RequestKey("PhoneNumber", str)),
    "EraseDevice": (
        RequestKey("PreserveDataPlan", bool), RequestKey("DisallowProximitySetup", bool),
        RequestKey("ReturnToService", dict),
    ),
    "ClearPasscode": (RequestKey("UnlockToken", bytes, required=True),),
    "Restrictions": (RequestKey("ProfileRestrictions", bool),),
    "Settings": (RequestKey("Settings", list, required=True, item=dict),),
    "ProvisioningProfileList": (RequestKey("ManagedOnly", bool),),
    "ManagedApplicationList": (RequestKey("Identifiers", list, item=str),),
    "InstallApplication": (
        RequestKey("iTunesStoreID", int), RequestKey("Identifier", str), RequestKey("ManifestURL", str),
        RequestKey("ManagementFlags", int), RequestKey("Options", dict), RequestKey("Configuration", dict),
        RequestKey("Attributes", dict), RequestKey("ChangeManagementState", str),
    ),
    "RemoveApplication": (RequestKey("Identifier", str, required=True),),
    "AvailableOSUpdates": (),
    "OSUpdateStatus": (),
    "ScheduleOSUpdate": (RequestKey("Updates", list, required=True, item=dict),),
    "RestartDevice": (),
    "ShutDownDevice": (),
    "ClearRestrictionsPassword": (),
    "EnableLostMode": (RequestKey("Message", str), RequestKey("PhoneNumber", str), RequestKey("Footnote", str)),
    "DisableLostMode": (),
    # [ADM] mdm/commands/declarativemanagement.yaml: Data is a TokensResponse (mdm_protocol.ddm), JSON bytes.
    "DeclarativeManagement": (RequestKey("Data", bytes),),
})
_KIND_NAMES = {str: "a string", bytes: "data (bytes)", bool: "a boolean", int: "an integer",
               list: "an array", dict: "a dictionary", tuple: "an array"}


def _is(value: Any, kind: type) -> bool:
    # plist integers and booleans are distinct; Python's bool is an int, so refuse it explicitly.
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _wrong(owner: str, key: str, kind: type, value: Any) -> MessageError:
    name = _KIND_NAMES.get(kind, kind.__name__)
    return MessageError(f"{owner}: {key} must be {name}, not {type(value).__name__}")


def check_command(command: Command) -> Command:
    """Raise `UnknownRequestType` or `MessageError` (what the device reports as CommandFormatError)."""
    request_type = command.request_type
    spec = REQUEST_KEYS.get(request_type)
    if spec is None:
        raise UnknownRequestType(f"\u201c{request_type}\u201d is not a valid request type.")
    keys = command.keys
    for key in spec:
        value = keys.get(key.apple)
        if value is None:
            if key.required:
                raise MessageError(f"{request_type}: missing required key {key.apple}")
        elif not _is(value, key.kind):
            raise _wrong(request_type, key.apple, key.kind, value)
        elif key.item is not None and not all(_is(item, key.item) for item in value):
            raise MessageError(f"{request_type}: every item of {key.apple} must be {_KIND_NAMES[key.item]}")
    _check_values(request_type, keys)
    return command


def _check_values(request_type: str, keys: Mapping[str, Any]) -> None:
    if request_type == "InstallProfile" and not keys["Payload"]:
        raise MessageError("InstallProfile: Payload is empty")
    if request_type == "RemoveProfile" and not keys["Identifier"]:
        raise MessageError("RemoveProfile: Identifier is empty")
    if request_type == "InstalledApplicationList":
        unknown = set(keys.get("Items") or ()) - APPLICATION_ITEMS
        if unknown:
            raise MessageError(f"InstalledApplicationList: unknown Items {sorted(unknown)}")
    if request_type == "InstallApplication" and not (keys.get("iTunesStoreID") or keys.get("Identifier")
                                                     or keys.get("ManifestURL")):
        raise MessageError("InstallApplication: needs iTunesStoreID, Identifier or ManifestURL")
    if request_type == "Settings" and any(not isinstance(item.get("Item"), str) for item in keys["Settings"]):
        raise MessageError("Settings: every item needs an Item string")
    if request_type == "ScheduleOSUpdate" and any(
            not isinstance(item.get("InstallAction"), str) for item in keys["Updates"]):
        raise MessageError("ScheduleOSUpdate: every update needs an InstallAction string")


def _build(request_type: str, command_uuid: str | None, **keys: Any) -> Command:
    present = {key: value for key, value in keys.items() if value is not None}
    if command_uuid is None:
        return check_command(Command(request_type, present))
    return check_command(Command(request_type, present, command_uuid))


def _strings(value: Iterable[str] | None, owner: str, key: str) -> list[str] | None:
    # A bare string is iterable too: list("UDID") would silently become four one-letter queries.
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise MessageError(f"{owner}: {key} must be a list of strings, not {type(value).__name__}")
    return list(value)


def _data(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytearray | memoryview) else value


def install_profile(payload: bytes, *, command_uuid: str | None = None) -> Command:
    """InstallProfile: `payload` is the profile's bytes (plain, signed or encrypted)."""
    return _build("InstallProfile", command_uuid, Payload=_data(payload))


def declarative_management(data: bytes | None = None, *, command_uuid: str | None = None) -> Command:
    """DeclarativeManagement: starts or kicks a DDM sync; `data` is an encoded TokensResponse when given
    (mdm_protocol.ddm.declarative_management_command builds it from one)."""
    return _build("DeclarativeManagement", command_uuid, Data=None if data is None else _data(data))


def remove_profile(identifier: str, *, command_uuid: str | None = None) -> Command:
    """RemoveProfile by the profile's PayloadIdentifier."""
    return _build("RemoveProfile", command_uuid, Identifier=identifier)


def profile_list(managed_only: bool | None = None, *, command_uuid: str | None = None) -> Command:
    return _build("ProfileList", command_uuid, ManagedOnly=managed_only)


def certificate_list(managed_only: bool | None = None, *, command_uuid: str | None = None) -> Command:
    return _build("CertificateList", command_uuid, ManagedOnly=managed_only)


def device_information(
    queries: Iterable[str], attestation_nonce: bytes | None = None, *, command_uuid: str | None = None
) -> Command:
    queries_list = _strings(queries, "DeviceInformation", "Queries")
    return _build("DeviceInformation", command_uuid, Queries=queries_list,
                  DeviceAttestationNonce=_data(attestation_nonce))


def installed_application_list(
    identifiers: Iterable[str] | None = None, managed_apps_only: bool | None = None,
    items: Iterable[str] | None = None, *, command_uuid: str | None = None,
) -> Command:
    owner = "InstalledApplicationList"
    return _build(owner, command_uuid, Identifiers=_strings(identifiers, owner, "Identifiers"),
                  ManagedAppsOnly=managed_apps_only, Items=_strings(items, owner, "Items"))


class _Field(NamedTuple):
    apple: str
    attr: str
    kind: type
    required: bool = False
    absent: Any = None
    item: type | None = None  # element type when the value is an array (held as a tuple)


class _Record:
    """A dictionary inside a command report, typed; keys it does not know are kept in `extra`."""

    __slots__ = ()
    _NAME: ClassVar[str]
    _FIELDS: ClassVar[tuple[_Field, ...]]

    if TYPE_CHECKING:  # every subclass is a dataclass, which from_plist builds by keyword
        def __init__(self, **fields: Any) -> None: ...

    def __post_init__(self) -> None:
        for key in self._FIELDS:
            value = getattr(self, key.attr)
            if value is None:
                if key.required:
                    raise MessageError(f"{self._NAME}: missing required key {key.apple}")
                if key.absent is not None:  # None for a defaulted key means "absent": store the default
                    _set(self, key.attr, key.absent)
            elif key.item is not None:
                _set(self, key.attr, self._array(key, value))
            elif not _is(value, key.kind):
                raise _wrong(self._NAME, key.apple, key.kind, value)
        extra = self.extra  # type: ignore[attr-defined]
        if not isinstance(extra, Mapping):
            raise MessageError(f"{self._NAME}: extra must be a mapping")
        clash = {key.apple for key in self._FIELDS}.intersection(extra)
        if clash:
            raise MessageError(f"{self._NAME}: extra repeats typed keys {sorted(clash)}")
        _set(self, "extra", MappingProxyType(dict(extra)))

    def _array(self, key: _Field, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise _wrong(self._NAME, key.apple, list, value)
        items = tuple(value)
        kind: type = key.item  # type: ignore[assignment]
        if not all(isinstance(item, kind) for item in items):
            raise MessageError(f"{self._NAME}: every item of {key.apple} must be {kind.__name__}")
        return items

    @classmethod
    def from_plist(cls, source: Any) -> Any:
        if not isinstance(source, dict):
            raise MessageError(f"{cls._NAME} must be a dictionary, not {type(source).__name__}")
        rest = dict(source)
        values = {}
        for key in cls._FIELDS:
            value = rest.pop(key.apple, key.absent)
            if isinstance(value, list) and key.item is not None and issubclass(key.item, _Record):
                value = tuple(key.item.from_plist(item) for item in value)
            values[key.attr] = value
        return cls(**values, extra=rest)

    def to_plist(self) -> dict[str, Any]:
        out = dict(self.extra)  # type: ignore[attr-defined]
        for key in self._FIELDS:
            value = getattr(self, key.attr)
            if value is None or (value == () and key.absent == ()):
                continue
            if key.item is not None:
                value = [item.to_plist() if isinstance(item, _Record) else item for item in value]
            out[key.apple] = value
        return out


def _extra() -> Any:
    return field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True, slots=True)
class ProfileListPayload(_Record):
    """One payload of an installed profile as ProfileList describes it (PayloadUUID from iOS 17)."""

    _NAME: ClassVar[str] = "ProfileList PayloadContent item"
    _FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("PayloadType", "payload_type", str, True),
        _Field("PayloadVersion", "payload_version", int, True),
        _Field("PayloadIdentifier", "payload_identifier", str, True),
        _Field("PayloadUUID", "payload_uuid", str),
        _Field("PayloadDisplayName", "payload_display_name", str),
        _Field("PayloadDescription", "payload_description", str),
        _Field("PayloadOrganization", "payload_organization", str),
    )

    payload_type: str
    payload_version: int
    payload_identifier: str
    payload_uuid: str | None = None
    payload_display_name: str | None = None
    payload_description: str | None = None
    payload_organization: str | None = None
    extra: Mapping[str, Any] = _extra()


@dataclass(frozen=True, slots=True)
class ProfileListItem(_Record):
    """An installed profile; `payload_content` is None when the device does not list it (IsEncrypted)."""

    _NAME: ClassVar[str] = "ProfileList item"
    _FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("PayloadUUID", "payload_uuid", str, True),
        _Field("PayloadIdentifier", "payload_identifier", str, True),
        _Field("PayloadVersion", "payload_version", int),
        _Field("PayloadDisplayName", "payload_display_name", str),
        _Field("PayloadOrganization", "payload_organization", str),
        _Field("PayloadDescription", "payload_description", str),
        _Field("PayloadRemovalDisallowed", "payload_removal_disallowed", bool, absent=False),
        _Field("HasRemovalPasscode", "has_removal_passcode", bool, absent=False),
        _Field("IsEncrypted", "is_encrypted", bool, absent=False),
        _Field("IsManaged", "is_managed", bool, absent=False),
        _Field("SignerCertificates", "signer_certificates", tuple, absent=(), item=bytes),
        _Field("Source", "source", str),
        _Field("PayloadContent", "payload_content", tuple, item=ProfileListPayload),
    )

    payload_uuid: str
    payload_identifier: str
    payload_version: int | None = None
    payload_display_name: str | None = None
    payload_organization: str | None = None
    payload_description: str | None = None
    payload_removal_disallowed: bool = False
    has_removal_passcode: bool = False
    is_encrypted: bool = False
    is_managed: bool = False
    signer_certificates: tuple[bytes, ...] = ()
    source: str | None = None
    payload_content: tuple[ProfileListPayload, ...] | None = None
    extra: Mapping[str, Any] = _extra()


@dataclass(frozen=True, slots=True)
class CertificateListItem(_Record):
    """A certificate in the device's keychain; `data` is its DER encoding."""

    _NAME: ClassVar[str] = "CertificateList item"
    _FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("CommonName", "common_name", str, True), _Field("IsIdentity", "is_identity", bool, True),
        _Field("Data", "data", bytes, True),
    )

    common_name: str
    is_identity: bool
    data: bytes = field(repr=False)
    extra: Mapping[str, Any] = _extra()


@dataclass(frozen=True, slots=True)
class InstalledApplication(_Record):
    """An app in InstalledApplicationList; other keys (BetaApp, IsAppClip, ...) stay in `extra`."""

    _NAME: ClassVar[str] = "InstalledApplicationList item"
    _FIELDS: ClassVar[tuple[_Field, ...]] = (
        _Field("Identifier", "identifier", str, True), _Field("Version", "version", str),
        _Field("ShortVersion", "short_version", str), _Field("Name", "name", str),
        _Field("BundleSize", "bundle_size", int), _Field("DynamicSize", "dynamic_size", int),
        _Field("IsValidated", "is_validated", bool), _Field("Installing", "installing", bool),
    )

    identifier: str
    version: str | None = None
    short_version: str | None = None
    name: str | None = None
    bundle_size: int | None = None
    dynamic_size: int | None = None
    is_validated: bool | None = None
    installing: bool | None = None
    extra: Mapping[str, Any] = _extra()


def _answer(report: CommandReport, request_type: str, key: str, kind: type) -> Any:
    if not isinstance(report, CommandReport):
        raise MessageError(f"{request_type}: expected a CommandReport, not {type(report).__name__}")
    if report.status is not Status.ACKNOWLEDGED:
        cause = f" ({report.error_chain[0].localized_description})" if report.error_chain else ""
        raise MessageError(f"{request_type} was not acknowledged: Status {report.status.value}{cause}")
    value = report.extra.get(key)
    if value is None:
        raise MessageError(f"{request_type} report has no {key}")
    if not isinstance(value, kind):
        raise _wrong(f"{request_type} report", key, kind, value)
    return value


def parse_profile_list(report: CommandReport) -> tuple[ProfileListItem, ...]:
    return tuple(ProfileListItem.from_plist(i) for i in _answer(report, "ProfileList", "ProfileList", list))


def parse_certificate_list(report: CommandReport) -> tuple[CertificateListItem, ...]:
    items = _answer(report, "CertificateList", "CertificateList", list)
    return tuple(CertificateListItem.from_plist(item) for item in items)


def parse_device_information(report: CommandReport) -> dict[str, Any]:
    """The QueryResponses dictionary (a copy), keyed by Apple's query names."""
    return dict(_answer(report, "DeviceInformation", "QueryResponses", Mapping))


def parse_installed_application_list(report: CommandReport) -> tuple[InstalledApplication, ...]:
    items = _answer(report, "InstalledApplicationList", "InstalledApplicationList", list)
    return tuple(InstalledApplication.from_plist(item) for item in items)


def _acknowledged(
    udid: str | None, command_uuid: str, enrollment_id: str | None, **extra: Any
) -> CommandReport:
    return CommandReport(Status.ACKNOWLEDGED, udid, enrollment_id, command_uuid, (), extra)


def _records(items: Iterable[Any], kind: type[_Record]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        if not isinstance(item, kind):
            raise MessageError(f"expected {kind.__name__} items, not {type(item).__name__}")
        out.append(item.to_plist())
    return out


def profile_list_response(
    udid: str | None, command_uuid: str, items: Iterable[ProfileListItem], *, enrollment_id: str | None = None
) -> CommandReport:
    """The device's Acknowledged answer to ProfileList."""
    return _acknowledged(udid, command_uuid, enrollment_id, ProfileList=_records(items, ProfileListItem))


def certificate_list_response(
    udid: str | None, command_uuid: str, items: Iterable[CertificateListItem], *,
    enrollment_id: str | None = None,
) -> CommandReport:
    """The device's Acknowledged answer to CertificateList."""
    listed = _records(items, CertificateListItem)
    return _acknowledged(udid, command_uuid, enrollment_id, CertificateList=listed)


def device_information_response(
    udid: str | None, command_uuid: str, query_responses: Mapping[str, Any], *,
    enrollment_id: str | None = None,
) -> CommandReport:
    """The device's Acknowledged answer to DeviceInformation."""
    if not isinstance(query_responses, Mapping):
        raise MessageError(f"QueryResponses must be a mapping, not {type(query_responses).__name__}")
    return _acknowledged(udid, command_uuid, enrollment_id, QueryResponses=dict(query_responses))


def installed_application_list_response(
    udid: str | None, command_uuid: str, apps: Iterable[InstalledApplication], *,
    enrollment_id: str | None = None,
) -> CommandReport:
    """The device's Acknowledged answer to InstalledApplicationList."""
    listed = _records(apps, InstalledApplication)
    return _acknowledged(udid, command_uuid, enrollment_id, InstalledApplicationList=listed)
