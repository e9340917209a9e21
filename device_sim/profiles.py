"""A simulated device's installed profiles: atomic install/replace/remove and what ProfileList and
CertificateList report. The rules themselves live in `install_rules`; the keys and certificates in `keychain`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm_protocol.commands import CertificateListItem, ProfileListItem, ProfileListPayload
from mdm_protocol.errors import MDM_ERRORS, ErrorChainItem, ProfileError, error_chain
from mdm_protocol.osversion import OSVersion
from mdm_protocol.profile import IgnoredKey, Profile, ProfileValidation
from mdm_protocol.profile_signing import SignatureStatus, SignedProfile

from .install_rules import ACCOUNT_TYPES, ExchangeAccount, InstallPlan, ScepIdentity, plan_install
from .keychain import Keychain, Moment, as_utc, common_name
from .profile_envelope import unwrap_profile

# ProfileList gives each payload's PayloadUUID from iOS 17 (SPEC 3).
PAYLOAD_UUID_IN_PROFILE_LIST = OSVersion(17)


class AccountError(Exception):
    """A user-added account the device cannot hold; `reason` is for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InstalledProfile:
    """A profile as the device holds it; `payloads` are read-only plist dictionaries in profile order."""

    identifier: str
    uuid: str
    display_name: str | None
    organization: str | None
    payloads: tuple[Mapping[str, Any], ...]
    installed_at: datetime
    ignored_keys: tuple[IgnoredKey, ...]
    is_managed: bool
    description: str | None = None
    removal_disallowed: bool = False
    has_removal_passcode: bool = False
    is_encrypted: bool = False
    # A signed profile's signer certificate (DER) first, then the others it embeds; its verdict (None: unsigned).
    signer_certificates: tuple[bytes, ...] = ()
    signature: SignatureStatus | None = None

    @property
    def verified(self) -> bool:
        """What iOS shows as Verified: signed by a certificate that chains to a trusted root."""
        return self.signature is SignatureStatus.VERIFIED

    @property
    def name(self) -> str:
        """What iOS calls the profile in messages: its display name, else its identifier."""
        return self.display_name or self.identifier

    def payloads_of_type(self, payload_type: str) -> tuple[Mapping[str, Any], ...]:
        return tuple(item for item in self.payloads if item["PayloadType"] == payload_type)

    def payload(self, uuid: str) -> Mapping[str, Any] | None:
        return next((item for item in self.payloads if item["PayloadUUID"] == uuid), None)

    @classmethod
    def from_profile(cls, profile: Profile, *, ignored: Iterable[IgnoredKey], installed_at: Moment,
                     managed: bool, signature: SignedProfile | None = None) -> InstalledProfile:
        # to_plist is already a deep copy: nothing the caller holds can change what the device keeps.
        payloads = tuple(MappingProxyType(item.to_plist()) for item in profile.payloads)
        signers = () if signature is None else tuple(
            item.public_bytes(serialization.Encoding.DER) for item in signature.certificates)
        return cls(profile.identifier, profile.uuid, profile.display_name, profile.organization, payloads,
                   as_utc(installed_at), tuple(ignored), managed, profile.description,
                   profile.removal_disallowed is True, profile.extra.get("HasRemovalPasscode") is True,
                   profile.encrypted, signers, None if signature is None else signature.status)

    def list_item(self, os_version: OSVersion) -> ProfileListItem:
        with_uuid = os_version >= PAYLOAD_UUID_IN_PROFILE_LIST
        content = tuple(ProfileListPayload(
            item["PayloadType"], item["PayloadVersion"], item["PayloadIdentifier"],
            item["PayloadUUID"] if with_uuid else None, item.get("PayloadDisplayName"),
            item.get("PayloadDescription"), item.get("PayloadOrganization"),
        ) for item in self.payloads)
        # Apple's ProfileList has no "verified" key: it reports the signers (SignerCertificates) and IsEncrypted,
        # and lists no PayloadContent for an encrypted profile.
        return ProfileListItem(
            self.uuid, self.identifier, 1, self.display_name, self.organization, self.description,
            self.removal_disallowed, self.has_removal_passcode, self.is_encrypted, self.is_managed,
            signer_certificates=self.signer_certificates,
            payload_content=None if self.is_encrypted else content,
        )


@dataclass(frozen=True, slots=True)
class InstallResult:
    """The outcome of an InstallProfile; on failure `error_chain` is what the device reports."""

    ok: bool
    error_chain: tuple[ErrorChainItem, ...]
    replaced_identifier: str | None
    ignored_keys: tuple[IgnoredKey, ...]
    profile: InstalledProfile | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RemoveResult:
    """The outcome of a RemoveProfile; on failure `error_chain` is what the device reports."""

    ok: bool
    error_chain: tuple[ErrorChainItem, ...]
    removed: InstalledProfile | None
    reason: str = ""


