"""The console's setting forms: one field per setting field (nested ones dotted), in EPMM's wording.

A posted form becomes the JSON body the admin API takes, unchecked: `setting_from_json` validates it, so the
console refuses with the API's own messages. Text that is not a number is passed on as text for that reason.
"""

from __future__ import annotations

import base64
from dataclasses import MISSING, dataclass, fields, is_dataclass
from enum import StrEnum
from typing import Any, get_args, get_type_hints

from ..admin.settings import SETTING_CLASSES, SettingKind, StoredSetting, setting_to_json

KIND_TITLES = {SettingKind.CERTIFICATE: "Certificate", SettingKind.USER_PROVIDED: "User-provided certificate",
               SettingKind.EMAIL: "Email (IMAP/POP)", SettingKind.EXCHANGE: "Exchange (ActiveSync)"}
IDENTITY_FIELDS = {"smime.signing_identity": "smime_signing", "smime.encryption_identity": "smime_encryption"}
HIDDEN = frozenset({"file_name"})  # kept from the stored setting: the form never shows it
SECTIONS = {"": "General", "incoming": "Incoming mail server", "outgoing": "Outgoing mail server",
            "smime": "S/MIME"}
# EPMM's labels where they differ from the field's name; the rest read as the name in words.
LABELS = {
    "certificate": "File (the CA certificate, PEM or DER)",
    "display_name": "Display Name (shown as “Configuration” in the user portal)",
    "require_password": "Require Password",
    "delete_private_keys_after_days": "Delete Private Keys After Days (empty: never; 1–15)",
    "account_type": "Account Type", "account_description": "Account Description", "account_name": "Account Name",
    "email_address": "Email Address", "imap_path_prefix": "IMAP Path Prefix",
    "allow_move": "Allow moving messages between accounts",
    "block_third_party_apps": "Block email access to third-party apps",
    "allow_recent_address_syncing": "Allow Recent Address syncing (iOS 6+)",
    "allow_mail_drop": "Allow Mail Drop",
    "delivery": "Delivery: profile, declaration (DDM, iOS 15+; S/MIME from iOS 17), or auto (declaration from iOS 17)",
    "host": "Host", "port": "Port", "use_ssl": "Use SSL", "username": "User Name",
    "authentication": "Authentication",
    "user_name": "ActiveSync User Name", "past_days_to_sync": "Past days of mail to sync (0 = no limit)",
    "use_oauth": "Use OAuth (iOS 12.0+; then no password)", "oauth_sign_in_url": "OAuth Sign In URL",
    "oauth_token_request_url": "OAuth Token Request URL",
    "audio_call_app": "Communication Service Rules: default app for audio calls (iOS 10+)",
    "enable_mail": "Mail", "enable_contacts": "Contacts", "enable_calendars": "Calendars",
    "enable_reminders": "Reminders", "enable_notes": "Notes",
    "smime.enable_for_ios_9_3_3": "Enable for iOS 9.3.3 (or earlier)",
    "smime.signing_enabled": "S/MIME Signing",
    "smime.signing_user_overrideable": "S/MIME Signing User Overrideable",
    "smime.signing_identity": "Signing Identity",
    "smime.signing_identity_user_overrideable": "Signing Identity User Overrideable",
    "smime.encryption_by_default": "Encryption by Default",
    "smime.encryption_by_default_user_overrideable": "Encryption by Default User Overrideable",
    "smime.encryption_identity": "Encryption Identity (none: the user chooses from the certificates on the device)",
    "smime.encryption_identity_user_overrideable": "Encryption Identity User Overrideable (iOS 12.0+)",
    "smime.per_message_switch": "Per-Message Encryption Switch",
}


@dataclass(frozen=True, slots=True)
class FormField:
    name: str  # the JSON path, dotted: "smime.signing_identity"
    label: str
    widget: str  # text, number, checkbox, select, file, identity
    section: str
    choices: tuple[str, ...] = ()
    optional: bool = False


KIND_LABELS = {SettingKind.EXCHANGE: {"email_address": "ActiveSync User Email"}}


