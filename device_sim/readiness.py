"""S/MIME readiness of each Email and Exchange account on a simulated device, by the rules in docs/readiness.md.

Pure: reads an account payload, the keychain and the user's choices; the machine recomputes on any change.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from mdm_protocol.key_catalogue import key_support
from mdm_protocol.osversion import OSVersion

from .ddm_state import DdmAccount, keychain_uuid
from .keychain import Identity, Keychain, Moment
from .profiles import DeviceProfiles

MAIL, EAS = "com.apple.mail.managed", "com.apple.eas.account"
ACCOUNT_TYPES = (MAIL, EAS)
# Every S/MIME key of both payloads (SPEC 4), in the order ignored keys are reported.
SMIME_KEYS = (
    "SMIMEEnabled", "SMIMESigningEnabled", "SMIMESigningCertificateUUID", "SMIMESigningUserOverrideable",
    "SMIMESigningCertificateUUIDUserOverrideable", "SMIMEEncryptionEnabled", "SMIMEEncryptionCertificateUUID",
    "SMIMEEncryptByDefault", "SMIMEEncryptByDefaultUserOverrideable",
    "SMIMEEncryptionCertificateUUIDUserOverrideable", "SMIMEEnablePerMessageSwitch",
    "SMIMEEnableEncryptionPerMessageSwitch",
)
SMIME_FROM = OSVersion(5)
MASTER_SWITCH_UNTIL = OSVersion(10)  # below this, SMIMEEnabled switches S/MIME on (9.3.3 to 9.3.5 alike)
MODERN_FROM = OSVersion(12)
ENCRYPTION_OFF = "encryption is off (no encrypt-by-default, per-message switch or encryption identity)"


class ReadinessError(Exception):
    """Input readiness cannot judge (not an account payload, an unknown choice); `reason` is for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class State(enum.StrEnum):
    READY = "ready"
    DISABLED = "disabled"
    NEEDS_IDENTITY_CHOICE = "needs-identity-choice"  # on, no identity named, the user will be prompted
    NOT_FUNCTIONAL = "not-functional"  # on, but no usable identity on the device


@dataclass(frozen=True, slots=True)
class Capability:
    """Signing or encryption of one account: its state, why, and the identity (PayloadUUID) it would use."""

    state: State
    reason: str
    identity: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "identity": self.identity}


@dataclass(frozen=True, slots=True)
class AccountChoice:
    """What the user did in Settings for one account; None means untouched."""

    signing_identity: str | None = None  # PayloadUUID picked when prompted, or to override
    encryption_identity: str | None = None
    signing_enabled: bool | None = None  # honoured only where SMIMESigningUserOverrideable
    encrypt_by_default: bool | None = None  # honoured only where SMIMEEncryptByDefaultUserOverrideable


