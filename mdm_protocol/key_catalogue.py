"""Typed view of Apple's profile schema (generated `_key_catalogue`): key types, presence, iOS support.

Simulated devices ask it which keys they honour at their OS version; `profile` validates payloads with it.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any

from ._key_catalogue import PAYLOADS
from .errors import MessageError
from .osversion import OSVersion

TOP_LEVEL = "TopLevel"
COMMON = "CommonPayloadKeys"
NOT_ON_IOS = "n/a"
WILDCARD = "ANY"  # Apple's subkey name for "any key" in free-form dictionaries


class Support(enum.Enum):
    """Whether a device of some iOS version honours a key."""

    SUPPORTED = "supported"
    NOT_YET = "not_yet"
    DEPRECATED_BUT_HONOURED = "deprecated_but_honoured"
    REMOVED = "removed"
    NOT_ON_IOS = "not_on_ios"
    UNKNOWN_KEY = "unknown_key"

    @property
    def honoured(self) -> bool:
        return self in (Support.SUPPORTED, Support.DEPRECATED_BUT_HONOURED)


class ValueType(enum.Enum):
    STRING = "<string>"
    INTEGER = "<integer>"
    BOOLEAN = "<boolean>"
    DATA = "<data>"
    DATE = "<date>"
    REAL = "<real>"
    ARRAY = "<array>"
    DICTIONARY = "<dictionary>"
    ANY = "<any>"

    def accepts(self, value: Any) -> bool:
        """Whether a decoded plist value has this type (bool is never an integer or real here)."""
        if self is ValueType.ANY:
            return True
        if isinstance(value, bool):
            return self is ValueType.BOOLEAN
        if self is ValueType.REAL:  # plist <integer> is accepted where a real is expected
            return isinstance(value, int | float)
        return isinstance(value, _PYTHON_TYPES[self])

    def accepts_json(self, value: Any) -> bool:
        """The same for a decoded JSON value (declarations): data is base64 text, a date is RFC 3339 text."""
        if self is ValueType.DATA:
            return isinstance(value, str) and _is_base64(value)
        if self is ValueType.DATE:
            return isinstance(value, str)
        return self.accepts(value)


_PYTHON_TYPES: dict[ValueType, type | tuple[type, ...]] = {
    ValueType.STRING: str, ValueType.INTEGER: int, ValueType.BOOLEAN: bool,
    ValueType.DATA: (bytes, bytearray), ValueType.DATE: datetime, ValueType.ARRAY: (list, tuple),
    ValueType.DICTIONARY: Mapping,
}


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _version(text: str | None) -> OSVersion | None:
    return None if text is None or text == NOT_ON_IOS else OSVersion.parse(text)


@dataclass(frozen=True, slots=True)
class IOSSupport:
    """A payload's or key's iOS facts; `introduced` is None when it does not exist on iOS."""

    introduced: OSVersion | None
    deprecated: OSVersion | None = None
    removed: OSVersion | None = None
    supervised: bool | None = None
    user_enrollment: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> IOSSupport:
        return cls(_version(data["introduced"]), _version(data["deprecated"]), _version(data["removed"]),
                   data["supervised"], data["userenrollment"])

    def at(self, os_version: OSVersion | str) -> Support:
        version = OSVersion.parse(os_version)
        if self.introduced is None:
            return Support.NOT_ON_IOS
        if version < self.introduced:
            return Support.NOT_YET
        if self.removed is not None and version >= self.removed:
            return Support.REMOVED
        if self.deprecated is not None and version >= self.deprecated:
            return Support.DEPRECATED_BUT_HONOURED
        return Support.SUPPORTED


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One schema key; `subkeys` describe a dictionary's keys or (first entry) an array's items."""

    name: str
    type: ValueType
    required: bool
    ios: IOSSupport
    default: Any = None
    rangelist: tuple[Any, ...] | None = None
    range: tuple[int | float | None, int | float | None] | None = None  # the schema's min/max bounds
    format: str | None = None
    repetition: tuple[int | None, int | None] | None = None
    title: str | None = None
    subkeys: tuple[KeySpec, ...] = ()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> KeySpec:
        rangelist = data["rangelist"]
        return cls(
            name=data["key"], type=ValueType(data["type"]), required=data["presence"] == "required",
            ios=IOSSupport.from_data(data["ios"]), default=data["default"],
            rangelist=None if rangelist is None else tuple(rangelist), range=data["range"], format=data["format"],
            repetition=data["repetition"], title=data["title"],
            subkeys=tuple(cls.from_data(sub) for sub in data["subkeys"]),
        )

    def subkey(self, name: str) -> KeySpec | None:
        """The spec for dictionary key `name`, or the wildcard spec when the dictionary is free-form."""
        return _find(self.subkeys, name)

    @property
    def item(self) -> KeySpec | None:
        """The spec of an array's items, when the schema gives one."""
        return self.subkeys[0] if self.type is ValueType.ARRAY and self.subkeys else None


