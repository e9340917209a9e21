"""Typed view of Apple's declaration schema (generated `_declaration_catalogue`) and the declaration validator.

A device judges each declaration it fetches by Type, payload keys, types and required keys at its OS version;
an invalid one gets status reasons (Apple's `Code`s, declarationbase.yaml). Kinds and validity: mdm_protocol.ddm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any

from ._declaration_catalogue import BASE_KEYS, CREDENTIALS, DECLARATIONS, REASONS, STATUS_ITEMS
from .ddm import DeclarationKind, StatusReason, Validity
from .key_catalogue import IOSSupport, KeySpec, Support, check_keys, format_path
from .osversion import OSVersion

REASON_CODES = frozenset(REASONS)


@dataclass(frozen=True, slots=True)
class Reason:
    """One status reason: an Apple code, what happened, and the code's details (declarationbase.yaml)."""

    code: str
    description: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = REASONS.get(self.code)
        if known is None:
            raise ValueError(f"{self.code!r} is not a reason code of the schema")
        extra = set(self.details) - set(known["details"])
        if extra:
            raise ValueError(f"{self.code} has no details {sorted(extra)}; the schema lists {known['details']}")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def status_reason(self) -> StatusReason:
        """The reason as a status report carries it (mdm_protocol.ddm)."""
        return StatusReason(self.code, self.description, dict(self.details) if self.details else None)

    def to_status(self) -> dict[str, Any]:
        """As management.declarations `reasons[]` spells it (lower-case keys)."""
        return self.status_reason().to_json()

    def to_error(self) -> dict[str, Any]:
        """As a status report's `Errors[].Reasons[]` spells it."""
        return self.status_reason().to_json(title_case=True)


@dataclass(frozen=True, slots=True)
class DeclarationSpec:
    declaration_type: str
    kind: DeclarationKind
    title: str | None
    apply: str | None  # "single", "multiple", "combined" (configurations)
    ios: IOSSupport
    allowed_enrollments: tuple[str, ...] | None
    keys: tuple[KeySpec, ...]
    # (key path, asset types) of every key naming an asset declaration, e.g. SMIME.Signing.IdentityAssetReference
    asset_references: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]


@cache
def _specs() -> dict[str, DeclarationSpec]:
    out = {}
    for name, data in DECLARATIONS.items():
        ios = data["ios"]
        enrollments = ios["allowed_enrollments"]
        out[name] = DeclarationSpec(
            name, DeclarationKind(data["kind"]), data["title"], data["apply"], IOSSupport.from_data(ios),
            None if enrollments is None else tuple(enrollments),
            tuple(KeySpec.from_data(entry) for entry in data["keys"]),
            tuple((tuple(path), tuple(types)) for path, types in data["asset_references"]),
        )
    return out


@cache
def _base() -> tuple[KeySpec, ...]:
    return tuple(KeySpec.from_data(entry) for entry in BASE_KEYS)


@cache
def _credentials() -> dict[str, tuple[IOSSupport, tuple[KeySpec, ...]]]:
    return {name: (IOSSupport.from_data(data["ios"]), tuple(KeySpec.from_data(entry) for entry in data["keys"]))
            for name, data in CREDENTIALS.items()}


def declaration_types() -> tuple[str, ...]:
    return tuple(_specs())


def declaration_spec(declaration_type: str) -> DeclarationSpec | None:
    return _specs().get(declaration_type) if isinstance(declaration_type, str) else None


def status_item_ios(name: str) -> IOSSupport | None:
    """A status item's iOS facts (None when the schema has no such item): a device reports it only where
    `.at(version)` is honoured."""
    data = STATUS_ITEMS.get(name)
    return None if data is None else IOSSupport.from_data(data["ios"])


