"""What a simulated iOS device checks before installing a profile, beyond the schema (SPEC 4, 5 and 7).

`plan_install` reads the device's state and returns an InstallPlan or raises ProfileError with iOS's chain.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc7292

from mdm_protocol.errors import (
    CERTIFICATE,
    EAS,
    EMAIL,
    INSTALLATION,
    MDM_ERRORS,
    PROFILE,
    KnownError,
    ProfileError,
    error_chain,
)
from mdm_protocol.key_catalogue import key_support
from mdm_protocol.osversion import OSVersion
from mdm_protocol.pkcs12_memo import load_pkcs12 as memo_load_pkcs12
from mdm_protocol.profile import IgnoredKey, Profile, ProfileValidation, validate_profile

from .keychain import Identity, Keychain, Moment, PrivateKey, as_utc, fingerprint, is_self_signed

ROOT, PKCS1, PEM = "com.apple.security.root", "com.apple.security.pkcs1", "com.apple.security.pem"
PKCS12, SCEP = "com.apple.security.pkcs12", "com.apple.security.scep"
MDM_TYPE, MAIL, EAS_TYPE = "com.apple.mdm", "com.apple.mail.managed", "com.apple.eas.account"
CERTIFICATE_TYPES = (ROOT, PKCS1, PEM)
IDENTITY_TYPES = (PKCS12, SCEP)  # payloads whose PayloadUUID names an identity
ACCOUNT_TYPES = (MAIL, EAS_TYPE)
SMIME_IDENTITY_KEYS = ("SMIMESigningCertificateUUID", "SMIMEEncryptionCertificateUUID")
MDM_FIXED_KEYS = ("Topic", "ServerURL", "CheckInURL")  # com.apple.mdm.yaml: cannot change on update

MULTIPLE_MDM, MDM_REPLACEMENT_MISMATCH = MDM_ERRORS[12001], MDM_ERRORS[12012]
NO_MDM_IN_REPLACEMENT = INSTALLATION[4015]


def password_incorrect(file_name: str) -> str:
    """What iOS shows for 9000 (SPEC 5, trailofbits/algo#14558), with the certificate's file name."""
    return f'The password for the certificate "{file_name}" is incorrect.'


def install_failure(profile_name: str, cause: KnownError, description: str, reason: str) -> ProfileError:
    """Wrap a payload's failure as iOS reports InstallProfile errors (openradar 18452, SCEPy#1 device logs).

    4001 "Profile Installation Failed" ← 4001 "Profile Failed to Install" ← 1009 the profile ← the cause.
    """
    chain = error_chain(INSTALLATION[4001], (INSTALLATION[4001], "Profile Failed to Install"),
                        (PROFILE[1009], f"The profile “{profile_name}” could not be installed."),
                        (cause, description))
    return ProfileError(reason, chain)


@dataclass(frozen=True, slots=True, order=True)
class ExchangeAccount:
    """What makes an Exchange account unique on a device: its host and user (SPEC 5 FLAG, our decision)."""

    host: str
    user: str

    @classmethod
    def of(cls, host: Any, user_name: Any = None, email_address: Any = None) -> ExchangeAccount | None:
        """Host and UserName, or EmailAddress when there is no UserName; case-insensitive. None: no user."""
        user = user_name if isinstance(user_name, str) and user_name else email_address
        if not isinstance(user, str) or not user:
            return None
        server = host.strip().lower() if isinstance(host, str) else ""
        return cls(server, user.strip().lower())

    @classmethod
    def of_payload(cls, payload: Mapping[str, Any]) -> ExchangeAccount | None:
        return cls.of(payload.get("Host"), payload.get("UserName"), payload.get("EmailAddress"))

    def describe(self) -> str:
        return f"{self.user} on {self.host or '(autodiscovered host)'}"


class InstalledPayloads(Protocol):
    """The part of an installed profile the rules read (profiles.InstalledProfile satisfies it)."""

    @property
    def identifier(self) -> str: ...

    @property
    def payloads(self) -> tuple[Mapping[str, Any], ...]: ...


@dataclass(frozen=True, slots=True)
class InstallPlan:
    """Everything an accepted install will change, computed before anything changes (atomic installs)."""

    profile: Profile
    ignored: tuple[IgnoredKey, ...]
    identities: tuple[Identity, ...]
    certificates: tuple[tuple[x509.Certificate, bool], ...]  # (certificate, trusted as a root)
    replaced_identifier: str | None


class Pkcs12Refusal(Exception):
    """Why a PKCS#12 cannot become exactly one identity; `code` is the MCCertificateErrorDomain code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Pkcs12Identity:
    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return is_self_signed(certificate)  # a v1 root has no extensions at all
    except ValueError:
        return False


def open_pkcs12(data: Any, password: Any) -> Pkcs12Identity:
    """Open a PKCS#12 as iOS does for a profile: one identity plus CA certificates, else Pkcs12Refusal."""
    if not isinstance(data, bytes | bytearray):
        raise Pkcs12Refusal(9005, "the PKCS#12 is not data")
    if not isinstance(password, str) or not password:
        _check_pfx(data)
        # An MDM install cannot prompt for it; a passwordless P12 cannot be imported either (openradar 14450).
        raise Pkcs12Refusal(9000, "no password was given for the PKCS#12")
    try:
        loaded = memo_load_pkcs12(bytes(data), password.encode("utf-8"))
    except (ValueError, TypeError):
        _check_pfx(data)
        raise Pkcs12Refusal(9000, "the password does not open the PKCS#12 (MAC check failed)") from None
    return _single_identity(loaded)


def _check_pfx(data: bytes | bytearray) -> None:
    """9005 unless `data` decodes as a PFX. Only a refused file needs it: what opens is a PFX (and the pure
    Python decode costs about as much as opening an enrollment identity)."""
    try:
        ber_decoder.decode(bytes(data), asn1Spec=rfc7292.PFX())
    except (PyAsn1Error, ValueError, TypeError):
        raise Pkcs12Refusal(9005, "the data is not a PKCS#12 (PFX) structure") from None


def _single_identity(loaded: pkcs12.PKCS12KeyAndCertificates) -> Pkcs12Identity:
    key, leaf = loaded.key, loaded.cert
    if key is None or leaf is None:
        missing = "private key" if key is None else "certificate"
        raise Pkcs12Refusal(9006, f"the PKCS#12 holds no {missing}, so it is not an identity")
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise Pkcs12Refusal(9006, f"the PKCS#12 key is {type(key).__name__}; iOS identities are RSA or EC")
    if key.public_key() != leaf.certificate.public_key():
        raise Pkcs12Refusal(9006, "the PKCS#12 private key does not belong to its certificate")
    extra = tuple(item.certificate for item in loaded.additional_certs)
    leaves = [item for item in extra if not _is_ca(item)]
    if leaves:
        raise Pkcs12Refusal(9001, f"the PKCS#12 holds {len(leaves) + 1} end-entity certificates; "
                                  "a payload may carry only one identity")
    return Pkcs12Identity(leaf.certificate, key, extra)


_SHARED_CERTIFICATES: dict[bytes, x509.Certificate] = {}
MAX_SHARED_CERTIFICATES = 4096


def load_certificate(data: Any) -> x509.Certificate:
    """DER or PEM certificate data from a root/pkcs1/pem payload; ValueError when malformed.

    Certificates are immutable and every device of a fleet trusts the same few roots, so one object per
    distinct encoding serves the whole process (about 4 KB saved per device, with the names it caches).
    """
    if not isinstance(data, bytes | bytearray):
        raise ValueError("certificate data must be bytes")
    raw = bytes(data)
    shared = _SHARED_CERTIFICATES.get(raw)
    if shared is not None:
        return shared
    if raw.lstrip().startswith(b"-----BEGIN"):
        certificate = x509.load_pem_x509_certificate(raw)
    else:
        certificate = x509.load_der_x509_certificate(raw)
    if len(_SHARED_CERTIFICATES) < MAX_SHARED_CERTIFICATES:
        _SHARED_CERTIFICATES[raw] = certificate
    return certificate


def file_name_of(payload: Mapping[str, Any]) -> str:
    """The name iOS puts in certificate errors: the file name, else the payload's display name."""
    for key in ("PayloadCertificateFileName", "PayloadDisplayName", "PayloadIdentifier"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return "certificate"


def payload_name(payload: Mapping[str, Any]) -> str:
    for key in ("PayloadDisplayName", "PayloadIdentifier"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return value
    return "payload"


class ScepIdentity(Protocol):
    """An identity a SCEP payload enrolled for before the install (scep_client.ScepIssued satisfies it)."""

    @property
    def certificate(self) -> x509.Certificate: ...

    @property
    def private_key(self) -> PrivateKey: ...

    @property
    def chain(self) -> tuple[x509.Certificate, ...]: ...


class _Planner:
    """One install attempt: the new profile, the device's state, and the plan built up payload by payload."""

    def __init__(self, profile: Profile, plist: Mapping[str, Any], *, version: OSVersion, now: Moment,
                 installed: Mapping[str, InstalledPayloads], keychain: Keychain,
                 user_accounts: Collection[ExchangeAccount], unread: Collection[str],
                 scep_identities: Mapping[str, ScepIdentity] | None = None) -> None:
        self.profile = profile
        self.payloads: tuple[Mapping[str, Any], ...] = tuple(plist.get("PayloadContent", ()))
        self.version, self.now = version, as_utc(now)
        self.replaced = installed.get(profile.identifier)
        self.others = tuple(item for key, item in installed.items() if key != profile.identifier)
        self.keychain, self.user_accounts, self.unread = keychain, user_accounts, unread
        self.scep_identities = scep_identities or {}
        self.identities: list[Identity] = []
        self.certificates: list[tuple[x509.Certificate, bool]] = []

    @property
    def name(self) -> str:
        return self.profile.display_name or self.profile.identifier

    def refuse(self, cause: KnownError, reason: str, *, about: str | None = None,
               text: str | None = None) -> ProfileError:
        """The install failure for `cause`; its description names `about` (a payload or file) when given."""
        description = text or (f"{cause.description} (“{about}”)" if about else cause.description)
        return install_failure(self.name, cause, description, f"profile {self.profile.identifier}: {reason}")

    def read(self, payload_type: str | tuple[str, ...]) -> list[Mapping[str, Any]]:
        """Payloads of `payload_type` this iOS version reads, in profile order."""
        kinds = (payload_type,) if isinstance(payload_type, str) else payload_type
        return [item for item in self.payloads
                if item["PayloadType"] in kinds and item["PayloadIdentifier"] not in self.unread]

    def honours(self, payload: Mapping[str, Any], key: str) -> bool:
        return key in payload and key_support(payload["PayloadType"], key, self.version).honoured

    # --- com.apple.mdm ---------------------------------------------------------------------------------

    def check_mdm(self) -> None:
        mine = self.read(MDM_TYPE)
        if len(mine) > 1:
            raise self.refuse(MULTIPLE_MDM, f"{len(mine)} com.apple.mdm payloads; a device has at most one",
                              about=self.name)
        holder = next((item.identifier for item in self.others
                       if any(p["PayloadType"] == MDM_TYPE for p in item.payloads)), None)
        if mine and holder is not None:
            raise self.refuse(MULTIPLE_MDM, f"profile {holder!r} already enrolled this device in MDM",
                              about=self.name)
        old = [p for p in self.replaced.payloads if p["PayloadType"] == MDM_TYPE] if self.replaced else []
        if old:
            self._check_mdm_update(old[0], mine[0] if mine else None)
        if mine:
            self._check_mdm_identity(mine[0])

    def _check_mdm_update(self, old: Mapping[str, Any], new: Mapping[str, Any] | None) -> None:
        """com.apple.mdm.yaml: an update keeps Topic, ServerURL and CheckInURL and adds no access rights."""
        if new is None:
            raise self.refuse(NO_MDM_IN_REPLACEMENT,
                              "it replaces the MDM enrollment profile but has no com.apple.mdm payload")
        changed = [key for key in MDM_FIXED_KEYS if old.get(key) != new.get(key)]
        if changed:
            raise self.refuse(MDM_REPLACEMENT_MISMATCH, f"an MDM update may not change {', '.join(changed)}",
                              about=changed[0])
        before, after = old.get("AccessRights"), new.get("AccessRights")
        if isinstance(before, int) and isinstance(after, int) and after & ~before:
            added = after & ~before
            raise self.refuse(MDM_ERRORS[12000], f"an MDM update may not add access rights ({added} added)")

    def _check_mdm_identity(self, mdm: Mapping[str, Any]) -> None:
        uuid = mdm.get("IdentityCertificateUUID")
        if any(p["PayloadUUID"] == uuid and p["PayloadType"] in IDENTITY_TYPES for p in self.payloads):
            return
        if self._kept_identity(uuid) is not None:
            return
        raise self.refuse(INSTALLATION[4014],
                          f"IdentityCertificateUUID {uuid!r} names no PKCS#12 or SCEP payload")

    def _kept_identity(self, uuid: Any) -> Identity | None:
        """An identity on the device that this install leaves in place (not one of the replaced profile)."""
        held = self.keychain.identity(uuid) if isinstance(uuid, str) else None
        if held is None or (self.replaced and held.profile_identifier == self.replaced.identifier):
            return None
        return held

    # --- certificates and identities ---------------------------------------------------------------------

    def check_certificates(self) -> None:
        for payload in self.read(CERTIFICATE_TYPES):
            try:
                certificate = load_certificate(payload.get("PayloadContent"))
            except ValueError as exc:
                raise self.refuse(CERTIFICATE[9005], f"payload {payload['PayloadIdentifier']}: {exc}",
                                  about=file_name_of(payload)) from None
            self.certificates.append((certificate, is_self_signed(certificate)))
        for payload in self.read(PKCS12):
            self._add_identity(payload, payload.get("PayloadContent"), payload.get("Password"), None)
        for payload in self.read(SCEP):
            self._add_scep_identity(payload)

    def _add_scep_identity(self, payload: Mapping[str, Any]) -> None:
        """The identity SCEP enrolled for this payload; without one (no enrollment ran) the payload stays
        identity-less and an MDM payload naming it fails later with 4014."""
        uuid = payload["PayloadUUID"]
        issued = self.scep_identities.get(uuid)
        if issued is None:
            return
        held = self.keychain.identity(uuid)
        if held is not None and held.profile_identifier != self.profile.identifier:
            raise self.refuse(INSTALLATION[4002], f"PayloadUUID {uuid} already holds an identity of profile "
                              f"{held.profile_identifier!r}", about=uuid)
        self.identities.append(Identity(uuid, self.profile.identifier, issued.certificate, issued.private_key,
                                        file_name_of(payload), self.now, issued.chain))

    def _add_identity(self, payload: Mapping[str, Any], data: Any, password: Any,
                      eas_cause: KnownError | None) -> None:
        """Open a PKCS#12 for `payload`; a pkcs12 payload fails in MCCertificateErrorDomain, EAS in 21006."""
        uuid, file_name = payload["PayloadUUID"], file_name_of(payload)
        held = self.keychain.identity(uuid)
        if held is not None and held.profile_identifier != self.profile.identifier:
            raise self.refuse(INSTALLATION[4002], f"PayloadUUID {uuid} already holds an identity of profile "
                              f"{held.profile_identifier!r}", about=uuid)
        try:
            opened = open_pkcs12(data, password)
        except Pkcs12Refusal as exc:
            where = f"payload {payload['PayloadIdentifier']}: {exc.reason}"
            if eas_cause is not None:
                raise self.refuse(eas_cause, where, about=file_name) from None
            text = password_incorrect(file_name) if exc.code == 9000 else None
            raise self.refuse(CERTIFICATE[exc.code], where, about=file_name, text=text) from None
        installed_at = self.now
        if held is not None and fingerprint(held.certificate) == fingerprint(opened.certificate):
            installed_at = held.installed_at  # updated in place (same identifier and UUID): same identity
        self.identities.append(Identity(uuid, self.profile.identifier, opened.certificate, opened.private_key,
                                        file_name, installed_at, opened.chain))

    # --- accounts -------------------------------------------------------------------------------------------

    def check_accounts(self) -> None:
        taken = self._existing_exchange_accounts()
        for payload in self.read(ACCOUNT_TYPES):
            if payload["PayloadType"] == EAS_TYPE:
                self._check_exchange(payload, taken)
            self._check_smime_identities(payload)

    def _existing_exchange_accounts(self) -> dict[ExchangeAccount, str]:
        """Accounts already on the device, mapped to who configured them (a profile, or the user)."""
        taken = {account: "the user" for account in self.user_accounts}
        for item in self.others:
            for payload in item.payloads:
                account = ExchangeAccount.of_payload(payload) if payload["PayloadType"] == EAS_TYPE else None
                if account is not None:
                    taken.setdefault(account, f"profile {item.identifier!r}")
        return taken

    def _check_exchange(self, payload: Mapping[str, Any], taken: dict[ExchangeAccount, str]) -> None:
        account = ExchangeAccount.of_payload(payload)
        if account is not None and account in taken:
            raise self.refuse(EAS[21005], f"Exchange account {account.describe()} is already configured by "
                              f"{taken[account]}", about=payload_name(payload))
        if account is not None:
            taken[account] = f"payload {payload['PayloadIdentifier']!r} of this profile"
        # SPEC 4: PayloadCertificateUUID overrides an embedded Certificate.
        if self.honours(payload, "Certificate") and "PayloadCertificateUUID" not in payload:
            named = dict(payload)
            if isinstance(payload.get("CertificateName"), str):
                named["PayloadCertificateFileName"] = payload["CertificateName"]
            self._add_identity(named, payload["Certificate"], payload.get("CertificatePassword"), EAS[21006])

    def _check_smime_identities(self, payload: Mapping[str, Any]) -> None:
        """Each S/MIME certificate UUID must name an identity payload here, or one kept on the device."""
        for key in SMIME_IDENTITY_KEYS:
            uuid = payload.get(key)
            # An empty UUID names nothing: iOS installs an account with S/MIME off and "" in these (issue #14).
            if not self.honours(payload, key) or not isinstance(uuid, str) or not uuid:
                continue
            target = next((p for p in self.payloads if p["PayloadUUID"] == uuid), None)
            if target is not None and target["PayloadType"] not in IDENTITY_TYPES:
                raise self.refuse(EMAIL[7004], f"{key} {uuid} names a {target['PayloadType']} payload, "
                                  "not an identity", about=payload_name(payload))
            if target is None and self._kept_identity(uuid) is None:
                raise self.refuse(EMAIL[7003], f"{key} {uuid} names no identity in the profile or keychain",
                                  about=payload_name(payload))


def _unread_payloads(ignored: Iterable[IgnoredKey]) -> frozenset[str]:
    """Identifiers of payloads this iOS version does not read at all (unknown or too new a type)."""
    return frozenset(item.payload_identifier for item in ignored
                     if item.path == () and item.payload_identifier is not None)


def plan_install(source: bytes | Mapping[str, Any] | Profile | ProfileValidation, *, os_version: OSVersion | str,
                 now: Moment,
                 installed: Mapping[str, InstalledPayloads], keychain: Keychain,
                 user_accounts: Collection[ExchangeAccount] = (),
                 scep_identities: Mapping[str, ScepIdentity] | None = None) -> InstallPlan:
    """Validate `source` as iOS `os_version` would and check it against the device; ProfileError if refused.

    Order: schema (4000 chains), encryption, MDM enrollment rules, certificates, then accounts.
    """
    version = OSVersion.parse(os_version)
    # A ProfileValidation is one the caller made for this os_version (SCEP validates before enrolling).
    validation = source if isinstance(source, ProfileValidation) else validate_profile(source, os_version=version)
    profile = validation.profile
    if profile.encrypted and "EncryptedPayloadContent" in profile.extra:
        # DeviceProfiles.install decrypts (profile_envelope); a plist handed in still encrypted is refused.
        reason = f"profile {profile.identifier}: EncryptedPayloadContent was not decrypted"
        name = profile.display_name or profile.identifier
        raise install_failure(name, PROFILE[1006], PROFILE[1006].description, reason)
    planner = _Planner(profile, profile.to_plist(), version=version, now=now, installed=installed,
                       keychain=keychain, user_accounts=user_accounts,
                       unread=_unread_payloads(validation.ignored), scep_identities=scep_identities)
    planner.check_mdm()
    planner.check_certificates()
    planner.check_accounts()
    replaced = profile.identifier if planner.replaced is not None else None
    return InstallPlan(profile, validation.ignored, tuple(planner.identities), tuple(planner.certificates),
                       replaced)


__all__ = [
    "ExchangeAccount", "InstallPlan", "InstalledPayloads", "Pkcs12Identity", "Pkcs12Refusal", "ScepIdentity",
    "file_name_of", "install_failure", "load_certificate", "open_pkcs12", "password_incorrect",
    "payload_name", "plan_install",
]
