"""Renders an Email or Exchange setting into DDM declarations: the account configuration (with its SMIME block
on iOS 17+), the assets it references (user identity, credentials, S/MIME identities) and one activation.

Asset data (the user's PKCS#12 and password, the account's user name) never enters a declaration: each asset
names a DataURL the server answers only to the device it was declared to (`DeclarationAssets`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mdm_protocol.ddm import Declaration, IdentityCredential, canonical_json, declarations_token
from mdm_protocol.osversion import OSVersion

from ..declarations import Offered
from ..storage.interface import Device
from .contracts import RenderError, User
from .identities import IdentitySource
from .settings import EmailSetting, ExchangeSetting, SMIMEOptions
from .variables import substitute

IOS_15, IOS_17 = OSVersion(15), OSVersion(17)
USERPASSWORD_CREDENTIAL = "com.apple.credential.usernameandpassword"
AssetURL = Callable[[str], str]  # asset identifier -> its DataURL on the device channel


@dataclass
class _Plan:
    identifier: str  # com.mdmsim.setting.<id>: every declaration's identifier starts with it
    version: OSVersion
    url: AssetURL
    offered: list[Offered] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keys_deleted: list[str] = field(default_factory=list)

    def asset(self, role: str, asset_type: str, payload: dict[str, Any], private: Mapping[str, Any] | None,
              source: str) -> str:
        identifier = f"{self.identifier}.{role}"
        self.offered.append(Offered(Declaration.create(asset_type, identifier, payload), source, private))
        return identifier

    def data_asset(self, role: str, asset_type: str, document: bytes, private: Mapping[str, Any],
                   source: str) -> str:
        """An asset whose data the device fetches from the server, authenticated as MDM (iOS 17+)."""
        identifier = f"{self.identifier}.{role}"
        reference = {"DataURL": self.url(identifier), "ContentType": "application/json", "Size": len(document),
                     "Hash-SHA-256": hashlib.sha256(document).hexdigest()}
        return self.asset(role, asset_type, {"Reference": reference, "Authentication": {"Type": "MDM"}},
                          private, source)


@dataclass(frozen=True)
class RenderedDeclarations:
    offered: tuple[Offered, ...]
    account_identifier: str
    content_hash: str
    warnings: tuple[str, ...]
    keys_deleted: tuple[str, ...]


def render_declarations(setting_id: str, setting: EmailSetting | ExchangeSetting, device: Device, user: User | None,
                        identities: IdentitySource, version: OSVersion | None, url: AssetURL,
                        prefix: str = "com.mdmsim") -> RenderedDeclarations:
    """The declarations of one account for one device; RenderError when the device cannot take them."""
    if version is None or version < IOS_15:
        shown = "an unknown iOS version" if version is None else f"iOS {version}"
        raise RenderError(f"device {device.device_id} runs {shown}: account declarations need iOS 15.0 "
                          "(choose delivery profile or auto)")
    plan = _Plan(f"{prefix}.setting.{setting_id}", version, url)

    def text(value: str | None) -> str | None:
        return None if value is None else substitute(value, device, user)

    if isinstance(setting, EmailSetting):
        account = _mail(setting, plan, setting_id, text)
        kind = "com.apple.configuration.account.mail"
    else:
        account = _exchange(setting, plan, setting_id, text)
        kind = "com.apple.configuration.account.exchange"
    smime = _smime(setting.smime, plan, setting_id, device, user, identities)
    if smime:
        account["SMIME"] = smime
    account_id = f"{plan.identifier}.account"
    plan.offered.append(Offered(Declaration.create(kind, account_id, account), setting_id))
    activation = {"StandardConfigurations": [account_id]}
    plan.offered.append(Offered(Declaration.create("com.apple.activation.simple", f"{plan.identifier}.activation",
                                                   activation), setting_id))
    declarations = [item.declaration for item in plan.offered]
    private = [dict(item.private or {}) for item in plan.offered]
    content_hash = hashlib.sha256(canonical_json([declarations_token(declarations), private])).hexdigest()
    return RenderedDeclarations(tuple(plan.offered), account_id, content_hash, tuple(plan.warnings),
                                tuple(plan.keys_deleted))


def _identity_asset(plan: _Plan, full_name: str | None, email: str | None, source: str) -> str | None:
    payload = {key: value for key, value in (("FullName", full_name), ("EmailAddress", email)) if value}
    return plan.asset("user-identity", "com.apple.asset.useridentity", payload, None, source) if payload else None


def _credentials(plan: _Plan, role: str, user_name: str | None, source: str) -> str | None:
    """A user-name credential asset (the user types the password). Its Authentication needs iOS 17."""
    if not user_name:
        return None
    if plan.version < IOS_17:
        plan.warnings.append(f"{role}: the user name reaches devices below iOS 17 only by the user typing it "
                             "(credential assets are fetched authenticated from iOS 17)")
        return None
    document = canonical_json({"Type": USERPASSWORD_CREDENTIAL, "UserName": user_name})
    return plan.data_asset(role, "com.apple.asset.credential.userpassword", document,
                           {"type": "userpassword", "userName": user_name}, source)


_AUTH = {"none": "None", "password": "Password", "crammd5": "CRAMMD5", "ntlm": "NTLM", "httpmd5": "HTTPMD5"}


def _mail(setting: EmailSetting, plan: _Plan, source: str, text: Callable[[str | None], str | None]) -> dict[str, Any]:
    account: dict[str, Any] = {"VisibleName": text(setting.account_description) or setting.name}
    reference = _identity_asset(plan, text(setting.account_name), text(setting.email_address), source)
    if reference:
        account["UserIdentityAssetReference"] = reference
    for side, server in (("Incoming", setting.incoming), ("Outgoing", setting.outgoing)):
        block: dict[str, Any] = {"HostName": text(server.host), "AuthenticationMethod": _AUTH[server.authentication]}
        if side == "Incoming":
            block["ServerType"] = setting.account_type.value.upper()
            if setting.account_type.value == "imap" and setting.imap_path_prefix:
                block["IMAPPathPrefix"] = text(setting.imap_path_prefix)
        if server.port is not None:
            block["Port"] = server.port
        credentials = _credentials(plan, f"{side.lower()}-credentials", text(server.username), source)
        if credentials:
            block["AuthenticationCredentialsAssetReference"] = credentials
        if not server.use_ssl:
            plan.warnings.append(f"{side.lower()}.use_ssl off has no declaration key: the account uses TLS")
        account[f"{side}Server"] = block
    _unexpressed(setting, plan)
    return account


def _exchange(setting: ExchangeSetting, plan: _Plan, source: str,
              text: Callable[[str | None], str | None]) -> dict[str, Any]:
    account: dict[str, Any] = {"VisibleName": text(setting.account_description) or setting.name,
                               "EnabledProtocolTypes": ["EAS"]}
    if setting.host:
        account["HostName"] = text(setting.host)
    reference = _identity_asset(plan, None, text(setting.email_address), source)
    if reference:
        account["UserIdentityAssetReference"] = reference
    credentials = _credentials(plan, "credentials", text(setting.user_name), source)
    if credentials:
        account["AuthenticationCredentialsAssetReference"] = credentials
    if setting.use_oauth:
        oauth: dict[str, Any] = {"Enabled": True}
        if setting.oauth_sign_in_url:
            oauth["SignInURL"] = setting.oauth_sign_in_url
        if setting.oauth_token_request_url:
            oauth["TokenRequestURL"] = setting.oauth_token_request_url
        account["OAuth"] = oauth
    for service, on in (("Mail", setting.enable_mail), ("Contacts", setting.enable_contacts),
                        ("Calendar", setting.enable_calendars), ("Reminders", setting.enable_reminders),
                        ("Notes", setting.enable_notes)):
        account[f"{service}ServiceActive"] = on
    if setting.past_days_to_sync is not None or setting.audio_call_app:
        plan.warnings.append("past_days_to_sync and audio_call_app have no declaration keys: not sent")
    _unexpressed(setting, plan)
    return account


def _unexpressed(setting: EmailSetting | ExchangeSetting, plan: _Plan) -> None:
    changed = [name for name, default in (("allow_move", True), ("block_third_party_apps", False),
                                         ("allow_recent_address_syncing", True), ("allow_mail_drop", False))
               if getattr(setting, name) != default]
    if changed:
        plan.warnings.append(f"{', '.join(changed)} have no declaration keys: the account uses iOS defaults")


def _smime(smime: SMIMEOptions, plan: _Plan, source: str, device: Device, user: User | None,
           identities: IdentitySource) -> dict[str, Any] | None:
    """EPMM's S/MIME options as the SMIME block (iOS 17+): Encryption.Enabled is encrypt-by-default, the
    per-message switch lets the user change it; identities are credential.identity assets."""
    if not smime.in_use:
        return None
    if plan.version < IOS_17:
        plan.warnings.append(f"S/MIME is configured, but account declarations carry it from iOS 17; this "
                             f"device runs {plan.version}: the account goes without S/MIME")
        return None
    signing: dict[str, Any] = {"Enabled": smime.signing_enabled,
                               "UserOverrideable": smime.signing_user_overrideable,
                               "IdentityUserOverrideable": smime.signing_identity_user_overrideable}
    encryption: dict[str, Any] = {"Enabled": smime.encryption_by_default,
                                  "UserOverrideable": smime.encryption_by_default_user_overrideable,
                                  "IdentityUserOverrideable": smime.encryption_identity_user_overrideable,
                                  "PerMessageSwitchEnabled": smime.per_message_switch}
    for block, role, setting_id in ((signing, "smime-signing", smime.signing_identity),
                                    (encryption, "smime-encryption", smime.encryption_identity)):
        if setting_id is not None:
            reference = _identity(plan, role, setting_id, device, user, identities, source)
            if reference:
                block["IdentityAssetReference"] = reference
    return {"Signing": signing, "Encryption": encryption}


def _identity(plan: _Plan, role: str, setting_id: str, device: Device, user: User | None,
              identities: IdentitySource, source: str) -> str | None:
    consequence = ("the user is prompted to choose a signing identity on the device" if role == "smime-signing"
                   else "the user must choose an encryption identity; without one encryption does not work")
    if user is None:
        plan.warnings.append(f"{role}: device {device.device_id} has no known user, so no identity from "
                             f"{setting_id} is declared; {consequence}")
        return None
    lookup = identities.profile_identity(user.user_id, setting_id)
    if lookup.identity is None:
        plan.warnings.append(f"{role}: {lookup.reason}; {consequence}")
        if lookup.key_deleted:
            plan.keys_deleted.append(role)
        return None
    identity = lookup.identity
    document = IdentityCredential(identity.p12, identity.password).encode()
    private = {"type": "identity", "user": user.user_id, "setting": setting_id}
    for item in plan.offered:  # one identity serving both purposes is declared once
        if item.private == private:
            return item.declaration.identifier
    return plan.data_asset(f"{role}-identity", "com.apple.asset.credential.identity", document, private, source)


class DeclarationAssets:
    """The `AssetData` of rendered declarations: each asset's document, rebuilt from its private note."""

    def __init__(self, identities: IdentitySource, user_of: Callable[[str], str | None]) -> None:
        self.identities, self.user_of = identities, user_of

    def asset_document(self, device_id: str, private: Mapping[str, Any]) -> bytes | None:
        kind = private.get("type")
        if kind == "userpassword":
            return canonical_json({"Type": USERPASSWORD_CREDENTIAL, "UserName": private["userName"]})
        if kind != "identity" or self.user_of(device_id) != private.get("user"):
            return None  # the device's user changed since: this user's identity is no longer its to fetch
        identity = self.identities.profile_identity(private["user"], private["setting"]).identity
        return None if identity is None else IdentityCredential(identity.p12, identity.password).encode()
