"""Check-in messages (SPEC section 1): typed, immutable and validated, with unknown keys kept in `extra`.

`decode_checkin` makes one of five message classes from a check-in body; `encode_checkin` undoes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

from .errors import MessageError
from .plist import DEFAULT_MAX_SIZE, decode_plist, encode_plist

TOPIC_PREFIX = "com.apple.mgmt."
# The UserID of every Shared iPad user channel (UserShortName tells the users apart), SPEC section 11.
SHARED_IPAD_USER_ID = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"
DDM_ENDPOINTS = frozenset({"tokens", "declaration-items", "status"})
TOKEN_SERVICE_TYPES = frozenset({"com.apple.maid", "com.apple.watch.pairing"})
# Apple check-in messages this iOS emulator does not take, with the reason a server log should show.
UNSUPPORTED_MESSAGE_TYPES = MappingProxyType({
    "UserAuthenticate": "is macOS only",
    "SetBootstrapToken": "is not sent by iOS",
    "GetBootstrapToken": "is not sent by iOS",
})
_KIND_NAMES = {str: "a string", bytes: "data (bytes)", bool: "a boolean", Mapping: "a dictionary"}


class _Key(NamedTuple):
    """One Apple key of a message: where it lives on the class, its plist type, and what absence means."""

    apple: str
    attr: str
    kind: type
    required: bool = False
    absent: Any = None


_UDID = _Key("UDID", "udid", str)
_ENROLLMENT_ID = _Key("EnrollmentID", "enrollment_id", str)
_TOPIC = _Key("Topic", "topic", str, required=True)
_set = object.__setattr__  # how frozen dataclasses set their own fields
_new = object.__new__


def _bad_value(message_type: str, key: _Key, value: Any) -> MessageError:
    if value is None:
        return MessageError(f"{message_type}: missing required key {key.apple}")
    kind = _KIND_NAMES[key.kind]
    return MessageError(f"{message_type}: {key.apple} must be {kind}, not {type(value).__name__}")


class _CheckinMessage:
    """Shared behaviour of the check-in dataclasses; subclasses declare `message_type` and `_KEYS`."""

    __slots__ = ()
    message_type: ClassVar[str]
    _KEYS: ClassVar[tuple[_Key, ...]]
    _APPLE_NAMES: ClassVar[frozenset[str]]

    def __post_init__(self) -> None:
        for key in self._KEYS:
            value = getattr(self, key.attr)
            if value is None:
                if key.required:
                    raise _bad_value(self.message_type, key, value)
            elif not isinstance(value, key.kind):
                raise _bad_value(self.message_type, key, value)
        extra = self.extra  # type: ignore[attr-defined]
        if type(extra) is not MappingProxyType:
            if not isinstance(extra, Mapping):
                raise MessageError(f"{self.message_type}: extra must be a mapping")
            extra = MappingProxyType(dict(extra))
            _set(self, "extra", extra)
        clash = self._APPLE_NAMES.intersection(extra)
        if clash:
            raise MessageError(f"{self.message_type}: extra repeats typed keys {sorted(clash)}")
        self._check_common()

    @classmethod
    def from_plist(cls, value: Mapping[str, Any]) -> CheckinMessage:
        """Type a decoded check-in dictionary; keys this class does not know end up in `extra`."""
        # Decoding runs on every request, so it fills the slots in one pass instead of building keyword
        # arguments for __init__ and re-reading them in __post_init__ (measured 2.5x faster); the checks
        # are the same as __post_init__'s.
        rest = dict(value)
        pop = rest.pop
        message_type = pop("MessageType", cls.message_type)
        if message_type != cls.message_type:
            raise MessageError(f"{cls.message_type}: MessageType is {message_type!r}")
        message = _new(cls)
        for key in cls._KEYS:
            apple, attr, kind, required, absent = key
            item = pop(apple, absent)
            if item is None:
                if required:
                    raise _bad_value(cls.message_type, key, item)
            elif not isinstance(item, kind):
                raise _bad_value(cls.message_type, key, item)
            _set(message, attr, item)
        _set(message, "extra", MappingProxyType(rest))
        message._check_common()
        return message  # type: ignore[return-value]

    def _check_common(self) -> None:
        udid, enrollment_id = self.udid, self.enrollment_id  # type: ignore[attr-defined]
        if (udid is None) == (enrollment_id is None):
            raise MessageError(f"{self.message_type}: exactly one of UDID and EnrollmentID is required")
        if not (udid or enrollment_id):
            raise MessageError(f"{self.message_type}: the device identifier (UDID or EnrollmentID) is empty")
        self._check()

    def _check(self) -> None:
        """Rules specific to one message type."""

    @property
    def device_id(self) -> str:
        """The device's identifier on this enrollment: the UDID, else (User Enrollment) the EnrollmentID."""
        return self.udid or self.enrollment_id  # type: ignore[attr-defined,no-any-return]

    def to_plist(self) -> dict[str, Any]:
        out = dict(self.extra)  # type: ignore[attr-defined]
        out["MessageType"] = self.message_type
        for key in self._KEYS:
            value = getattr(self, key.attr)
            if value is not None:
                out[key.apple] = dict(value) if type(value) is MappingProxyType else value
        return out


