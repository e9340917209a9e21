"""Renders a setting into the configuration profile one device receives: the admin model's `Renderer`.

Variables are substituted and users' P12s embedded; UUIDs derive from the content: equal input, equal output.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mdm_protocol.errors import MessageError, ProfileError
from mdm_protocol.osversion import OSVersion
from mdm_protocol.payloads import eas_payload, mail_payload, pkcs12_payload, root_certificate_payload
from mdm_protocol.profile import Payload, Profile, encode_profile, validate_profile

from ..storage.interface import Device
from .contracts import AdminError, Rendered, RenderError, User, UserDirectory
from .identities import IdentitySource
from .render_declarations import AssetURL, render_declarations
from .settings import (
    AccountDelivery,
    CertificateSetting,
    EmailSetting,
    ExchangeSetting,
    SettingKind,
    SMIMEOptions,
    StoredSetting,
)
from .settings_store import SettingsStore
from .variables import substitute

# Bump when the mapping from settings to keys changes: every device then gets the new rendering once.
RENDER_FORMAT = 1
_UUID_NAMESPACE = uuid.UUID("6f1d2c1e-5b7a-4c1e-9a55-6d6d73696d00")
IOS_10, IOS_12 = OSVersion(10), OSVersion(12)


@dataclass(frozen=True)
class RenderOptions:
    identifier_prefix: str = "com.mdmsim"
    organization: str | None = "mdmsim"
    # Where devices fetch asset data (DDM delivery); None: a renderer without DDM renders profiles only.
    asset_url: AssetURL | None = None


@dataclass(frozen=True)
class _Ref:
    """A payload's PayloadUUID, known only once the content hash is (it is derived from it)."""

    role: str


@dataclass(frozen=True)
class _Planned:
    role: str  # also the last part of the payload's PayloadIdentifier
    builder: Callable[..., Payload]
    arguments: dict[str, Any]


@dataclass
class _Plan:
    payloads: list[_Planned]
    warnings: list[str]
    keys_deleted: list[str] = field(default_factory=list)
    keys_expire: list[datetime] = field(default_factory=list)


def render_setting(stored: StoredSetting, device: Device, user: User | None, identities: IdentitySource,
                   options: RenderOptions = RenderOptions(), validated: set[tuple] | None = None) -> Rendered:
    """The profile for one device; RenderError when this device cannot have the setting.

    `validated` remembers profile shapes already checked against the schema for an OS version: whether iOS
    accepts a profile depends on which keys it holds, their types and the setting's own values, never on the
    substituted text or embedded P12 bytes, so devices after the first of a shape skip the full check.
    """
    setting, version = stored.setting, _os_version(device)
    if isinstance(setting, EmailSetting | ExchangeSetting) and options.asset_url is not None \
            and setting.delivery.resolve(version) is AccountDelivery.DECLARATION:
        declared = render_declarations(stored.setting_id, setting, device, user, identities, version,
                                       options.asset_url, options.identifier_prefix)
        return Rendered(stored.setting_id, declared.account_identifier, b"", declared.content_hash,
                        declared.warnings, declared.keys_deleted, declared.offered)
    if isinstance(setting, CertificateSetting):
        plan = _Plan([_Planned("root", root_certificate_payload,
                               {"der": setting.certificate, "file_name": setting.file_name or "ca.cer",
                                "display_name": setting.name})], [])
    elif isinstance(setting, EmailSetting | ExchangeSetting):
        plan = _account_plan(setting, device, user, identities, version)
    else:
        raise RenderError(f"setting {stored.setting_id} is a user-provided certificate setting; it reaches "
                          "devices through the Email/Exchange settings that name it as an S/MIME identity")
    identifier = f"{options.identifier_prefix}.setting.{stored.setting_id}"
    header = {"identifier": identifier, "display_name": setting.name,
              "description": setting.description or None, "organization": options.organization}
    content_hash = _content_hash(header, plan.payloads)
    uuids = {planned.role: _uuid(identifier, planned.role, content_hash) for planned in plan.payloads}
    payloads = [_build(planned, identifier, uuids) for planned in plan.payloads]
    profile = Profile(identifier, _uuid(identifier, "profile", content_hash), payloads, setting.name,
                      setting.description or None, options.organization)
    shape = _shape(stored, version, plan.payloads)
    if validated is None or shape not in validated:
        try:
            validate_profile(profile, os_version=version)
        except ProfileError as exc:
            reason = f"the profile for device {device.device_id} would be refused: {exc.reason}"
            raise RenderError(reason) from None
        if validated is not None:
            validated.add(shape)
    warnings = tuple(plan.warnings)
    return Rendered(stored.setting_id, identifier, encode_profile(profile), content_hash, warnings,
                    tuple(plan.keys_deleted), keys_expire_at=min(plan.keys_expire, default=None))