def _find(keys: Sequence[KeySpec], name: str) -> KeySpec | None:
    wildcard = None
    for spec in keys:
        if spec.name == name:
            return spec
        if spec.name == WILDCARD:
            wildcard = spec
    return wildcard


@dataclass(frozen=True, slots=True)
class PayloadSpec:
    """A payload type's facts and keys; `keys` include the common payload keys (the payload's own win)."""

    payload_type: str
    title: str | None
    ios: IOSSupport
    multiple: bool | None
    allow_manual_install: bool | None
    shared_ipad: str | None
    keys: tuple[KeySpec, ...]

    def key(self, name: str) -> KeySpec | None:
        return _find(self.keys, name)

    def key_at(self, path: str | Sequence[str]) -> KeySpec | None:
        """Follow a key path such as ("PayloadContent", "URL") through nested dictionaries and arrays."""
        names = (path,) if isinstance(path, str) else tuple(path)
        spec = self.key(names[0]) if names else None
        for name in names[1:]:
            while spec is not None and spec.type is ValueType.ARRAY:
                spec = spec.item
            spec = spec.subkey(name) if spec is not None else None
        return spec

    @property
    def required_keys(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.keys if spec.required)


@cache
def _specs() -> dict[str, PayloadSpec]:
    common = tuple(KeySpec.from_data(entry) for entry in PAYLOADS[COMMON]["keys"])
    out = {}
    for payload_type, data in PAYLOADS.items():
        own = tuple(KeySpec.from_data(entry) for entry in data["keys"])
        ios = data["ios"]
        support = IOSSupport.from_data(ios)
        if payload_type not in (TOP_LEVEL, COMMON):
            # The common keys inherit the payload's iOS facts (schema.md): a device reads them when it reads
            # the payload, so PayloadIdentifier of a macOS-only type is n/a on iOS too.
            names = {spec.name for spec in own}
            own = tuple(replace(spec, ios=support) for spec in common if spec.name not in names) + own
        out[payload_type] = PayloadSpec(payload_type, data["title"], support,
                                        ios["multiple"], ios["allowmanualinstall"], ios["sharedipad"], own)
    return out


def payload_types() -> tuple[str, ...]:
    """Payload types the catalogue describes (excluding TopLevel and CommonPayloadKeys)."""
    return tuple(name for name in _specs() if name not in (TOP_LEVEL, COMMON))


def ios_payload_types() -> tuple[str, ...]:
    """Payload types that exist on iOS at some version (the schema's others are n/a on iOS)."""
    return tuple(name for name in payload_types() if _specs()[name].ios.introduced is not None)


def has_payload_spec(payload_type: str) -> bool:
    return payload_type in _specs()


def payload_spec(payload_type: str) -> PayloadSpec:
    """The spec of a payload type ("TopLevel" for the profile itself); MessageError when not catalogued."""
    spec = _specs().get(payload_type) if isinstance(payload_type, str) else None
    if spec is None:
        raise MessageError(f"no schema for payload type {payload_type!r}; catalogued: {', '.join(_specs())}")
    return spec


def key_support(payload_type: str, key: str | Sequence[str], os_version: OSVersion | str) -> Support:
    """Whether iOS `os_version` honours `key` (a name or a nested key path) of `payload_type`."""
    spec = payload_spec(payload_type).key_at(key)
    if spec is None:
        return Support.UNKNOWN_KEY
    return spec.ios.at(os_version)


