"""The admin's settings, as EPMM names them: Certificate, User-provided certificate, Email, Exchange.

Settings travel as JSON (admin API, CLI files, document store); `setting_from_json` validates every way in.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from enum import StrEnum
from typing import Any, ClassVar, get_args, get_type_hints

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mdm_protocol.osversion import OSVersion

from .contracts import AdminError
from .field_names import camel_name
from .variables import EMAIL, USERID, check_template


class SettingKind(StrEnum):
    CERTIFICATE = "certificate"
    USER_PROVIDED = "user_provided"
    EMAIL = "email"
    EXCHANGE = "exchange"


class Purpose(StrEnum):
    """What a user-provided certificate is for; EPMM wants one setting per purpose."""

    SMIME_SIGNING = "smime_signing"
    SMIME_ENCRYPTION = "smime_encryption"
    EMAIL = "email"
    EXCHANGE = "exchange"
    WIFI = "wifi"
    VPN = "vpn"


# Legacy V1 API certificate types and the purposes they stand for; "All" reaches every user-provided setting.
V1_CERTIFICATE_TYPES: dict[str, tuple[Purpose, ...]] = {
    "ALL": tuple(Purpose), "WIFI": (Purpose.WIFI,), "VPN": (Purpose.VPN,),
    "SMIMESIGNING": (Purpose.SMIME_SIGNING,), "SMIMEENCRYPTION": (Purpose.SMIME_ENCRYPTION,),
    "EMAIL": (Purpose.EMAIL,), "EXCHANGE": (Purpose.EXCHANGE,),
}


class MailAccountType(StrEnum):
    IMAP = "imap"
    POP = "pop"

    @property
    def apple(self) -> str:
        return {"imap": "EmailTypeIMAP", "pop": "EmailTypePOP"}[self.value]


class MailAuthentication(StrEnum):
    NONE = "none"
    PASSWORD = "password"
    CRAM_MD5 = "crammd5"
    NTLM = "ntlm"
    HTTP_MD5 = "httpmd5"

    @property
    def apple(self) -> str:
        return {"none": "EmailAuthNone", "password": "EmailAuthPassword", "crammd5": "EmailAuthCRAMMD5",
                "ntlm": "EmailAuthNTLM", "httpmd5": "EmailAuthHTTPMD5"}[self.value]


class AccountDelivery(StrEnum):
    """How an Email or Exchange setting reaches devices."""

    PROFILE = "profile"  # com.apple.mail.managed / com.apple.eas.account in a configuration profile
    DECLARATION = "declaration"  # DDM: com.apple.configuration.account.mail / .exchange
    AUTO = "auto"  # declarations on iOS 17+ (S/MIME in declarations), a profile below and when unknown

    def resolve(self, version: OSVersion | None) -> AccountDelivery:
        if self is AccountDelivery.AUTO:
            return AccountDelivery.DECLARATION if version is not None and version >= _IOS_17 else \
                AccountDelivery.PROFILE
        return self


_IOS_17 = OSVersion(17)  # S/MIME in account declarations (SPEC section 10)
PAST_DAYS_TO_SYNC = (0, 1, 3, 7, 14, 31)  # com.apple.eas.account MailNumberOfPastDaysToSync rangelist
MAX_TEXT = 1024
READ_ONLY_FIELDS = frozenset({"id", "setting_id", "kind", "version", "certificate_info"})


@dataclass(frozen=True)
class CertificateSetting:
    """A CA certificate pushed as `com.apple.security.root`, to verify mail senders' certificates."""

    kind: ClassVar[SettingKind] = SettingKind.CERTIFICATE
    name: str
    certificate: bytes  # DER, whatever the admin uploaded (PEM is converted)
    description: str = ""
    file_name: str | None = None


