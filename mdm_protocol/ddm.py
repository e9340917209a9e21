"""Declarative Device Management documents (SPEC section 10), sans IO: what the server and the device exchange.

Declarations, the tokens and declaration-items answers, the status report and the identity credential document;
server tokens are SHA-256 over canonical JSON, so they change exactly when a declaration's content changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from .commands import declarative_management
from .errors import MessageError
from .report import Command

# A DDM document is small; a bigger body is refused before json parses it.
MAX_DOCUMENT_SIZE = 4 * 1024 * 1024
IDENTITY_CREDENTIAL_TYPE = "com.apple.credential.identity"
_set = object.__setattr__  # how frozen dataclasses set their own fields


class DeclarationKind(StrEnum):
    """The four declaration classes; the value is the word in the type name and the `declaration/<kind>/` path."""

    ACTIVATION = "activation"
    CONFIGURATION = "configuration"
    ASSET = "asset"
    MANAGEMENT = "management"

    @property
    def items_key(self) -> str:
        """Its array's key in DeclarationItemsResponse.Declarations (`Activations`, ...)."""
        return "Management" if self is DeclarationKind.MANAGEMENT else self.value.capitalize() + "s"

    @property
    def status_key(self) -> str:
        """Its array's key in the `management.declarations` status item (`activations`, ...)."""
        return "management" if self is DeclarationKind.MANAGEMENT else self.value + "s"


KINDS: tuple[DeclarationKind, ...] = tuple(DeclarationKind)


class Validity(StrEnum):
    """A declaration's `valid` state in a status report."""

    UNKNOWN = "unknown"
    INVALID = "invalid"
    VALID = "valid"


# -- JSON plumbing ------------------------------------------------------------------------------------------------

def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8. What server tokens are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_json(body: bytes, what: str, *, max_size: int = MAX_DOCUMENT_SIZE) -> dict[str, Any]:
    """Parse a DDM JSON document that must be an object; `MessageError` says what is wrong."""
    if len(body) > max_size:
        raise MessageError(f"{what}: {len(body)} bytes is over the {max_size}-byte limit")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise MessageError(f"{what}: not JSON ({error})") from None
    return _object(value, what)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _get(document: Mapping[str, Any], key: str, kind: type, what: str, *, required: bool = True) -> Any:
    value = document.get(key)
    if value is None:
        if required:
            raise MessageError(f"{what}: missing required key {key}")
        return None
    # bool is an int in Python; JSON keeps them apart, and so does Apple's schema.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise MessageError(f"{what}: {key} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return value if type(value) is MappingProxyType else MappingProxyType(dict(value))


# -- Declarations -------------------------------------------------------------------------------------------------

def kind_of(declaration_type: str) -> DeclarationKind:
    """The kind a type name belongs to: `com.apple.configuration.account.mail` is a configuration."""
    parts = declaration_type.split(".")
    if len(parts) >= 4 and parts[0] == "com" and parts[1] == "apple":
        for kind in KINDS:
            if parts[2] == kind.value:
                return kind
    raise MessageError(f"declaration Type {declaration_type!r} is not com.apple.<activation|configuration|"
                       "asset|management>.<name>")


def server_token(declaration_type: str, identifier: str, payload: Mapping[str, Any]) -> str:
    """The ServerToken of a declaration: SHA-256 (hex, 64 octets) over its whole content, so it changes iff
    the content does."""
    content = {"Type": declaration_type, "Identifier": identifier, "Payload": dict(payload)}
    return hashlib.sha256(canonical_json(content)).hexdigest()