class Issue(enum.Enum):
    """How a value fails its schema (the profile layer maps these to MCPayloadErrorDomain codes)."""

    MISSING = "missing"
    WRONG_TYPE = "wrong_type"
    NOT_ALLOWED = "not_allowed"  # outside the rangelist, the range or the allowed number of items


KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    """("PayloadContent", "Subject", 0) -> "PayloadContent.Subject[0]"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@dataclass(frozen=True, slots=True)
class KeyIssue:
    path: KeyPath
    issue: Issue
    reason: str


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A key present in the input that a device would not read: unknown, or not honoured at its OS version."""

    path: KeyPath
    support: Support


@dataclass(frozen=True, slots=True)
class Conformance:
    issues: tuple[KeyIssue, ...]
    skipped: tuple[SkippedKey, ...]


def check_keys(keys: Sequence[KeySpec], value: Mapping[str, Any], os_version: OSVersion | str | None = None,
               path: KeyPath = (), *, json: bool = False) -> Conformance:
    """Check a dictionary against `keys`: required keys, types, rangelists, ranges, nested subkeys.

    With `os_version`, keys that version does not honour are skipped (neither required nor type-checked),
    as a device never reads them; without it every key counts. `json`: the value came from JSON (a
    declaration), where data and dates are text.
    """
    checker = _Checker(None if os_version is None else OSVersion.parse(os_version), json)
    checker.dictionary(keys, value, path)
    return Conformance(tuple(checker.issues), tuple(checker.skipped))


def _within(bounds: tuple[int | float | None, int | float | None], value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True  # bounds only constrain numbers (the type check has already run)
    low, high = bounds
    return (low is None or value >= low) and (high is None or value <= high)


class _Checker:
    def __init__(self, os_version: OSVersion | None, json: bool = False) -> None:
        self.os_version = os_version
        self.json = json
        self.issues: list[KeyIssue] = []
        self.skipped: list[SkippedKey] = []

    def _support(self, spec: KeySpec) -> Support:
        return Support.SUPPORTED if self.os_version is None else spec.ios.at(self.os_version)

    def dictionary(self, keys: Sequence[KeySpec], value: Mapping[str, Any], path: KeyPath) -> None:
        for spec in keys:
            if spec.name in value or spec.name == WILDCARD or not spec.required:
                continue
            if self._support(spec).honoured:
                where = (*path, spec.name)
                reason = f"required key {format_path(where)} is missing"
                self.issues.append(KeyIssue(where, Issue.MISSING, reason))
        for name, item in value.items():
            found = _find(keys, name) if isinstance(name, str) else None
            support = Support.UNKNOWN_KEY if found is None else self._support(found)
            if found is None or not support.honoured:
                self.skipped.append(SkippedKey((*path, name), support))
            else:
                self.value(found, item, (*path, name))

    def value(self, spec: KeySpec, value: Any, path: KeyPath) -> None:
        where = format_path(path)
        if not (spec.type.accepts_json(value) if self.json else spec.type.accepts(value)):
            reason = f"{where} must be {spec.type.value}, not {type(value).__name__}"
            self.issues.append(KeyIssue(path, Issue.WRONG_TYPE, reason))
        elif spec.rangelist is not None and value not in spec.rangelist:
            allowed = ", ".join(repr(choice) for choice in spec.rangelist)
            self.issues.append(KeyIssue(path, Issue.NOT_ALLOWED, f"{where} is {value!r}; allowed: {allowed}"))
        elif spec.range is not None and not _within(spec.range, value):
            low, high = spec.range
            self.issues.append(KeyIssue(path, Issue.NOT_ALLOWED, f"{where} is {value!r}; allowed: {low} to {high}"))
        elif spec.type is ValueType.DICTIONARY and spec.subkeys:
            self.dictionary(spec.subkeys, value, path)
        elif spec.type is ValueType.ARRAY and spec.item is not None:
            self.array(spec.item, value, path)

    def array(self, item: KeySpec, value: Sequence[Any], path: KeyPath) -> None:
        low, high = item.repetition or (None, None)
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            reason = f"{format_path(path)} has {len(value)} items; allowed: {low} to {high}"
            self.issues.append(KeyIssue(path, Issue.NOT_ALLOWED, reason))
        for index, element in enumerate(value):
            self.value(item, element, (*path, index))