def _check_topic(message: Any) -> None:
    if not message.topic.startswith(TOPIC_PREFIX):
        raise MessageError(
            f"{message.message_type}: Topic {message.topic!r} must start with {TOPIC_PREFIX!r} "
            "(it is the MDM push certificate's topic)"
        )


def _table(*keys: _Key) -> tuple[tuple[_Key, ...], frozenset[str]]:
    return keys, frozenset(key.apple for key in keys) | {"MessageType"}


def _extra() -> Any:
    # A fresh Field per class: dataclasses mutates the Field it is given.
    return field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Authenticate(_CheckinMessage):
    """First check-in of an enrollment; DeviceName, ModelName and Model are macOS-only, so optional here."""

    message_type: ClassVar[str] = "Authenticate"
    _KEYS, _APPLE_NAMES = _table(
        _TOPIC, _UDID, _ENROLLMENT_ID, _Key("OSVersion", "os_version", str),
        _Key("BuildVersion", "build_version", str), _Key("ProductName", "product_name", str),
        _Key("SerialNumber", "serial_number", str), _Key("IMEI", "imei", str), _Key("MEID", "meid", str),
        _Key("DeviceName", "device_name", str), _Key("ModelName", "model_name", str),
        _Key("Model", "model", str),
    )

    topic: str
    udid: str | None = None
    enrollment_id: str | None = None
    os_version: str | None = None
    build_version: str | None = None
    product_name: str | None = None
    serial_number: str | None = None
    imei: str | None = None
    meid: str | None = None
    device_name: str | None = None
    model_name: str | None = None
    model: str | None = None
    extra: Mapping[str, Any] = _extra()

    _check = _check_topic


@dataclass(frozen=True, slots=True)
class TokenUpdate(_CheckinMessage):
    """The device's push token and PushMagic; the server may push only after the first one."""

    message_type: ClassVar[str] = "TokenUpdate"
    _KEYS, _APPLE_NAMES = _table(
        _TOPIC, _Key("Token", "token", bytes, required=True),
        _Key("PushMagic", "push_magic", str, required=True),
        _UDID, _ENROLLMENT_ID, _Key("UnlockToken", "unlock_token", bytes),
        _Key("AwaitingConfiguration", "awaiting_configuration", bool, required=True, absent=False),
        _Key("UserShortName", "user_short_name", str), _Key("UserID", "user_id", str),
    )

    topic: str
    token: bytes
    push_magic: str
    udid: str | None = None
    enrollment_id: str | None = None
    unlock_token: bytes | None = field(default=None, repr=False)  # a secret: keep it out of logs
    awaiting_configuration: bool = False
    user_short_name: str | None = None
    user_id: str | None = None
    extra: Mapping[str, Any] = _extra()

    def _check(self) -> None:
        _check_topic(self)
        if not self.token:
            raise MessageError("TokenUpdate: Token is empty")
        if not self.push_magic:
            raise MessageError("TokenUpdate: PushMagic is empty")