@dataclass(frozen=True, slots=True)
class Declaration:
    """One declaration (DeclarationBase): `payload` is the type's JSON dictionary, read-only at the top level."""

    type: str
    identifier: str
    server_token: str
    payload: Mapping[str, Any] = field(hash=False)

    def __post_init__(self) -> None:
        kind_of(self.type)
        if not self.identifier:
            raise MessageError("declaration: Identifier is empty")
        if not self.server_token:
            raise MessageError("declaration: ServerToken is empty")
        if not isinstance(self.payload, Mapping):
            raise MessageError("declaration: Payload must be a dictionary")
        _set(self, "payload", _frozen(self.payload))

    @classmethod
    def create(cls, declaration_type: str, identifier: str, payload: Mapping[str, Any]) -> Declaration:
        """A declaration whose ServerToken is computed over its content (what a server builds)."""
        return cls(declaration_type, identifier, server_token(declaration_type, identifier, payload), payload)

    @property
    def kind(self) -> DeclarationKind:
        return kind_of(self.type)

    @property
    def endpoint(self) -> str:
        """The check-in Endpoint a device sends to fetch it: `declaration/<kind>/<identifier>`."""
        return declaration_endpoint(self.kind, self.identifier)

    @property
    def item(self) -> DeclarationItem:
        return DeclarationItem(self.identifier, self.server_token)

    def to_json(self) -> dict[str, Any]:
        return {"Type": self.type, "Identifier": self.identifier, "ServerToken": self.server_token,
                "Payload": dict(self.payload)}

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> Declaration:
        document = _object(value, "declaration")
        return cls(_get(document, "Type", str, "declaration"), _get(document, "Identifier", str, "declaration"),
                   _get(document, "ServerToken", str, "declaration"), _get(document, "Payload", dict, "declaration"))

    @classmethod
    def decode(cls, body: bytes) -> Declaration:
        return cls.from_json(decode_json(body, "declaration"))


def declaration_endpoint(kind: DeclarationKind, identifier: str) -> str:
    return f"declaration/{kind.value}/{identifier}"


def parse_declaration_endpoint(endpoint: str) -> tuple[DeclarationKind, str]:
    """`declaration/configuration/abc` -> (CONFIGURATION, "abc"); `MessageError` for anything else."""
    parts = endpoint.split("/", 2)
    if len(parts) == 3 and parts[0] == "declaration" and parts[2]:
        for kind in KINDS:
            if parts[1] == kind.value:
                return kind, parts[2]
    raise MessageError(f"Endpoint {endpoint!r} is not declaration/<activation|configuration|asset|management>/<id>")


# -- tokens and declaration-items ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeclarationItem:
    """One entry of the declaration manifest."""

    identifier: str
    server_token: str

    def to_json(self) -> dict[str, str]:
        return {"Identifier": self.identifier, "ServerToken": self.server_token}

    @classmethod
    def from_json(cls, value: Any) -> DeclarationItem:
        document = _object(value, "declaration item")
        return cls(_get(document, "Identifier", str, "declaration item"),
                   _get(document, "ServerToken", str, "declaration item"))


def declarations_token(declarations: Iterable[Declaration]) -> str:
    """The DeclarationsToken: SHA-256 over every (kind, identifier, server token), independent of order."""
    entries = sorted((d.kind.value, d.identifier, d.server_token) for d in declarations)
    return hashlib.sha256(canonical_json(entries)).hexdigest()


@dataclass(frozen=True, slots=True)
class DeclarationItemsResponse:
    """The `declaration-items` answer: every declaration's identifier and server token, by kind."""

    activations: tuple[DeclarationItem, ...]
    configurations: tuple[DeclarationItem, ...]
    assets: tuple[DeclarationItem, ...]
    management: tuple[DeclarationItem, ...]
    declarations_token: str

    @classmethod
    def of(cls, declarations: Iterable[Declaration]) -> DeclarationItemsResponse:
        """The manifest of a set of declarations, items sorted by identifier, token computed over them all."""
        every = sorted(declarations, key=lambda d: (d.kind.value, d.identifier))
        lists = [tuple(d.item for d in every if d.kind is kind) for kind in KINDS]
        return cls(lists[0], lists[1], lists[2], lists[3], declarations_token(every))

    def items(self) -> Iterator[tuple[DeclarationKind, DeclarationItem]]:
        for kind, entries in zip(KINDS, (self.activations, self.configurations, self.assets, self.management),
                                 strict=True):
            for entry in entries:
                yield kind, entry

    def to_json(self) -> dict[str, Any]:
        lists = (self.activations, self.configurations, self.assets, self.management)
        return {"Declarations": {kind.items_key: [entry.to_json() for entry in entries]
                                 for kind, entries in zip(KINDS, lists, strict=True)},
                "DeclarationsToken": self.declarations_token}

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> DeclarationItemsResponse:
        what = "DeclarationItemsResponse"
        document = _object(value, what)
        declarations = _get(document, "Declarations", dict, what)
        lists = [tuple(DeclarationItem.from_json(entry) for entry in _get(declarations, kind.items_key, list, what))
                 for kind in KINDS]
        return cls(lists[0], lists[1], lists[2], lists[3], _get(document, "DeclarationsToken", str, what))

    @classmethod
    def decode(cls, body: bytes) -> DeclarationItemsResponse:
        return cls.from_json(decode_json(body, "DeclarationItemsResponse"))


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class TokensResponse:
    """The `tokens` answer (and the DeclarativeManagement command's Data): SyncTokens.{DeclarationsToken,
    Timestamp}. `timestamp` is timezone-aware; it is sent in whole seconds, UTC."""

    declarations_token: str
    timestamp: datetime

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise MessageError("TokensResponse: timestamp must be timezone-aware")

    def to_json(self) -> dict[str, Any]:
        return {"SyncTokens": {"DeclarationsToken": self.declarations_token,
                               "Timestamp": _timestamp(self.timestamp)}}

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> TokensResponse:
        what = "TokensResponse"
        tokens = _get(_object(value, what), "SyncTokens", dict, what)
        stamp = _get(tokens, "Timestamp", str, what)
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            raise MessageError(f"{what}: Timestamp {stamp!r} is not an RFC 3339 date-time") from None
        if when.tzinfo is None:
            raise MessageError(f"{what}: Timestamp {stamp!r} has no time zone")
        return cls(_get(tokens, "DeclarationsToken", str, what), when)

    @classmethod
    def decode(cls, body: bytes) -> TokensResponse:
        return cls.from_json(decode_json(body, "TokensResponse"))


