"""The command channel (SPEC section 2): the device's reports (PUTs) and the server's commands (200 bodies).

A zero-byte server answer ends the session; an empty plist is an error, never an end of session.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from .errors import ErrorChainItem, MessageError
from .plist import DEFAULT_MAX_SIZE, decode_plist, encode_plist

END_OF_SESSION = b""
_set = object.__setattr__  # how frozen dataclasses set their own fields


class Status(StrEnum):
    """What a device says about the command it is answering (or Idle: nothing to report)."""

    ACKNOWLEDGED = "Acknowledged"
    ERROR = "Error"
    COMMAND_FORMAT_ERROR = "CommandFormatError"
    IDLE = "Idle"
    NOT_NOW = "NotNow"


_REPORT_KEYS = frozenset({"Status", "UDID", "EnrollmentID", "CommandUUID", "ErrorChain"})
_STATUS_BY_VALUE = {status.value: status for status in Status}
_new = object.__new__
# Exact types plistlib produces for a string or an absent key; anything else takes the slow, explaining path.
_STRING_OR_NONE = frozenset({str, type(None)})


def _status(value: Any) -> Status:
    status = _STATUS_BY_VALUE.get(value) if isinstance(value, str) else None
    if status is None:
        raise MessageError(f"unknown Status {value!r}; expected one of {list(_STATUS_BY_VALUE)}")
    return status


def _check_strings(udid: Any, enrollment_id: Any, command_uuid: Any) -> None:
    for key, value in (("UDID", udid), ("EnrollmentID", enrollment_id), ("CommandUUID", command_uuid)):
        if value is not None and not isinstance(value, str):
            raise MessageError(f"command report: {key} must be a string, not {type(value).__name__}")


def _frozen_mapping(value: Any, what: str) -> MappingProxyType[str, Any]:
    if type(value) is MappingProxyType:
        return value
    if not isinstance(value, Mapping):
        raise MessageError(f"{what} must be a mapping, not {type(value).__name__}")
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True)
class CommandReport:
    """A device's PUT on the command channel; `extra` holds the command-specific and unknown keys."""

    status: Status
    udid: str | None = None
    enrollment_id: str | None = None
    command_uuid: str | None = None
    error_chain: tuple[ErrorChainItem, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if type(self.status) is not Status:
            _set(self, "status", _status(self.status))
        _check_strings(self.udid, self.enrollment_id, self.command_uuid)
        if type(self.error_chain) is not tuple:
            _set(self, "error_chain", tuple(self.error_chain))
        if not all(isinstance(item, ErrorChainItem) for item in self.error_chain):
            raise MessageError("command report: ErrorChain items must be ErrorChainItem")
        extra = _frozen_mapping(self.extra, "command report extra")
        _set(self, "extra", extra)
        clash = _REPORT_KEYS.intersection(extra)
        if clash:
            raise MessageError(f"command report: extra repeats typed keys {sorted(clash)}")
        self._check_rules()

    def _check_rules(self) -> None:
        udid, enrollment_id = self.udid, self.enrollment_id
        if (udid is None) == (enrollment_id is None):
            raise MessageError("command report: exactly one of UDID and EnrollmentID is required")
        if not (udid or enrollment_id):
            raise MessageError("command report: the device identifier (UDID or EnrollmentID) is empty")
        if not self.command_uuid and self.status is not Status.IDLE:
            raise MessageError(
                f"command report: Status {self.status.value} needs a CommandUUID (only Idle may omit it)"
            )

    @property
    def device_id(self) -> str:
        """The UDID, else (User Enrollment) the EnrollmentID."""
        return self.udid or self.enrollment_id  # type: ignore[return-value]

    def to_plist(self) -> dict[str, Any]:
        out = dict(self.extra)
        out["Status"] = self.status.value
        for key, value in (("UDID", self.udid), ("EnrollmentID", self.enrollment_id),
                           ("CommandUUID", self.command_uuid)):
            if value is not None:
                out[key] = value
        if self.error_chain:
            out["ErrorChain"] = [item.to_plist() for item in self.error_chain]
        return out

    @classmethod
    def from_plist(cls, value: Any) -> CommandReport:
        """Type a decoded report dictionary; `MessageError` says what is wrong with it."""
        if not isinstance(value, dict):
            raise MessageError(f"a command report must be a dictionary, not {type(value).__name__}")
        rest = dict(value)
        pop = rest.pop
        if "Status" not in rest:
            raise MessageError("command report has no Status")
        status = _status(pop("Status"))
        udid, enrollment_id = pop("UDID", None), pop("EnrollmentID", None)
        command_uuid = pop("CommandUUID", None)
        if not (type(udid) in _STRING_OR_NONE and type(enrollment_id) in _STRING_OR_NONE
                and type(command_uuid) in _STRING_OR_NONE):
            _check_strings(udid, enrollment_id, command_uuid)  # raises with the reason
        chain = pop("ErrorChain", None)
        if chain is not None and not isinstance(chain, list | tuple):
            raise MessageError(f"command report: ErrorChain must be an array, not {type(chain).__name__}")
        # Reports arrive on every command round trip: fill the slots directly rather than run __init__ and
        # __post_init__ over values already checked here (the same checks, about twice as fast).
        report = _new(cls)
        _set(report, "status", status)
        _set(report, "udid", udid)
        _set(report, "enrollment_id", enrollment_id)
        _set(report, "command_uuid", command_uuid)
        _set(report, "error_chain", tuple(map(ErrorChainItem.from_plist, chain)) if chain else ())
        _set(report, "extra", MappingProxyType(rest))
        report._check_rules()
        return report


def decode_report(body: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> CommandReport:
    """Decode a device's command-channel body; `PlistError`/`MessageError` say what is wrong."""
    return CommandReport.from_plist(decode_plist(body, max_size=max_size))


def encode_report(report: CommandReport, *, binary: bool = False) -> bytes:
    """The plist bytes a device PUTs for `report` (XML unless `binary`)."""
    if not isinstance(report, CommandReport):
        raise MessageError(f"not a command report: {type(report).__name__}")
    return encode_plist(report.to_plist(), binary=binary)


def new_command_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Command:
    """What the server sends: `{CommandUUID, Command: {RequestType, **keys}}`."""

    request_type: str
    keys: Mapping[str, Any] = field(default_factory=dict, hash=False)
    command_uuid: str = field(default_factory=new_command_uuid)

    def __post_init__(self) -> None:
        if not isinstance(self.request_type, str) or not self.request_type:
            raise MessageError(f"command: RequestType must be a non-empty string, not {self.request_type!r}")
        if not isinstance(self.command_uuid, str) or not self.command_uuid:
            raise MessageError(f"command: CommandUUID must be a non-empty string, not {self.command_uuid!r}")
        keys = _frozen_mapping(self.keys, f"{self.request_type} keys")
        if "RequestType" in keys:
            raise MessageError(f"{self.request_type}: keys must not repeat RequestType")
        _set(self, "keys", keys)

    def to_plist(self) -> dict[str, Any]:
        body = dict(self.keys)
        body["RequestType"] = self.request_type
        return {"CommandUUID": self.command_uuid, "Command": body}

    @classmethod
    def from_plist(cls, value: Any) -> Command:
        """Type a decoded server answer; unknown top-level keys are ignored, as a device does."""
        if not isinstance(value, dict):
            raise MessageError(f"a command must be a dictionary, not {type(value).__name__}")
        if not value:
            raise MessageError(
                "an empty plist is not an end of session: the server must answer with a zero-byte body"
            )
        command_uuid, body = value.get("CommandUUID"), value.get("Command")
        if not isinstance(command_uuid, str):
            raise MessageError(f"command: CommandUUID must be a string, not {type(command_uuid).__name__}")
        if not isinstance(body, dict):
            raise MessageError(f"command: Command must be a dictionary, not {type(body).__name__}")
        keys = dict(body)
        request_type = keys.pop("RequestType", None)
        if not isinstance(request_type, str):
            raise MessageError(f"command: RequestType must be a string, not {type(request_type).__name__}")
        return cls(request_type, MappingProxyType(keys), command_uuid)


def encode_command(command: Command, *, binary: bool = False) -> bytes:
    """The 200 body that sends `command` to a device (XML unless `binary`)."""
    if not isinstance(command, Command):
        raise MessageError(f"not a command: {type(command).__name__}")
    return encode_plist(command.to_plist(), binary=binary)


def decode_command(body: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Command:
    """Decode a server's command body; an empty plist is a `MessageError`, not an end of session."""
    return Command.from_plist(decode_plist(body, max_size=max_size))


def decode_server_response(body: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Command | None:
    """A device's view of a 200 answer: None for the zero-byte end of session, else the command."""
    if isinstance(body, bytes | bytearray | memoryview) and len(body) == 0:
        return None
    return decode_command(body, max_size=max_size)