def _os_version(device: Device) -> OSVersion | None:
    try:
        return OSVersion.parse(device.facts["OSVersion"])
    except (KeyError, MessageError):
        return None  # unknown version: validate against the schema as a whole


def _account_plan(setting: EmailSetting | ExchangeSetting, device: Device, user: User | None,
                  identities: IdentitySource, version: OSVersion | None) -> _Plan:
    plan = _Plan([], [])
    refs = {}
    for role, setting_id in (("smime-signing", setting.smime.signing_identity),
                             ("smime-encryption", setting.smime.encryption_identity)):
        if setting_id is not None:
            refs[role] = _identity(plan, role, setting_id, device, user, identities)
    smime = _smime_arguments(setting.smime, refs.get("smime-signing"), refs.get("smime-encryption"))
    if isinstance(setting, EmailSetting):
        arguments = _mail_arguments(setting, device, user)
    else:
        arguments = _exchange_arguments(setting, device, user)
        if setting.use_oauth and version is not None and version < IOS_12:
            plan.warnings.append(f"Use OAuth needs iOS 12.0; this device runs {version}, so it will ask the "
                                 "user for a password")
    builder = mail_payload if isinstance(setting, EmailSetting) else eas_payload
    plan.payloads.append(_Planned("account", builder, {**arguments, **smime}))
    legacy_off = setting.smime.in_use and not setting.smime.enable_for_ios_9_3_3
    if legacy_off and version is not None and version < IOS_10:
        plan.warnings.append(f"S/MIME is configured but “Enable for iOS 9.3.3 (or earlier)” is off: this "
                             f"device runs {version} and will not use S/MIME")
    return plan


def _identity(plan: _Plan, role: str, setting_id: str, device: Device, user: User | None,
              identities: IdentitySource) -> _Ref | None:
    """Plan the user's P12 for a user-provided setting, or warn why the account goes without it."""
    if role == "smime-signing":
        consequence = "the user is prompted to choose a signing identity on the device"
    else:
        consequence = "the user must choose an encryption identity; without one encryption does not work"
    if user is None:
        plan.warnings.append(f"{role}: device {device.device_id} has no known user, so no identity from "
                             f"{setting_id} is embedded; {consequence}")
        return None
    lookup = identities.profile_identity(user.user_id, setting_id)
    if lookup.identity is None:
        plan.warnings.append(f"{role}: {lookup.reason}; {consequence}")
        if lookup.key_deleted:
            plan.keys_deleted.append(role)
        return None
    identity = lookup.identity
    if lookup.key_expires_at is not None:
        plan.keys_expire.append(lookup.key_expires_at)
    for planned in plan.payloads:  # V1 "All" uploads: one identity serving both purposes is installed once
        if planned.arguments.get("p12") == identity.p12:
            return _Ref(planned.role)
    plan.payloads.append(_Planned(role, pkcs12_payload, {
        "p12": identity.p12, "password": identity.password, "file_name": identity.file_name,
        "display_name": identity.display_name}))
    return _Ref(role)