@dataclass(frozen=True, slots=True)
class UserChoices:
    """The user's S/MIME choices per account identifier (user actions the machine records)."""

    accounts: Mapping[str, AccountChoice] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accounts", MappingProxyType(dict(self.accounts)))

    def for_account(self, account: str) -> AccountChoice:
        return self.accounts.get(account, AccountChoice())

    def with_choice(self, account: str, **changes: Any) -> UserChoices:
        """A copy with `changes` (AccountChoice field names) applied to `account`."""
        known = {item.name for item in fields(AccountChoice)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ReadinessError(f"unknown choice {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        updated = dict(self.accounts)
        updated[account] = replace(self.for_account(account), **changes)
        return UserChoices(updated)


@dataclass(frozen=True, slots=True)
class Readiness:
    """One account's S/MIME readiness record (docs/readiness.md), as the fleet report shows it."""

    account: str
    payload_type: str
    os_version: str
    signing: Capability
    encryption: Capability
    encrypt_by_default: bool
    per_message_switch: bool
    signing_user_overrideable: bool
    encryption_identity_user_overrideable: bool
    signing_identity_user_overrideable: bool = False
    encrypt_by_default_user_overrideable: bool = False
    ignored_keys: tuple[str, ...] = ()
    profile_identifier: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            out[item.name] = value.to_json() if isinstance(value, Capability) else (
                list(value) if isinstance(value, tuple) else value)
        return out


@dataclass(frozen=True, slots=True)
class Policy:
    """What an account payload asks for at one OS version, before identities and user choices."""

    signing: bool
    signing_off: str
    encrypt_by_default: bool
    per_message_switch: bool
    encryption_off: str
    signing_identity: str | None = None
    encryption_identity: str | None = None
    signing_user_overrideable: bool = False
    signing_identity_user_overrideable: bool = False
    encrypt_by_default_user_overrideable: bool = False
    encryption_identity_user_overrideable: bool = False
    ignored_keys: tuple[str, ...] = ()

    @property
    def encryption(self) -> bool:
        # An encryption identity is needed to encrypt by default, behind the switch, or to decrypt.
        return self.encrypt_by_default or self.per_message_switch or self.encryption_identity is not None


class _Keys:
    """Reads S/MIME keys as a device of one version does, noting the keys present but not read."""

    def __init__(self, payload: Mapping[str, Any], version: OSVersion) -> None:
        self.payload, self.version = payload, version
        self.payload_type = payload["PayloadType"]
        self.skipped: set[str] = set()

    def honoured(self, key: str) -> bool:
        return key in self.payload and key_support(self.payload_type, key, self.version).honoured

    def flag(self, key: str) -> bool | None:
        value = self.payload.get(key)
        return value if self.honoured(key) and isinstance(value, bool) else None

    def uuid(self, key: str) -> str | None:
        value = self.payload.get(key)
        return value if self.honoured(key) and isinstance(value, str) and value else None

    def skip(self, key: str) -> None:
        """`key` is present but this version's rules do not read it (overridden, or a retired switch)."""
        self.skipped.add(key)

    def ignored(self) -> tuple[str, ...]:
        return tuple(key for key in SMIME_KEYS if key in self.payload
                     and (key in self.skipped or not self.honoured(key)))


def _master_switch_policy(keys: _Keys) -> Policy:
    """Below iOS 10.0: S/MIME only with SMIMEEnabled; without the 8.0+ switch, encrypt every message."""
    if keys.version < SMIME_FROM:
        why = f"iOS {keys.version} has no S/MIME (it arrived in 5.0)"
        return Policy(False, why, False, False, why, ignored_keys=keys.ignored())
    if keys.flag("SMIMEEnabled") is not True:
        why = "SMIMEEnabled is not true; below iOS 10.0 it is the S/MIME master switch"
        return Policy(False, why, False, False, why, ignored_keys=keys.ignored())
    switch = keys.flag("SMIMEEnablePerMessageSwitch") is True
    return Policy(True, "", not switch, switch, "",
                  signing_identity=keys.uuid("SMIMESigningCertificateUUID"),
                  encryption_identity=keys.uuid("SMIMEEncryptionCertificateUUID"),
                  ignored_keys=keys.ignored())


def _flag_policy(keys: _Keys) -> Policy:
    """iOS 10.0 to 11.x: per-feature flags; Exchange reads the signing/encryption flags from 10.3."""
    keys.skip("SMIMEEnabled")
    signing = keys.flag("SMIMESigningEnabled") is True
    identity = keys.uuid("SMIMEEncryptionCertificateUUID")
    encryption = keys.flag("SMIMEEncryptionEnabled") is True or identity is not None
    switch = encryption and keys.flag("SMIMEEnablePerMessageSwitch") is True
    return Policy(signing, _signing_off(keys), encryption and not switch, switch, ENCRYPTION_OFF,
                  signing_identity=keys.uuid("SMIMESigningCertificateUUID"), encryption_identity=identity,
                  ignored_keys=keys.ignored())


def _modern_policy(keys: _Keys) -> Policy:
    """iOS 12.0+: EncryptByDefault and the new switch win over the legacy keys ([DEC]); overrides honoured."""
    keys.skip("SMIMEEnabled")
    identity = keys.uuid("SMIMEEncryptionCertificateUUID")
    by_default, legacy = keys.flag("SMIMEEncryptByDefault"), keys.flag("SMIMEEncryptionEnabled")
    if by_default is not None and legacy is not None:
        keys.skip("SMIMEEncryptionEnabled")
    if by_default is None:  # [DEC]: an encryption certificate with encryption unset turns encryption on
        by_default = legacy if legacy is not None else identity is not None
    switch = keys.flag("SMIMEEnableEncryptionPerMessageSwitch")
    old_switch = keys.flag("SMIMEEnablePerMessageSwitch")
    if switch is not None and old_switch is not None:
        keys.skip("SMIMEEnablePerMessageSwitch")
    overrides = {name: keys.flag(key) is True for name, key in _OVERRIDE_KEYS.items()}
    return Policy(
        keys.flag("SMIMESigningEnabled") is True, _signing_off(keys), by_default,
        (switch if switch is not None else old_switch) is True, ENCRYPTION_OFF,
        signing_identity=keys.uuid("SMIMESigningCertificateUUID"), encryption_identity=identity,
        ignored_keys=keys.ignored(), **overrides,
    )


_OVERRIDE_KEYS = {
    "signing_user_overrideable": "SMIMESigningUserOverrideable",
    "signing_identity_user_overrideable": "SMIMESigningCertificateUUIDUserOverrideable",
    "encrypt_by_default_user_overrideable": "SMIMEEncryptByDefaultUserOverrideable",
    "encryption_identity_user_overrideable": "SMIMEEncryptionCertificateUUIDUserOverrideable",
}


def _signing_off(keys: _Keys) -> str:
    if "SMIMESigningEnabled" in keys.payload and not keys.honoured("SMIMESigningEnabled"):
        support = key_support(keys.payload_type, "SMIMESigningEnabled", keys.version)
        return f"SMIMESigningEnabled is not read by this account type on iOS {keys.version} ({support.value})"
    return "SMIMESigningEnabled is not true"


def smime_policy(payload: Mapping[str, Any], os_version: OSVersion | str) -> Policy:
    """The S/MIME settings an account payload gives on iOS `os_version` (below 10.0, 10.0 to 11.x, 12.0+)."""
    if not isinstance(payload, Mapping) or payload.get("PayloadType") not in ACCOUNT_TYPES:
        kind = payload.get("PayloadType") if isinstance(payload, Mapping) else type(payload).__name__
        raise ReadinessError(f"readiness is judged for {' and '.join(ACCOUNT_TYPES)} payloads, not {kind!r}")
    version = OSVersion.parse(os_version)
    keys = _Keys(payload, version)
    if version < MASTER_SWITCH_UNTIL:
        return _master_switch_policy(keys)
    if version < MODERN_FROM:
        return _flag_policy(keys)
    return _modern_policy(keys)


DDM_SMIME_FROM = OSVersion(17)  # SMIME in account declarations ([ADM] account.mail / account.exchange)


def _settings(smime: Mapping[str, Any], part: str) -> Mapping[str, Any]:
    value = smime.get(part)
    return value if isinstance(value, Mapping) else {}


def ddm_smime_policy(account: DdmAccount, os_version: OSVersion | str) -> Policy:
    """The S/MIME settings of an account declaration: iOS 17+ reads SMIME.Signing and SMIME.Encryption, where
    Encryption.Enabled is encrypt-by-default and PerMessageSwitchEnabled the compose switch (docs/readiness.md)."""
    version = OSVersion.parse(os_version)
    ignored = tuple(key for key in account.ignored_keys if key == "SMIME" or key.startswith("SMIME."))
    smime = account.payload.get("SMIME")
    if version < DDM_SMIME_FROM or not isinstance(smime, Mapping):
        why = (f"iOS {version} does not read SMIME in account declarations (from iOS 17.0)"
               if version < DDM_SMIME_FROM else "the declaration has no SMIME settings")
        return Policy(False, why, False, False, why, ignored_keys=ignored)
    signing, encryption = _settings(smime, "Signing"), _settings(smime, "Encryption")

    def identity(settings: Mapping[str, Any]) -> str | None:
        reference = settings.get("IdentityAssetReference")
        return keychain_uuid(reference) if isinstance(reference, str) and reference else None

    return Policy(
        signing.get("Enabled") is True, "SMIME.Signing.Enabled is not true", encryption.get("Enabled") is True,
        encryption.get("PerMessageSwitchEnabled") is True,
        "encryption is off (SMIME.Encryption.Enabled and PerMessageSwitchEnabled are not true and no "
        "encryption identity is named)",
        signing_identity=identity(signing), encryption_identity=identity(encryption),
        signing_user_overrideable=signing.get("UserOverrideable") is True,
        signing_identity_user_overrideable=signing.get("IdentityUserOverrideable") is True,
        encrypt_by_default_user_overrideable=encryption.get("UserOverrideable") is True,
        encryption_identity_user_overrideable=encryption.get("IdentityUserOverrideable") is True,
        ignored_keys=ignored,
    )


def _pick(named: str | None, chosen: str | None, overrideable: bool, keychain: Keychain) -> str | None:
    """The identity in use: named by the payload, or the user's pick when none is named or it may override."""
    if chosen is not None and keychain.identity(chosen) is None:
        chosen = None  # a pick whose identity has gone counts as no pick: the user is prompted again
    if named is None:
        return chosen
    return chosen if overrideable and chosen is not None else named


def _key_problem(identity: Identity, encrypting: bool) -> str | None:
    """Why an identity cannot serve encryption: mail is encrypted to a recipient's RSA key (CMS key transport,
    the only kind cryptography's PKCS7EnvelopeBuilder writes), so an EC identity is never asked for mail."""
    if not encrypting or isinstance(identity.certificate.public_key(), rsa.RSAPublicKey):
        return None
    return (f"“{identity.common_name}” has an EC key: S/MIME mail can only be encrypted to RSA keys, so no one "
            "could encrypt to it")


def _judge(what: str, on: bool, off_reason: str, uuid: str | None, keychain: Keychain,
           now: Moment) -> Capability:
    if not on:
        return Capability(State.DISABLED, off_reason)
    encrypting = what == "encryption"
    if uuid is None:
        usable = [item for item in keychain.usable_identities(now) if _key_problem(item, encrypting) is None]
        if usable:
            return Capability(State.NEEDS_IDENTITY_CHOICE, f"{what} is on but no identity is named: the user "
                              f"is prompted to choose one of {len(usable)} usable identities on the device")
        held = len(keychain.identities())
        why = "no certificate on the device" if not held else f"none of the {held} identities on it is usable"
        if held and encrypting and keychain.usable_identities(now):
            why += " for encryption (it needs an RSA key)"
        return Capability(State.NOT_FUNCTIONAL, f"{what} is on but there is {why}")
    identity = keychain.identity(uuid)
    if identity is None:
        return Capability(State.NOT_FUNCTIONAL, f"{what} identity {uuid} is not on the device", uuid)
    ok, why = keychain.usable(identity, now)
    problem = _key_problem(identity, encrypting) if ok else None
    if problem is not None:
        return Capability(State.NOT_FUNCTIONAL, f"{what}: {problem}", uuid)
    return Capability(State.READY if ok else State.NOT_FUNCTIONAL, f"{what}: {why}", uuid)


def account_readiness(payload: Mapping[str, Any], *, os_version: OSVersion | str, keychain: Keychain,
                      now: Moment, choices: UserChoices | None = None, account: str | None = None,
                      profile_identifier: str | None = None) -> Readiness:
    """The readiness record of one Email or Exchange account payload on this device at `now`."""
    policy = smime_policy(payload, os_version)
    account = account or str(payload.get("PayloadIdentifier", ""))
    return _record(policy, account, payload["PayloadType"], os_version, keychain, now, choices, profile_identifier)


def _record(policy: Policy, account: str, payload_type: str, os_version: OSVersion | str, keychain: Keychain,
            now: Moment, choices: UserChoices | None, profile_identifier: str | None) -> Readiness:
    """The record for a policy once identities and the user's choices are applied (profiles and DDM alike)."""
    choice = (choices or UserChoices()).for_account(account)
    signing = policy.signing
    if policy.signing_user_overrideable and choice.signing_enabled is not None:
        signing = choice.signing_enabled
    by_default = policy.encrypt_by_default
    if policy.encrypt_by_default_user_overrideable and choice.encrypt_by_default is not None:
        by_default = choice.encrypt_by_default
    policy = replace(policy, encrypt_by_default=by_default)
    signing_off = policy.signing_off
    if policy.signing and not signing:
        signing_off = "signing was turned off by the user"
    signer = _pick(policy.signing_identity, choice.signing_identity,
                   policy.signing_identity_user_overrideable, keychain)
    decrypter = _pick(policy.encryption_identity, choice.encryption_identity,
                      policy.encryption_identity_user_overrideable, keychain)
    return Readiness(
        account, payload_type, str(OSVersion.parse(os_version)),
        _judge("signing", signing, signing_off, signer, keychain, now),
        _judge("encryption", policy.encryption, policy.encryption_off, decrypter, keychain, now),
        policy.encrypt_by_default, policy.per_message_switch, policy.signing_user_overrideable,
        policy.encryption_identity_user_overrideable, policy.signing_identity_user_overrideable,
        policy.encrypt_by_default_user_overrideable, policy.ignored_keys, profile_identifier,
    )


def ddm_account_readiness(account: DdmAccount, *, os_version: OSVersion | str, keychain: Keychain, now: Moment,
                          choices: UserChoices | None = None, key: str | None = None) -> Readiness:
    """The readiness record of an account declaration (mail or Exchange), by `ddm_smime_policy`."""
    policy = ddm_smime_policy(account, os_version)
    return _record(policy, key or account.identifier, account.declaration_type, os_version, keychain, now,
                   choices, None)


def fleet_readiness(profiles: DeviceProfiles, *, os_version: OSVersion | str, now: Moment,
                    choices: UserChoices | None = None, ddm_accounts: Iterable[DdmAccount] = ()
                    ) -> dict[str, Readiness]:
    """Readiness of every account on one device, keyed by account identifier (the PayloadIdentifier, or the
    declaration Identifier of a DDM account).

    Two profiles may reuse a PayloadIdentifier; the later account is then keyed "<profile>/<payload>"; a
    declaration whose Identifier a profile account already uses is keyed "declaration/<identifier>".
    """
    out: dict[str, Readiness] = {}
    for profile, payload in profiles.accounts():
        account = payload["PayloadIdentifier"]
        if account in out:
            account = f"{profile.identifier}/{account}"
        out[account] = account_readiness(payload, os_version=os_version, keychain=profiles.keychain, now=now,
                                          choices=choices, account=account,
                                          profile_identifier=profile.identifier)
    for declared in ddm_accounts:
        key = declared.identifier if declared.identifier not in out else f"declaration/{declared.identifier}"
        out[key] = ddm_account_readiness(declared, os_version=os_version, keychain=profiles.keychain, now=now,
                                         choices=choices, key=key)
    return out