def declarative_management_command(tokens: TokensResponse | None = None, *,
                                   command_uuid: str | None = None) -> Command:
    """The DeclarativeManagement command that starts or kicks a sync; `tokens` becomes its Data when given."""
    return declarative_management(None if tokens is None else tokens.encode(), command_uuid=command_uuid)


# -- status report ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StatusReason:
    """A reason in a status report. Declaration status spells its keys in lower case (`code`), the report's
    Errors in title case (`Code`): `to_json(title_case=...)` and `from_json` take both."""

    code: str
    description: str | None = None
    details: Mapping[str, Any] | None = field(default=None, hash=False)

    def to_json(self, *, title_case: bool = False) -> dict[str, Any]:
        code, description, details = ("Code", "Description", "Details") if title_case else (
            "code", "description", "details")
        out: dict[str, Any] = {code: self.code}
        if self.description is not None:
            out[description] = self.description
        if self.details is not None:
            out[details] = dict(self.details)
        return out

    @classmethod
    def from_json(cls, value: Any, *, title_case: bool = False) -> StatusReason:
        what = "status reason"
        document = _object(value, what)
        code, description, details = ("Code", "Description", "Details") if title_case else (
            "code", "description", "details")
        return cls(_get(document, code, str, what), _get(document, description, str, what, required=False),
                   _get(document, details, dict, what, required=False))


@dataclass(frozen=True, slots=True)
class DeclarationStatus:
    """What the device says about one declaration it processed."""

    identifier: str
    server_token: str
    active: bool
    valid: Validity
    reasons: tuple[StatusReason, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"identifier": self.identifier, "server-token": self.server_token,
                               "active": self.active, "valid": self.valid.value}
        if self.reasons:
            out["reasons"] = [reason.to_json() for reason in self.reasons]
        return out

    @classmethod
    def from_json(cls, value: Any) -> DeclarationStatus:
        what = "management.declarations item"
        document = _object(value, what)
        valid = _get(document, "valid", str, what)
        if valid not in Validity._value2member_map_:
            raise MessageError(f"{what}: valid {valid!r} is not one of {[v.value for v in Validity]}")
        reasons = _get(document, "reasons", list, what, required=False) or []
        return cls(_get(document, "identifier", str, what), _get(document, "server-token", str, what),
                   _get(document, "active", bool, what), Validity(valid),
                   tuple(StatusReason.from_json(reason) for reason in reasons))


@dataclass(frozen=True, slots=True)
class DeclarationsStatus:
    """The `management.declarations` status item: the processed declarations by kind."""

    activations: tuple[DeclarationStatus, ...] = ()
    configurations: tuple[DeclarationStatus, ...] = ()
    assets: tuple[DeclarationStatus, ...] = ()
    management: tuple[DeclarationStatus, ...] = ()

    def all(self) -> Iterator[tuple[DeclarationKind, DeclarationStatus]]:
        for kind, entries in zip(KINDS, (self.activations, self.configurations, self.assets, self.management),
                                 strict=True):
            for entry in entries:
                yield kind, entry

    def to_json(self) -> dict[str, Any]:
        lists = (self.activations, self.configurations, self.assets, self.management)
        return {kind.status_key: [entry.to_json() for entry in entries]
                for kind, entries in zip(KINDS, lists, strict=True)}

    @classmethod
    def from_json(cls, value: Any) -> DeclarationsStatus:
        what = "management.declarations"
        document = _object(value, what)
        lists = [tuple(DeclarationStatus.from_json(entry) for entry in _get(document, kind.status_key, list, what))
                 for kind in KINDS]
        return cls(*lists)