def _smime_arguments(smime: SMIMEOptions, signing: _Ref | None, encryption: _Ref | None) -> dict[str, Any]:
    """EPMM's S/MIME options as the builders' keyword arguments (SPEC 4 "Seed settings → keys", SPEC 7).

    Old and new keys go side by side so every iOS version finds the one it honours: SMIMEEncryptionEnabled
    (10.x-11.x) next to SMIMEEncryptByDefault (12.0+), SMIMEEnablePerMessageSwitch (8.0-11.x) next to
    SMIMEEnableEncryptionPerMessageSwitch (12.0+). SMIMEEnabled is written only for the 9.3.3 switch.
    """
    if not smime.in_use:
        return {}
    out: dict[str, Any] = {
        "smime_signing_enabled": smime.signing_enabled,
        "smime_signing_user_overrideable": smime.signing_user_overrideable,
        "smime_signing_certificate_uuid_user_overrideable": smime.signing_identity_user_overrideable,
        "smime_encryption_enabled": smime.encryption_by_default,
        "smime_encrypt_by_default": smime.encryption_by_default,
        "smime_encrypt_by_default_user_overrideable": smime.encryption_by_default_user_overrideable,
        "smime_encryption_certificate_uuid_user_overrideable": smime.encryption_identity_user_overrideable,
        "smime_enable_per_message_switch": smime.per_message_switch,
        "smime_enable_encryption_per_message_switch": smime.per_message_switch,
    }
    if smime.enable_for_ios_9_3_3:
        out["smime_enabled"] = True
    if signing is not None:
        out["smime_signing_certificate_uuid"] = signing
    if encryption is not None:
        out["smime_encryption_certificate_uuid"] = encryption
    return out


def _mail_arguments(setting: EmailSetting, device: Device, user: User | None) -> dict[str, Any]:
    def text(value: str | None) -> str | None:
        return None if value is None else substitute(value, device, user)

    incoming, outgoing = setting.incoming, setting.outgoing
    imap = setting.account_type.value == "imap"
    return {
        "email_account_type": setting.account_type.apple,
        "email_account_description": text(setting.account_description) or setting.name,
        "email_account_name": text(setting.account_name), "email_address": text(setting.email_address),
        "incoming_mail_server_host_name": text(incoming.host),
        "incoming_mail_server_port_number": incoming.port,
        "incoming_mail_server_use_ssl": incoming.use_ssl,
        "incoming_mail_server_username": text(incoming.username),
        "incoming_mail_server_authentication": incoming.authentication.apple,
        "incoming_mail_server_imap_path_prefix": text(setting.imap_path_prefix) if imap else None,
        "outgoing_mail_server_host_name": text(outgoing.host),
        "outgoing_mail_server_port_number": outgoing.port,
        "outgoing_mail_server_use_ssl": outgoing.use_ssl,
        "outgoing_mail_server_username": text(outgoing.username),
        "outgoing_mail_server_authentication": outgoing.authentication.apple,
        **_common_account_flags(setting), "display_name": setting.name,
    }


def _exchange_arguments(setting: ExchangeSetting, device: Device, user: User | None) -> dict[str, Any]:
    def text(value: str | None) -> str | None:
        return None if value is None else substitute(value, device, user)

    rules = None
    if setting.audio_call_app:  # Communication Service Rules: the default app for audio calls
        rules = {"DefaultServiceHandlers": {"AudioCall": setting.audio_call_app}}
    return {
        "host": text(setting.host) or None, "user_name": text(setting.user_name),
        "email_address": text(setting.email_address), "ssl": setting.use_ssl,
        "oauth": True if setting.use_oauth else None,
        "oauth_sign_in_url": setting.oauth_sign_in_url,
        "oauth_token_request_url": setting.oauth_token_request_url,
        "mail_number_of_past_days_to_sync": setting.past_days_to_sync, "communication_service_rules": rules,
        "enable_mail": setting.enable_mail, "enable_contacts": setting.enable_contacts,
        "enable_calendars": setting.enable_calendars, "enable_reminders": setting.enable_reminders,
        "enable_notes": setting.enable_notes,
        **_common_account_flags(setting), "display_name": text(setting.account_description) or setting.name,
    }