def form_fields(kind: SettingKind) -> list[FormField]:
    fields_ = _fields(SETTING_CLASSES[kind], "", {**LABELS, **KIND_LABELS.get(kind, {})})
    return [item for item in fields_ if item.name not in HIDDEN]


def _fields(cls: type, prefix: str, labels: dict[str, str]) -> list[FormField]:
    out: list[FormField] = []
    hints = get_type_hints(cls)
    for item in fields(cls):
        name = prefix + item.name
        args = get_args(hints[item.name])
        base = next((arg for arg in args if arg is not type(None)), hints[item.name])
        if is_dataclass(base):
            out.extend(_fields(base, name + ".", labels))  # type: ignore[arg-type]
            continue
        label = labels.get(name) or labels.get(item.name) or item.name.replace("_", " ").capitalize()
        section, optional = SECTIONS.get(prefix.rstrip("."), prefix), type(None) in args
        if name in IDENTITY_FIELDS:
            out.append(FormField(name, label, "identity", section, optional=True))
        elif isinstance(base, type) and issubclass(base, StrEnum):
            out.append(FormField(name, label, "select", section, tuple(base)))
        else:
            widget = {bool: "checkbox", int: "number", bytes: "file"}.get(base, "text")
            out.append(FormField(name, label, widget, section, optional=optional))
    return out


def form_values(stored: StoredSetting) -> dict[str, Any]:
    """The stored setting as the form shows it: dotted names to text or booleans (files are not shown)."""
    out: dict[str, Any] = {}
    _flatten(setting_to_json(stored.setting), "", out)
    return {name: ("" if value is None else value if isinstance(value, bool) else str(value))
            for name, value in out.items()}


def default_values(kind: SettingKind) -> dict[str, Any]:
    """A new setting's form: each field's default (use SSL, Mail on...), as `form_values` shows them."""
    out: dict[str, Any] = {}
    _defaults(SETTING_CLASSES[kind], "", out)
    return {name: ("" if value is None else value if isinstance(value, bool) else str(value))
            for name, value in out.items()}


def _defaults(cls: type, prefix: str, out: dict[str, Any]) -> None:
    hints = get_type_hints(cls)
    for item in fields(cls):
        base = next((arg for arg in get_args(hints[item.name]) if arg is not type(None)), hints[item.name])
        if is_dataclass(base):
            _defaults(base, f"{prefix}{item.name}.", out)  # type: ignore[arg-type]
        elif item.default is not MISSING:
            out[prefix + item.name] = item.default


def _flatten(body: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for name, value in body.items():
        if isinstance(value, dict):
            _flatten(value, f"{prefix}{name}.", out)
        else:
            out[prefix + name] = value


def body_from_form(kind: SettingKind, text: dict[str, str], files: dict[str, bytes],
                   current: StoredSetting | None = None) -> dict[str, Any]:
    """The API's JSON body for a posted form. Only fields the form has are sent, and the file keeps the
    stored one when none was chosen; whatever is wrong, the model's validator says it."""
    kept = setting_to_json(current.setting) if current is not None else {}
    body: dict[str, Any] = {name: kept[name] for name in HIDDEN if kept.get(name) is not None}
    for item in form_fields(kind):
        value = _value(item, text.get(item.name, ""), files.get(item.name, b""), kept)
        if value is not _ABSENT:
            _put(body, item.name.split("."), value)
    return body


_ABSENT = object()


def _value(item: FormField, raw: str, upload: bytes, kept: dict[str, Any]) -> Any:
    if item.widget == "checkbox":
        return bool(raw)
    if item.widget == "file":
        if upload:
            return base64.b64encode(upload).decode("ascii")
        return kept.get(item.name, _ABSENT)  # nothing chosen: the stored file, or "is required"
    if raw.strip() == "" and (item.optional or item.widget in ("number", "select")):
        return None if item.optional else _ABSENT  # an empty choice or number: the field's default
    if item.widget == "number":
        try:
            return int(raw.strip())
        except ValueError:
            return raw  # the validator names the field and says it must be an integer
    return raw


def _put(body: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        body = body.setdefault(part, {})
    body[path[-1]] = value