@dataclass(frozen=True, slots=True)
class StatusError:
    """An entry of the report's Errors: a status item the device could not return, and why."""

    status_item: str
    reasons: tuple[StatusReason, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"StatusItem": self.status_item}
        if self.reasons:
            out["Reasons"] = [reason.to_json(title_case=True) for reason in self.reasons]
        return out

    @classmethod
    def from_json(cls, value: Any) -> StatusError:
        document = _object(value, "status error")
        reasons = _get(document, "Reasons", list, "status error", required=False) or []
        return cls(_get(document, "StatusItem", str, "status error"),
                   tuple(StatusReason.from_json(reason, title_case=True) for reason in reasons))


def nest_status_items(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"management.declarations": v} -> {"management": {"declarations": v}}: how StatusItems nests names."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MessageError(f"status item {name!r} clashes with another item")
        node[leaf] = value
    return nested


@dataclass(frozen=True, slots=True)
class StatusReport:
    """The `status` endpoint's Data. `status_items` is the nested StatusItems dictionary as sent;
    `item("a.b")` reads one status item, `declarations` the parsed `management.declarations`."""

    status_items: Mapping[str, Any] = field(default_factory=dict, hash=False)
    errors: tuple[StatusError, ...] = ()
    full_report: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status_items, Mapping):
            raise MessageError("StatusReport: StatusItems must be a dictionary")
        _set(self, "status_items", _frozen(self.status_items))

    @classmethod
    def create(cls, items: Mapping[str, Any], *, declarations: DeclarationsStatus | None = None,
               errors: Iterable[StatusError] = (), full_report: bool | None = None) -> StatusReport:
        """A report from dotted status item names (`{"device.operating-system.version": "17.0"}`)."""
        flat = dict(items)
        if declarations is not None:
            flat["management.declarations"] = declarations.to_json()
        return cls(nest_status_items(flat), tuple(errors), full_report)

    def item(self, name: str) -> Any:
        """The value of status item `name`, or None when the report does not carry it."""
        node: Any = self.status_items
        for part in name.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    @property
    def declarations(self) -> DeclarationsStatus | None:
        value = self.item("management.declarations")
        return None if value is None else DeclarationsStatus.from_json(value)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"StatusItems": dict(self.status_items),
                               "Errors": [error.to_json() for error in self.errors]}
        if self.full_report is not None:
            out["FullReport"] = self.full_report
        return out

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> StatusReport:
        what = "StatusReport"
        document = _object(value, what)
        errors = _get(document, "Errors", list, what)
        report = cls(_get(document, "StatusItems", dict, what), tuple(StatusError.from_json(e) for e in errors),
                     _get(document, "FullReport", bool, what, required=False))
        report.declarations  # noqa: B018 -- a malformed management.declarations refuses the whole report
        return report

    @classmethod
    def decode(cls, body: bytes) -> StatusReport:
        return cls.from_json(decode_json(body, "StatusReport"))


# -- identity credential asset data -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IdentityCredential:
    """The JSON document behind a `com.apple.asset.credential.identity` Reference.DataURL: a PKCS#12 and its
    password (`{"Type": "com.apple.credential.identity", "Password": ..., "Identity": <base64>}`)."""

    identity: bytes = field(repr=False)
    password: str = field(repr=False)

    def to_json(self) -> dict[str, str]:
        return {"Type": IDENTITY_CREDENTIAL_TYPE, "Password": self.password,
                "Identity": base64.b64encode(self.identity).decode()}

    def encode(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, value: Any) -> IdentityCredential:
        what = "identity credential"
        document = _object(value, what)
        kind = _get(document, "Type", str, what)
        if kind != IDENTITY_CREDENTIAL_TYPE:
            raise MessageError(f"{what}: Type {kind!r} is not {IDENTITY_CREDENTIAL_TYPE!r}")
        try:
            identity = base64.b64decode(_get(document, "Identity", str, what), validate=True)
        except binascii.Error:
            raise MessageError(f"{what}: Identity is not base64") from None
        return cls(identity, _get(document, "Password", str, what))

    @classmethod
    def decode(cls, body: bytes) -> IdentityCredential:
        return cls.from_json(decode_json(body, "identity credential"))