class DeviceProfiles:
    """Installed profiles by PayloadIdentifier, the keychain they fill, and accounts the user added."""

    def __init__(self, keychain: Keychain | None = None, *,
                 user_accounts: Iterable[ExchangeAccount] = ()) -> None:
        self.keychain = keychain if keychain is not None else Keychain()
        # Exchange accounts the user configured in Settings; the machine fills it (SPEC 5, 21005).
        self.user_accounts: set[ExchangeAccount] = set(user_accounts)
        self._profiles: dict[str, InstalledProfile] = {}

    @classmethod
    def restored(cls, keychain: Keychain, installed: Iterable[InstalledProfile]) -> DeviceProfiles:
        """Profiles as they were saved (device_sim.device_snapshot), with the keychain they filled."""
        profiles = cls(keychain)
        profiles._profiles = {item.identifier: item for item in installed}
        return profiles

    def add_user_account(self, host: str, user_name: str | None = None,
                         email_address: str | None = None) -> ExchangeAccount:
        account = ExchangeAccount.of(host, user_name, email_address)
        if account is None:
            raise AccountError("a user-added Exchange account needs a user name or an email address")
        self.user_accounts.add(account)
        return account

    def __iter__(self) -> Iterator[InstalledProfile]:
        return iter(tuple(self._profiles.values()))

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, identifier: object) -> bool:
        return identifier in self._profiles

    def get(self, identifier: str) -> InstalledProfile | None:
        return self._profiles.get(identifier)

    def installed(self) -> tuple[InstalledProfile, ...]:
        return tuple(self._profiles.values())

    def accounts(self) -> tuple[tuple[InstalledProfile, Mapping[str, Any]], ...]:
        """Every Email and Exchange account payload, with the profile that installed it."""
        return tuple((profile, payload) for profile in self._profiles.values() for payload in profile.payloads
                     if payload["PayloadType"] in ACCOUNT_TYPES)

    # --- install and remove -------------------------------------------------------------------------------

    def install(self, profile_bytes: bytes | Mapping[str, Any] | Profile | ProfileValidation, *,
                os_version: OSVersion | str,
                now: Moment, managed: bool = True,
                scep_identities: Mapping[str, ScepIdentity] | None = None,
                validated: ProfileValidation | None = None) -> InstallResult:
        """Install (or replace, by PayloadIdentifier) a profile; a refusal changes nothing on the device.
        `scep_identities`: what SCEP enrolled for the profile's SCEP payloads, by PayloadUUID. Bytes may be
        CMS-signed and may hold EncryptedPayloadContent (`profile_envelope`). `validated`: the bytes' content
        (inside any signature) as the caller validated it for this `os_version` already (scep_install)."""
        signature = None
        try:
            if isinstance(profile_bytes, bytes | bytearray):
                unwrapped = unwrap_profile(profile_bytes, self.keychain, now=now)
                profile_bytes, signature = unwrapped.source, unwrapped.signature
                if validated is not None and not unwrapped.encrypted:
                    profile_bytes = validated  # the very content, validated once: not parsed a second time
            plan = plan_install(profile_bytes, os_version=os_version, now=now, installed=self._profiles,
                                keychain=self.keychain, user_accounts=self.user_accounts,
                                scep_identities=scep_identities)
        except ProfileError as exc:
            return InstallResult(False, exc.chain, None, (), None, exc.reason)
        installed = self._commit(plan, now=now, managed=managed, signature=signature)
        return InstallResult(True, (), plan.replaced_identifier, plan.ignored, installed)

    def _commit(self, plan: InstallPlan, *, now: Moment, managed: bool,
                signature: SignedProfile | None = None) -> InstalledProfile:
        identifier = plan.profile.identifier
        if plan.replaced_identifier is not None:
            # The old profile's identities leave with it; keys that could decrypt mail are archived (SPEC 7).
            self.keychain.remove_profile(identifier, keep_encryption_keys=True)
        for certificate, trusted_root in plan.certificates:
            if trusted_root:
                self.keychain.add_root(certificate, identifier)
            else:
                self.keychain.add_intermediate(certificate, identifier)
        for identity in plan.identities:
            self.keychain.add_identity(identity)
        installed = InstalledProfile.from_profile(plan.profile, ignored=plan.ignored, installed_at=now,
                                                  managed=managed, signature=signature)
        self._profiles[identifier] = installed
        return installed

    def remove(self, identifier: str, *, by_mdm: bool = True,
               keep_encryption_keys: bool = True) -> RemoveResult:
        """RemoveProfile: 12075 when absent (SPEC 3); 12013 when MDM did not install it (corpus)."""
        installed = self._profiles.get(identifier)
        if installed is None:
            text = f"The profile “{identifier}” is not installed."
            return RemoveResult(False, error_chain((MDM_ERRORS[12075], text)), None,
                                f"no profile with PayloadIdentifier {identifier!r} is installed")
        if by_mdm and not installed.is_managed:
            text = f"The profile “{identifier}” is not managed by MDM."
            return RemoveResult(False, error_chain((MDM_ERRORS[12013], text)), None,
                                f"profile {identifier!r} was installed by the user, not by MDM")
        self.keychain.remove_profile(identifier, keep_encryption_keys=keep_encryption_keys)
        del self._profiles[identifier]
        return RemoveResult(True, (), installed)

    # --- what the device reports ----------------------------------------------------------------------------

    def profile_list_items(self, *, os_version: OSVersion | str | None = None,
                           managed_only: bool = False) -> tuple[ProfileListItem, ...]:
        """ProfileList entries; payload PayloadUUIDs appear from iOS 17 (and when no version is given)."""
        version = PAYLOAD_UUID_IN_PROFILE_LIST if os_version is None else OSVersion.parse(os_version)
        return tuple(item.list_item(version) for item in self._profiles.values()
                     if item.is_managed or not managed_only)

    def certificate_list_items(self, *, managed_only: bool = False) -> tuple[CertificateListItem, ...]:
        """Identities then other profile certificates; an identity whose key was deleted is no identity."""
        def listed(profile_identifier: str) -> bool:
            profile = self._profiles.get(profile_identifier)
            return profile is not None and (profile.is_managed or not managed_only)

        def der(certificate: x509.Certificate) -> bytes:
            return certificate.public_bytes(serialization.Encoding.DER)

        items = [CertificateListItem(item.common_name, item.has_private_key, der(item.certificate))
                 for item in self.keychain.identities() if listed(item.profile_identifier)]
        items += [CertificateListItem(common_name(item.certificate), False, der(item.certificate))
                  for item in self.keychain.certificates() if listed(item.profile_identifier)]
        return tuple(items)
