"""Configuration profiles: the Payload/Profile model, `.mobileconfig` bytes, and validation as iOS does it.

A refused profile raises ProfileError: chain MCInstallationErrorDomain 4000 "Invalid Profile", then the cause.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import EAS, INSTALLATION, PAYLOAD, PROFILE, KnownError, PlistError, ProfileError, error_chain
from .key_catalogue import (
    COMMON,
    TOP_LEVEL,
    WILDCARD,
    Issue,
    KeyIssue,
    KeyPath,
    Support,
    ValueType,
    check_keys,
    format_path,
    has_payload_spec,
    payload_spec,
)
from .osversion import OSVersion
from .plist import decode_plist, encode_plist

PROFILE_TYPE = "Configuration"
# Model fields of a payload and of a profile; everything else lives in `content` / `extra`.
PAYLOAD_FIELDS = ("PayloadType", "PayloadIdentifier", "PayloadUUID", "PayloadVersion", "PayloadDisplayName",
                  "PayloadDescription", "PayloadOrganization")
# Order matters: from PayloadDisplayName on, these follow Profile's optional fields.
PROFILE_FIELDS = ("PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID", "PayloadContent",
                  "PayloadDisplayName", "PayloadDescription", "PayloadOrganization",
                  "PayloadRemovalDisallowed", "PayloadScope")


def plist_copy(value: Any) -> Any:
    """A deep copy in plist shapes (tuples become lists, mappings dicts) so values survive a round trip."""
    if isinstance(value, Mapping):
        return {key: plist_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plist_copy(item) for item in value]
    return value


def _optional(out: dict[str, Any], pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    out.update((key, value) for key, value in pairs if value is not None)
    return out


@dataclass(frozen=True, slots=True)
class Payload:
    """One payload dictionary: its common keys as fields, its type-specific keys in `content`."""

    payload_type: str
    identifier: str
    uuid: str
    content: Mapping[str, Any] = field(default_factory=dict)
    display_name: str | None = None
    description: str | None = None
    organization: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        clash = sorted(set(self.content) & set(PAYLOAD_FIELDS))
        if clash:
            raise ProfileError(f"payload content must not hold {', '.join(clash)}: they are Payload fields")
        object.__setattr__(self, "content", MappingProxyType(plist_copy(self.content)))

    def to_plist(self) -> dict[str, Any]:
        out = {"PayloadType": self.payload_type, "PayloadVersion": self.version,
               "PayloadIdentifier": self.identifier, "PayloadUUID": self.uuid}
        _optional(out, [("PayloadDisplayName", self.display_name), ("PayloadDescription", self.description),
                        ("PayloadOrganization", self.organization)])
        out.update(plist_copy(self.content))
        return out

    @classmethod
    def from_plist(cls, item: Mapping[str, Any]) -> Payload:
        """Build from a payload dictionary that `validate_profile` has already accepted."""
        content = {key: value for key, value in item.items() if key not in PAYLOAD_FIELDS}
        return cls(item["PayloadType"], item["PayloadIdentifier"], item["PayloadUUID"], content,
                   item.get("PayloadDisplayName"), item.get("PayloadDescription"),
                   item.get("PayloadOrganization"), item["PayloadVersion"])


@dataclass(frozen=True, slots=True)
class Profile:
    """A configuration profile; `extra` holds other top-level keys (ConsentText, RemovalDate, IsEncrypted)."""

    identifier: str
    uuid: str
    payloads: Sequence[Payload] = ()
    display_name: str | None = None
    description: str | None = None
    organization: str | None = None
    removal_disallowed: bool | None = None
    scope: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra) & set(PROFILE_FIELDS))
        if clash:
            raise ProfileError(f"profile extra must not hold {', '.join(clash)}: they are Profile fields")
        object.__setattr__(self, "payloads", tuple(self.payloads))
        object.__setattr__(self, "extra", MappingProxyType(plist_copy(self.extra)))

    @property
    def encrypted(self) -> bool:
        return self.extra.get("IsEncrypted") is True

    def payload_by_uuid(self, uuid: str) -> Payload | None:
        return next((payload for payload in self.payloads if payload.uuid == uuid), None)

    def payloads_of_type(self, payload_type: str) -> tuple[Payload, ...]:
        return tuple(payload for payload in self.payloads if payload.payload_type == payload_type)

    def to_plist(self) -> dict[str, Any]:
        out: dict[str, Any] = {"PayloadType": PROFILE_TYPE, "PayloadVersion": 1,
                               "PayloadIdentifier": self.identifier, "PayloadUUID": self.uuid}
        # An encrypted profile carries EncryptedPayloadContent instead.
        if self.payloads or not self.encrypted:
            out["PayloadContent"] = [payload.to_plist() for payload in self.payloads]
        _optional(out, [("PayloadDisplayName", self.display_name), ("PayloadDescription", self.description),
                        ("PayloadOrganization", self.organization),
                        ("PayloadRemovalDisallowed", self.removal_disallowed), ("PayloadScope", self.scope)])
        out.update(plist_copy(self.extra))
        return out

    @classmethod
    def from_plist(cls, plist: Mapping[str, Any]) -> Profile:
        """Build from a profile dictionary that `validate_profile` has already accepted."""
        payloads = tuple(Payload.from_plist(item) for item in plist.get("PayloadContent", ()))
        extra = {key: value for key, value in plist.items() if key not in PROFILE_FIELDS}
        get = plist.get
        return cls(plist["PayloadIdentifier"], plist["PayloadUUID"], payloads, get("PayloadDisplayName"),
                   get("PayloadDescription"), get("PayloadOrganization"), get("PayloadRemovalDisallowed"),
                   get("PayloadScope"), extra)


def encode_profile(profile: Profile) -> bytes:
    """XML plist bytes, what a `.mobileconfig` file holds. Not validated: servers may send bad profiles."""
    return encode_plist(profile.to_plist())


def parse_profile(data: bytes, *, os_version: OSVersion | str | None = None) -> Profile:
    """Decode and validate `.mobileconfig` bytes; ProfileError (with its ErrorChain) when iOS would refuse."""
    return validate_profile(data, os_version=os_version).profile


@dataclass(frozen=True, slots=True)
class IgnoredKey:
    """A key a device would not read (logged, never an error); `path` () means the whole payload."""

    payload_identifier: str | None  # None: the profile's top level
    payload_type: str
    path: KeyPath
    support: Support

    def describe(self) -> str:
        what = format_path(self.path) or "payload"
        where = self.payload_identifier or "profile"
        return f"{where} ({self.payload_type}): {what} ignored ({self.support.value})"


@dataclass(frozen=True, slots=True)
class ProfileValidation:
    profile: Profile
    ignored: tuple[IgnoredKey, ...]


_INVALID = "Invalid Profile"  # what iOS logs for 4000 and for an unparseable profile's 1000


def _refuse(reason: str, cause: KnownError, description: str) -> ProfileError:
    return ProfileError(reason, error_chain(INSTALLATION[4000], (cause, description)))


def _as_plist(source: Profile | Mapping[str, Any] | bytes) -> dict[str, Any]:
    if isinstance(source, Profile):
        return source.to_plist()
    if isinstance(source, bytes | bytearray | memoryview):
        try:
            source = decode_plist(bytes(source))
        except PlistError as exc:
            raise _refuse(f"profile is not a property list: {exc.reason}", PROFILE[1000], _INVALID) from None
    if not isinstance(source, Mapping):
        raise _refuse(f"profile must be a dictionary, not {type(source).__name__}", PROFILE[1000], _INVALID)
    plist = dict(source)
    content = plist.get("PayloadContent")
    if isinstance(content, list | tuple):
        plist["PayloadContent"] = [_integral_version(item) for item in content]
    return plist


def _integral_version(item: Any) -> Any:
    # Apple's own published payload examples write PayloadVersion as <real>1</real> and iOS installs them: a
    # whole-number real is read as that integer (a fractional one stays a wrong type).
    version = item.get("PayloadVersion") if isinstance(item, Mapping) else None
    if isinstance(version, float) and version.is_integer():
        return {**item, "PayloadVersion": int(version)}
    return item


def validate_profile(source: Profile | Mapping[str, Any] | bytes, *,
                     os_version: OSVersion | str | None = None) -> ProfileValidation:
    """Check a profile as iOS would before installing it; raise ProfileError with the ErrorChain it reports.

    Unknown keys and keys `os_version` does not honour are not errors: they come back in `ignored`.
    """
    version = None if os_version is None else OSVersion.parse(os_version)
    plist = _as_plist(source)
    ignored = _check_top_level(plist, version)
    for index, item in enumerate(plist.get("PayloadContent", ())):
        ignored.extend(check_payload(item, os_version=version, index=index))
    _check_unique(plist.get("PayloadContent", ()))
    return ProfileValidation(Profile.from_plist(plist), tuple(ignored))


# The profile domain has no "unsupported value" code (SPEC 5), so a wrong PayloadType/PayloadVersion is 1000.
_TOP_LEVEL_CODES = {Issue.MISSING: PROFILE[1002], Issue.WRONG_TYPE: PROFILE[1003],
                    Issue.NOT_ALLOWED: PROFILE[1000]}
_PAYLOAD_CODES = {Issue.MISSING: PAYLOAD[2002], Issue.WRONG_TYPE: PAYLOAD[2003],
                  Issue.NOT_ALLOWED: PAYLOAD[2004]}


def _top_level_description(issue: KeyIssue) -> str:
    name = format_path(issue.path)
    if issue.issue is Issue.MISSING:
        return f"The required field “{name}” is missing."
    if issue.issue is Issue.WRONG_TYPE:
        return f"The field “{name}” is invalid."
    return f"The field “{name}” has an unsupported value."


@functools.cache
def _payloads_free_form(version: OSVersion | None) -> bool:
    """Whether TopLevel.yaml's PayloadContent items are dictionaries of any keys, read as such by `version`:
    then the top-level check finds nothing inside a payload (each gets its own schema's check after it)."""
    spec = next((key for key in payload_spec(TOP_LEVEL).keys if key.name == "PayloadContent"), None)
    item = spec.item if spec is not None else None
    if item is None or item.type is not ValueType.DICTIONARY or len(item.subkeys) != 1:
        return False
    free = item.subkeys[0]
    return (free.name == WILDCARD and free.type is ValueType.ANY and free.rangelist is None and not free.subkeys
            and (version is None or free.ios.at(version).honoured))


def _top_level_view(plist: dict[str, Any], version: OSVersion | None) -> dict[str, Any]:
    """`plist` with its payload dictionaries emptied when the top-level check would find nothing in them
    (string keys, free-form items): the same result, without walking every payload's keys twice."""
    content = plist.get("PayloadContent")
    if not isinstance(content, list | tuple) or not _payloads_free_form(version):
        return plist
    emptied = [{} if isinstance(item, Mapping) and all(isinstance(key, str) for key in item) else item
               for item in content]
    return {**plist, "PayloadContent": emptied}


def _check_top_level(plist: dict[str, Any], version: OSVersion | None) -> list[IgnoredKey]:
    conformance = check_keys(payload_spec(TOP_LEVEL).keys, _top_level_view(plist, version), version)
    issues = list(conformance.issues)
    if plist.get("IsEncrypted") is True:
        # TopLevel.yaml: PayloadContent "isn't needed" when IsEncrypted; the encrypted form must be there.
        issues = [issue for issue in issues if issue.path != ("PayloadContent",)]
        if "PayloadContent" not in plist and "EncryptedPayloadContent" not in plist:
            reason = "required key EncryptedPayloadContent is missing (IsEncrypted is true)"
            issues.insert(0, KeyIssue(("EncryptedPayloadContent",), Issue.MISSING, reason))
    if issues:
        issue = issues[0]
        known = _TOP_LEVEL_CODES[issue.issue]
        raise _refuse(f"profile: {issue.reason}", known, _top_level_description(issue))
    return [IgnoredKey(None, TOP_LEVEL, skipped.path, skipped.support) for skipped in conformance.skipped]


def _payload_name(item: Mapping[str, Any], index: int | None) -> str:
    for key in ("PayloadDisplayName", "PayloadIdentifier"):
        if isinstance(value := item.get(key), str):
            return value
    return f"#{index}" if index is not None else "payload"


def _payload_description(issue: Issue, name: str, key: str) -> str:
    if issue is Issue.MISSING:
        return f"The payload “{name}” is missing the required field “{key}”."
    if issue is Issue.WRONG_TYPE:
        return f"The field “{key}” in the payload “{name}” is invalid."
    return f"The field “{key}” in the payload “{name}” has an unsupported value."


def _payload_support(payload_type: Any, version: OSVersion | None) -> Support:
    if not isinstance(payload_type, str) or payload_type in (TOP_LEVEL, COMMON):
        return Support.UNKNOWN_KEY
    if not has_payload_spec(payload_type):
        return Support.UNKNOWN_KEY
    ios = payload_spec(payload_type).ios
    if ios.introduced is None:  # n/a on iOS whatever the version (and with none given: validation is for iOS)
        return Support.NOT_ON_IOS
    return Support.SUPPORTED if version is None else ios.at(version)


def _not_on_ios(payload_type: str, name: str) -> ProfileError:
    """A payload type Apple's schema gives no iOS support (macOS-only and the like): refused, not ignored.

    Our decision, not a captured chain (no device log or errors catalogue entry found for it): the type is an
    unsupported value of the payload's PayloadType, the 4000 ← MCPayloadErrorDomain 2004 chain of a bad value.
    """
    description = _payload_description(Issue.NOT_ALLOWED, name, "PayloadType")
    reason = f"payload {name}: PayloadType {payload_type} is not available on iOS (macOS or other platforms only)"
    return _refuse(reason, PAYLOAD[2004], description)


def check_payload(item: Mapping[str, Any], *, os_version: OSVersion | str | None = None,
                  index: int | None = None) -> list[IgnoredKey]:
    """Check one payload dictionary against its schema and SPEC rules; ProfileError if iOS would refuse it."""
    version = None if os_version is None else OSVersion.parse(os_version)
    if not isinstance(item, Mapping):  # what the top-level check reports, where the OS version reads the array
        issue = KeyIssue(("PayloadContent",) if index is None else ("PayloadContent", index), Issue.WRONG_TYPE,
                         f"a payload must be a dictionary, not {type(item).__name__}")
        raise _refuse(f"profile: {issue.reason}", PROFILE[1003], _top_level_description(issue))
    payload_type = item.get("PayloadType")
    support = _payload_support(payload_type, version)
    if support is Support.NOT_ON_IOS:
        raise _not_on_ios(str(payload_type), _payload_name(item, index))
    # Only a str PayloadType can be honoured (_payload_support), so `known` is it or the common keys.
    known = payload_type if support.honoured and isinstance(payload_type, str) else COMMON
    spec = payload_spec(known)
    conformance = check_keys(spec.keys, item, version)
    name = _payload_name(item, index)
    if conformance.issues:
        issue = conformance.issues[0]
        raise _refuse(f"payload {name}: {issue.reason}", _PAYLOAD_CODES[issue.issue],
                      _payload_description(issue.issue, name, format_path(issue.path)))
    rule = _PAYLOAD_RULES.get(known) if support.honoured else None
    refusal = rule(item, version) if rule else None
    if refusal is not None:
        known_error, reason = refusal
        description = f"{known_error.description} (payload “{name}”)"
        raise _refuse(f"payload {name}: {reason}", known_error, description)
    identifier = item.get("PayloadIdentifier")
    if not support.honoured:  # iOS installs an unknown payload type but reads nothing in it
        return [IgnoredKey(identifier, str(payload_type), (), support)]
    return [IgnoredKey(identifier, known, skip.path, skip.support) for skip in conformance.skipped]


def _check_unique(items: Sequence[Mapping[str, Any]]) -> None:
    for key, known in (("PayloadUUID", PROFILE[1007]), ("PayloadIdentifier", PROFILE[1008])):
        seen: set[str] = set()
        for item in items:
            value = item[key]
            if value in seen:
                noun = "UUID" if key == "PayloadUUID" else "identifier"
                description = f"The payload {noun} “{value}” is used more than once in the profile."
                reason = f"profile: {key} {value!r} is used by more than one payload"
                raise _refuse(reason, known, description)
            seen.add(value)


_Refusal = tuple[KnownError, str]
_ACCESS_RIGHTS_ALL = 8191  # the OR of every documented bit, 1 through 4096


def _mdm_rules(item: Mapping[str, Any], version: OSVersion | None) -> _Refusal | None:
    """com.apple.mdm.yaml AccessRights text: not 0, 2 needs 1, 128 needs 64 (only documented bits)."""
    rights = item.get("AccessRights")
    if rights is None:
        return None
    if rights == 0 or rights & ~_ACCESS_RIGHTS_ALL:
        return PAYLOAD[2004], f"AccessRights {rights} must be a non-zero OR of documented bits (1 to 4096)"
    if rights & 2 and not rights & 1:
        return PAYLOAD[2004], f"AccessRights {rights} has 2 (install/remove profiles) without 1 (inspect)"
    if rights & 128 and not rights & 64:
        return PAYLOAD[2004], f"AccessRights {rights} has 128 (install provisioning profiles) without 64"
    return None


_EAS_DATA_CLASSES = ("EnableMail", "EnableContacts", "EnableCalendars", "EnableReminders", "EnableNotes")


def _honours(payload_type: str, key: str, version: OSVersion | None) -> bool:
    if version is None:
        return True
    spec = payload_spec(payload_type).key(key)
    if spec is None:  # a rule naming a key its schema lacks: a bug here, not in the profile
        raise KeyError(f"{payload_type} has no key {key}")
    return spec.ios.at(version).honoured


def _eas_rules(item: Mapping[str, Any], version: OSVersion | None) -> _Refusal | None:
    """SPEC 4 [DEC] rules that override com.apple.eas.account.yaml, where Host is merely optional."""
    eas = "com.apple.eas.account"
    oauth = item.get("OAuth") is True and _honours(eas, "OAuth", version)
    sign_in = "OAuthSignInURL" in item and _honours(eas, "OAuthSignInURL", version)
    if "Host" not in item and not (oauth and not sign_in):
        return EAS[21003], "Host is required unless OAuth is on without an OAuthSignInURL"
    if _honours(eas, "EnableMail", version) and all(item.get(key) is False for key in _EAS_DATA_CLASSES):
        return EAS[21009], "every data class (EnableMail, EnableContacts, ...) is switched off"
    return None


_PAYLOAD_RULES: dict[str, Callable[[Mapping[str, Any], OSVersion | None], _Refusal | None]] = {
    "com.apple.mdm": _mdm_rules,
    "com.apple.eas.account": _eas_rules,
}