def _common_account_flags(setting: EmailSetting | ExchangeSetting) -> dict[str, Any]:
    """iOS options both accounts share; EPMM's "allow"/"block" wording inverts Apple's "prevent"/"disable"."""
    return {"prevent_move": not setting.allow_move, "prevent_app_sheet": setting.block_third_party_apps,
            "disable_mail_recents_syncing": not setting.allow_recent_address_syncing,
            "allow_mail_drop": setting.allow_mail_drop}


def _content_hash(header: dict[str, Any], payloads: list[_Planned]) -> str:
    """SHA-256 over what the device would read, with payload UUIDs as roles: equal input, equal hash."""
    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return "sha256:" + hashlib.sha256(value).hexdigest()
        if isinstance(value, _Ref):
            return "uuid-of:" + value.role
        raise TypeError(type(value).__name__)

    content = {"format": RENDER_FORMAT, "profile": header,
               "payloads": [{"role": planned.role, "type": planned.builder.__name__,
                             "arguments": planned.arguments} for planned in payloads]}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=plain).encode("utf-8")).hexdigest()


def _shape(stored: StoredSetting, version: OSVersion | None, payloads: list[_Planned]) -> tuple:
    keys = tuple((planned.role, tuple(sorted(name for name, value in planned.arguments.items()
                                             if value is not None))) for planned in payloads)
    return stored.setting_id, stored.version, version, keys


def _uuid(identifier: str, role: str, content_hash: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{identifier}/{role}/{content_hash}")).upper()


def _build(planned: _Planned, identifier: str, uuids: dict[str, str]) -> Payload:
    arguments = {name: uuids[value.role] if isinstance(value, _Ref) else value
                 for name, value in planned.arguments.items()}
    try:
        payload_identifier = f"{identifier}.{planned.role}"
        return planned.builder(identifier=payload_identifier, uuid=uuids[planned.role], **arguments)
    except ProfileError as exc:
        raise RenderError(f"the {planned.role} payload would be refused: {exc.reason}") from None


class SettingsRenderer:
    """The `Renderer` that labels and Apply to Label use, over the settings, users and identity stores."""

    def __init__(self, settings: SettingsStore, users: UserDirectory, identities: IdentitySource,
                 options: RenderOptions = RenderOptions()) -> None:
        self.settings, self.users, self.identities, self.options = settings, users, identities, options
        self._validated: set[tuple] = set()  # profile shapes known to pass validation (see render_setting)

    def setting_kind(self, setting_id: str) -> str:
        return self.settings.get(setting_id).kind.value

    def check_applicable_to_label(self, setting_id: str) -> None:
        if self.settings.get(setting_id).kind is SettingKind.USER_PROVIDED:
            raise AdminError(f"setting {setting_id} is a user-provided certificate setting and must not be "
                             "applied to labels; apply the Email or Exchange setting that uses it instead")

    def render(self, setting_id: str, device: Device) -> Rendered:
        stored = self.settings.get(setting_id)
        user = self._user(device)
        return render_setting(stored, device, user, self.identities, self.options, self._validated)

    def smime_encryption(self, setting_id: str) -> bool:
        setting = self.settings.get(setting_id).setting
        return isinstance(setting, EmailSetting | ExchangeSetting) and setting.smime.encryption

    def account_key(self, setting_id: str, device: Device) -> tuple[str, str] | None:
        """(host, user name) as this device would get them; None if not Exchange or not renderable here."""
        setting = self.settings.get(setting_id).setting
        if not isinstance(setting, ExchangeSetting):
            return None
        try:
            user = self._user(device)
            host = substitute(setting.host or "", device, user).lower()
            return host, substitute(setting.user_name, device, user)
        except RenderError:
            return None  # the render itself fails for this device and is reported there

    def _user(self, device: Device) -> User | None:
        return self.users.get_user(device.user_id) if device.user_id else None