@dataclass(frozen=True, slots=True)
class CheckOut(_CheckinMessage):
    """Best-effort notice that the MDM profile was removed; never resent."""

    message_type: ClassVar[str] = "CheckOut"
    _KEYS, _APPLE_NAMES = _table(_TOPIC, _UDID, _ENROLLMENT_ID)

    topic: str
    udid: str | None = None
    enrollment_id: str | None = None
    extra: Mapping[str, Any] = _extra()

    _check = _check_topic


@dataclass(frozen=True, slots=True)
class DeclarativeManagement(_CheckinMessage):
    """A DDM request (iOS 15+): `endpoint` names what is fetched or reported, `data` is its JSON body."""

    message_type: ClassVar[str] = "DeclarativeManagement"
    _KEYS, _APPLE_NAMES = _table(
        _Key("Endpoint", "endpoint", str, required=True), _Key("Data", "data", bytes), _UDID, _ENROLLMENT_ID,
    )

    endpoint: str
    data: bytes | None = None
    udid: str | None = None
    enrollment_id: str | None = None
    extra: Mapping[str, Any] = _extra()

    def _check(self) -> None:
        endpoint = self.endpoint
        if endpoint in DDM_ENDPOINTS:
            return
        parts = endpoint.split("/")
        if len(parts) != 3 or parts[0] != "declaration" or not parts[1] or not parts[2]:
            raise MessageError(
                f"DeclarativeManagement: Endpoint {endpoint!r} is not one of {sorted(DDM_ENDPOINTS)} "
                "or 'declaration/<type>/<identifier>'"
            )


@dataclass(frozen=True, slots=True)
class GetToken(_CheckinMessage):
    """A token request (iOS 17+); the server answers with TokenData. Unknown service types are kept."""

    message_type: ClassVar[str] = "GetToken"
    _KEYS, _APPLE_NAMES = _table(
        _Key("TokenServiceType", "token_service_type", str, required=True),
        _Key("TokenParameters", "token_parameters", Mapping), _UDID, _ENROLLMENT_ID,
    )

    token_service_type: str
    token_parameters: Mapping[str, Any] | None = field(default=None, hash=False)
    udid: str | None = None
    enrollment_id: str | None = None
    extra: Mapping[str, Any] = _extra()

    def _check(self) -> None:
        if not self.token_service_type:
            raise MessageError("GetToken: TokenServiceType is empty")
        params = self.token_parameters
        if params is not None and type(params) is not MappingProxyType:
            _set(self, "token_parameters", MappingProxyType(dict(params)))


CheckinMessage = Authenticate | TokenUpdate | CheckOut | DeclarativeManagement | GetToken
CHECKIN_TYPES: Mapping[str, type[CheckinMessage]] = MappingProxyType({
    cls.message_type: cls for cls in (Authenticate, TokenUpdate, CheckOut, DeclarativeManagement, GetToken)
})


def checkin_from_plist(value: Any) -> CheckinMessage:
    """Type and validate an already-decoded check-in dictionary."""
    if not isinstance(value, dict):
        raise MessageError(f"a check-in must be a dictionary, not {type(value).__name__}")
    message_type = value.get("MessageType")
    cls = CHECKIN_TYPES.get(message_type) if isinstance(message_type, str) else None
    if cls is None:
        raise MessageError(_unknown_type_reason(message_type))
    return cls.from_plist(value)


def _unknown_type_reason(message_type: Any) -> str:
    if message_type is None:
        return "check-in has no MessageType"
    if isinstance(message_type, str) and message_type in UNSUPPORTED_MESSAGE_TYPES:
        return f"check-in MessageType {message_type!r} {UNSUPPORTED_MESSAGE_TYPES[message_type]}"
    return f"unknown check-in MessageType {message_type!r}; expected one of {sorted(CHECKIN_TYPES)}"


def decode_checkin(body: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> CheckinMessage:
    """Decode a check-in body (XML or binary plist); `PlistError`/`MessageError` say what is wrong."""
    return checkin_from_plist(decode_plist(body, max_size=max_size))


def encode_checkin(message: CheckinMessage, *, binary: bool = False) -> bytes:
    """The plist bytes a device sends for `message` (XML unless `binary`)."""
    if not isinstance(message, _CheckinMessage):
        raise MessageError(f"not a check-in message: {type(message).__name__}")
    return encode_plist(message.to_plist(), binary=binary)