@dataclass(frozen=True)
class UserProvidedSetting:
    """Users upload their own P12 for it; Email/Exchange settings reference it. Never applied to labels."""

    kind: ClassVar[SettingKind] = SettingKind.USER_PROVIDED
    name: str
    purpose: Purpose
    description: str = ""
    display_name: str = ""  # shown as "Configuration" in the user portal; defaults to the name
    require_password: bool = True
    delete_private_keys_after_days: int | None = None  # None, or 1 to 15


@dataclass(frozen=True)
class SMIMEOptions:
    """EPMM's S/MIME section, shared by Email and Exchange; identities name user-provided settings."""

    enable_for_ios_9_3_3: bool = False  # "Enable for iOS 9.3.3 (or earlier)": the legacy SMIMEEnabled
    signing_enabled: bool = False
    signing_user_overrideable: bool = False
    signing_identity: str | None = None
    signing_identity_user_overrideable: bool = False
    encryption_by_default: bool = False
    encryption_by_default_user_overrideable: bool = False
    encryption_identity: str | None = None
    encryption_identity_user_overrideable: bool = False
    per_message_switch: bool = False

    @property
    def in_use(self) -> bool:
        return any(getattr(self, item.name) for item in fields(self))

    @property
    def encryption(self) -> bool:
        """Whether S/MIME encryption can reach mail (by default, per message, or via an identity)."""
        return self.encryption_by_default or self.per_message_switch or self.encryption_identity is not None


@dataclass(frozen=True)
class MailServer:
    host: str
    port: int | None = None
    use_ssl: bool = True
    username: str | None = "$USERID$"
    authentication: MailAuthentication = MailAuthentication.PASSWORD


@dataclass(frozen=True)
class EmailSetting:
    """An IMAP or POP account (`com.apple.mail.managed`); text fields may hold variables."""

    kind: ClassVar[SettingKind] = SettingKind.EMAIL
    name: str
    incoming: MailServer
    outgoing: MailServer
    description: str = ""
    account_type: MailAccountType = MailAccountType.IMAP
    account_description: str | None = None
    account_name: str | None = None
    email_address: str | None = f"${EMAIL}$"
    imap_path_prefix: str | None = None
    allow_move: bool = True
    block_third_party_apps: bool = False
    allow_recent_address_syncing: bool = True
    allow_mail_drop: bool = False
    smime: SMIMEOptions = field(default_factory=SMIMEOptions)
    delivery: AccountDelivery = AccountDelivery.PROFILE


@dataclass(frozen=True)
class ExchangeSetting:
    """An Exchange ActiveSync account (`com.apple.eas.account`); text fields may hold variables."""

    kind: ClassVar[SettingKind] = SettingKind.EXCHANGE
    name: str
    host: str | None = None  # may be absent only with OAuth and no sign-in URL (autodiscovery)
    description: str = ""
    account_description: str | None = None
    use_ssl: bool = True
    user_name: str = f"${USERID}$"
    email_address: str | None = f"${EMAIL}$"
    past_days_to_sync: int | None = None
    allow_move: bool = True
    block_third_party_apps: bool = False
    allow_recent_address_syncing: bool = True
    allow_mail_drop: bool = False
    use_oauth: bool = False
    oauth_sign_in_url: str | None = None
    oauth_token_request_url: str | None = None
    audio_call_app: str | None = None  # Communication Service Rules: default app for audio calls (iOS 10+)
    enable_mail: bool = True
    enable_contacts: bool = True
    enable_calendars: bool = True
    enable_reminders: bool = True
    enable_notes: bool = True
    smime: SMIMEOptions = field(default_factory=SMIMEOptions)
    delivery: AccountDelivery = AccountDelivery.PROFILE  # or declaration (DDM), or auto (DDM from iOS 17)


Setting = CertificateSetting | UserProvidedSetting | EmailSetting | ExchangeSetting
SETTING_CLASSES: dict[SettingKind, type] = {
    SettingKind.CERTIFICATE: CertificateSetting, SettingKind.USER_PROVIDED: UserProvidedSetting,
    SettingKind.EMAIL: EmailSetting, SettingKind.EXCHANGE: ExchangeSetting,
}