def status_item_names() -> tuple[str, ...]:
    return tuple(STATUS_ITEMS)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a device makes of one declaration document: valid or not, why, and the keys it did not read."""

    identifier: str | None
    server_token: str | None
    declaration_type: str | None
    valid: bool
    reasons: tuple[Reason, ...] = ()
    payload: Mapping[str, Any] = field(default_factory=dict)
    ignored_keys: tuple[str, ...] = ()  # known keys this OS version does not read ("SMIME" before iOS 17)

    @property
    def validity(self) -> Validity:
        return Validity.VALID if self.valid else Validity.INVALID


def _ids(identifier: str | None, token: str | None) -> dict[str, str]:
    return {name: value for name, value in (("Identifier", identifier), ("ServerToken", token)) if value}


def _text(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    return value if isinstance(value, str) else None


def validate_declaration(document: Any, os_version: OSVersion | str, *, kind: DeclarationKind | None = None,
                         enrollment: str | None = None) -> Verdict:
    """Judge a decoded declaration (JSON) as iOS `os_version` would; `kind` is the class it was fetched as,
    `enrollment` the device's enrollment type ("supervised", "device", "user") where the schema restricts it."""
    if not isinstance(document, Mapping):
        why = f"a declaration is a JSON object, not {type(document).__name__}"
        return Verdict(None, None, None, False, (Reason("Error.InvalidPayload", why),))
    identifier, token = _text(document, "Identifier"), _text(document, "ServerToken")
    declaration_type = _text(document, "Type")
    ids = _ids(identifier, token)
    base = check_keys(_base(), document, os_version, json=True)
    if base.issues:
        why = "; ".join(issue.reason for issue in base.issues)
        return Verdict(identifier, token, declaration_type, False, (Reason("Error.InvalidPayload", why, ids),))
    spec = declaration_spec(declaration_type or "")
    refusal = _unsupported(spec, declaration_type, OSVersion.parse(os_version), kind, enrollment)
    if refusal is not None:
        reason = Reason("Error.ConfigurationNotSupported", refusal, ids)
        return Verdict(identifier, token, declaration_type, False, (reason,))
    assert spec is not None
    payload = document["Payload"]
    checked = check_keys(spec.keys, payload, os_version, json=True)
    reasons = _payload_reasons(checked.issues, [item.path for item in checked.skipped
                                                if item.support is Support.UNKNOWN_KEY])
    ignored = tuple(format_path(item.path) for item in checked.skipped if item.support is not Support.UNKNOWN_KEY)
    return Verdict(identifier, token, declaration_type, not reasons, reasons, payload, ignored)


def _unsupported(spec: DeclarationSpec | None, declaration_type: str | None, version: OSVersion,
                 kind: DeclarationKind | None, enrollment: str | None) -> str | None:
    if spec is None:
        return f"declaration type {declaration_type!r} is not known to iOS {version}"
    if kind is not None and spec.kind is not kind:
        return f"{spec.declaration_type} is a {spec.kind.value} declaration, fetched as a {kind.value}"
    support = spec.ios.at(version)
    if not support.honoured:
        since = spec.ios.introduced
        when = "does not exist on iOS" if since is None else (
            f"arrived in iOS {since}" if support is Support.NOT_YET else f"was removed in iOS {spec.ios.removed}")
        return f"{spec.declaration_type} is not supported on iOS {version}: it {when}"
    if enrollment is not None and spec.allowed_enrollments is not None and enrollment not in spec.allowed_enrollments:
        allowed = ", ".join(spec.allowed_enrollments)
        return f"{spec.declaration_type} is not allowed on a {enrollment} enrollment (only {allowed})"
    return None


def _payload_reasons(issues: Sequence[Any], unknown: Sequence[tuple[str | int, ...]]) -> tuple[Reason, ...]:
    out = []
    if issues:
        why = "; ".join(issue.reason for issue in issues)
        out.append(Reason("Error.ConfigurationCannotBeDeserialized", f"the payload does not match its schema: {why}",
                          {"Error": why}))
    if unknown:
        paths = [format_path(("Payload", *path)) for path in unknown]
        out.append(Reason("Error.UnknownPayloadKeys", f"unknown payload keys: {', '.join(paths)}",
                          {"UnknownPayloadKeys": paths}))
    return tuple(out)


def validate_credential(document: Any, credential_type: str, os_version: OSVersion | str) -> tuple[str, ...]:
    """Problems of an asset's fetched data (`{"Type": "com.apple.credential.identity", ...}`); () when fine."""
    known = _credentials().get(credential_type)
    if known is None:
        return (f"credential type {credential_type!r} is not in the schema",)
    if not isinstance(document, Mapping):
        return (f"the credential is a JSON object, not {type(document).__name__}",)
    if document.get("Type") != credential_type:
        return (f"the credential's Type is {document.get('Type')!r}, expected {credential_type!r}",)
    ios, keys = known
    if not ios.at(os_version).honoured:
        return (f"{credential_type} is not supported on iOS {OSVersion.parse(os_version)}",)
    body = {name: value for name, value in document.items() if name != "Type"}
    return tuple(issue.reason for issue in check_keys(keys, body, os_version, json=True).issues)