@dataclass(frozen=True)
class StoredSetting:
    """A setting as stored: its id, a version bumped on every update, and the setting itself."""

    setting_id: str
    version: int
    setting: Setting

    @property
    def kind(self) -> SettingKind:
        return self.setting.kind


def parse_kind(raw: Any) -> SettingKind:
    try:
        return SettingKind(raw)
    except ValueError:
        known = ", ".join(kind.value for kind in SettingKind)
        raise AdminError(f"kind must be one of {known}, not {raw!r}") from None


def setting_from_json(kind: SettingKind, body: Any) -> Setting:
    """Validate a JSON body into a setting; AdminError (400) names the first bad field.

    Unknown fields are refused (a typo must not silently drop an option); `id`, `kind` and `version` are
    tolerated so a body read from the API can be sent back after editing.
    """
    if not isinstance(body, dict):
        raise AdminError("a setting must be a JSON object")
    body = {key: value for key, value in body.items() if key not in READ_ONLY_FIELDS}
    setting = _read(SETTING_CLASSES[kind], body, "")
    if isinstance(setting, CertificateSetting):
        setting = replace(setting, certificate=read_certificate_file(setting.certificate))
    if isinstance(setting, UserProvidedSetting) and not setting.display_name:
        setting = replace(setting, display_name=setting.name)
    _check(setting)
    return setting


def setting_to_json(setting: Setting) -> dict[str, Any]:
    """The JSON body that `setting_from_json` reads back into an equal setting (bytes as base64)."""
    out: dict[str, Any] = {}
    for item in fields(setting):
        value = getattr(setting, item.name)
        if is_dataclass(value):
            value = setting_to_json(value)  # type: ignore[arg-type]
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        out[item.name] = value
    return out


def _read(cls: type, body: Any, where: str) -> Any:
    """Build dataclass `cls` from a JSON object, field by field, by each field's type hint."""
    if not isinstance(body, dict):
        raise AdminError(f"{where.rstrip('.') or 'setting'} must be a JSON object")
    known = [item.name for item in fields(cls)]
    unknown = sorted(set(body) - set(known))
    if unknown:
        shown = ", ".join(camel_name(name) for name in known)
        raise AdminError(f"unknown field {camel_name(where + unknown[0])} (known: {shown})")
    hints = get_type_hints(cls)
    values = {}
    for item in fields(cls):
        if item.name in body:
            values[item.name] = _convert(hints[item.name], body[item.name], where + item.name)
        elif item.default is MISSING and item.default_factory is MISSING:
            raise AdminError(f"{camel_name(where + item.name)} is required")
    return cls(**values)


def _convert(hint: Any, raw: Any, name: str) -> Any:
    choices = [arg for arg in get_args(hint) if arg is not type(None)] or [hint]
    kind = choices[0]
    if raw is None:
        if len(choices) < len(get_args(hint)):
            return None
        raise AdminError(f"{camel_name(name)} must not be null")
    if is_dataclass(kind):
        return _read(kind, raw, name + ".")
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        try:
            return kind(raw)
        except ValueError:
            raise AdminError(f"{camel_name(name)} must be one of {', '.join(kind)}, not {raw!r}") from None
    if kind is bytes:
        return decode_base64(raw, name)
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind is str and isinstance(raw, str):
        if len(raw) > MAX_TEXT or "\x00" in raw:
            raise AdminError(f"{camel_name(name)} must be text of at most {MAX_TEXT} characters without NUL")
        return raw
    expected = {bool: "true or false", int: "an integer", str: "a string"}.get(kind, kind.__name__)
    raise AdminError(f"{camel_name(name)} must be {expected}, not {type(raw).__name__}")


def _check(setting: Setting) -> None:
    if not setting.name.strip():
        raise AdminError("name must not be empty")
    if isinstance(setting, UserProvidedSetting):
        days = setting.delete_private_keys_after_days
        if days is not None and not 1 <= days <= 15:
            raise AdminError(f"deletePrivateKeysAfterDays must be empty (never) or 1 to 15, not {days}")
    elif isinstance(setting, EmailSetting | ExchangeSetting):
        _check_templates(setting)
        _check_smime(setting.smime)
    if isinstance(setting, EmailSetting):
        for side, server in (("incoming", setting.incoming), ("outgoing", setting.outgoing)):
            if not server.host.strip():
                raise AdminError(f"{side}.host must not be empty")
            if server.port is not None and not 1 <= server.port <= 65535:
                raise AdminError(f"{side}.port must be 1 to 65535, not {server.port}")
    if isinstance(setting, ExchangeSetting):
        _check_exchange(setting)


def _check_templates(setting: EmailSetting | ExchangeSetting) -> None:
    for name, value in _text_fields(setting):
        check_template(value, name)


def _text_fields(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for item in fields(value):
        inner = getattr(value, item.name)
        if isinstance(inner, str) and item.name not in ("name", "description"):
            out.append((prefix + item.name, inner))
        elif is_dataclass(inner):
            out.extend(_text_fields(inner, f"{prefix}{item.name}."))
    return out


def _check_smime(smime: SMIMEOptions) -> None:
    same = smime.signing_identity is not None and smime.signing_identity == smime.encryption_identity
    if same:
        raise AdminError("smime: signing and encryption need two user-provided settings (one per purpose)")


def _check_exchange(setting: ExchangeSetting) -> None:
    if not setting.host and not (setting.use_oauth and not setting.oauth_sign_in_url):
        raise AdminError("host is required unless useOauth is on without an oauthSignInUrl "
                         "(then the device finds the server by autodiscovery)")
    if setting.past_days_to_sync is not None and setting.past_days_to_sync not in PAST_DAYS_TO_SYNC:
        raise AdminError(f"pastDaysToSync must be one of {PAST_DAYS_TO_SYNC} (0 = no limit)")
    data_classes = (setting.enable_mail, setting.enable_contacts, setting.enable_calendars,
                    setting.enable_reminders, setting.enable_notes)
    if not any(data_classes):
        raise AdminError("at least one of enableMail, enableContacts, enableCalendars, enableReminders, "
                         "enableNotes must be on (iOS refuses an account with none)")
    if (setting.oauth_sign_in_url or setting.oauth_token_request_url) and not setting.use_oauth:
        raise AdminError("oauthSignInUrl and oauthTokenRequestUrl need useOauth on")


def read_certificate_file(data: bytes) -> bytes:
    """The DER of the one certificate in a PEM or DER file; AdminError for anything else."""
    if b"-----BEGIN" in data:
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise AdminError("the file looks like PEM but holds no readable X.509 certificate") from None
        if len(certificates) != 1:
            raise AdminError(f"the file holds {len(certificates)} certificates; upload one CA certificate")
        certificate = certificates[0]
    else:
        try:
            certificate = x509.load_der_x509_certificate(data)
        except ValueError:
            raise AdminError("the file is neither a PEM nor a DER X.509 certificate") from None
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = True  # old v1 roots carry no extensions at all
    except ValueError as exc:
        raise AdminError(f"the certificate's extensions cannot be read: {exc}") from None
    if not is_ca:
        raise AdminError("the certificate is not a CA (basicConstraints CA:FALSE); a Certificate setting "
                         "carries the CA that signed mail senders' certificates")
    return certificate.public_bytes(Encoding.DER)


def decode_base64(raw: Any, field_name: str) -> bytes:
    if not isinstance(raw, str) or not raw:
        raise AdminError(f"{camel_name(field_name)} must be a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise AdminError(f"{camel_name(field_name)} is not valid base64") from None
