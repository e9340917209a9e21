"""The server's expectation of each mail account's S/MIME readiness (docs/readiness.md), from what a device
acknowledged: installed profiles, ProfileList and CertificateList answers. Written apart from device_sim.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from mdm_protocol.commands import CertificateListItem
from mdm_protocol.key_catalogue import key_support
from mdm_protocol.osversion import OSVersion
from mdm_protocol.payloads import EAS, MAIL, PEM, PKCS1, PKCS12, ROOT, SMIME_KEYS
from mdm_protocol.pkcs12_memo import load_pkcs12 as memo_load_pkcs12

from ..storage.interface import QueuedCommand
from .device_evidence import Evidence, InstalledProfile, gather_evidence
from .secrets_at_rest import KEY_DELIVERED

V10, V12 = OSVersion(10), OSVersion(12)
SMIME = tuple(SMIME_KEYS.values())  # Apple's S/MIME key names, shared by Mail and Exchange payloads
SIGN_UUID, ENC_UUID = "SMIMESigningCertificateUUID", "SMIMEEncryptionCertificateUUID"
MAX_CHAIN = 8


class IdentityState(StrEnum):
    READY = "ready"
    DISABLED = "disabled"
    NEEDS_IDENTITY_CHOICE = "needs-identity-choice"  # on, no identity named, the device has some: user picks
    NOT_FUNCTIONAL = "not-functional"  # on, but no usable identity


@dataclass(frozen=True, slots=True)
class Judgement:
    state: IdentityState
    reason: str


# The S/MIME rules by OS version -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountRules:
    """What an account payload turns on at one iOS version, before looking at identities."""

    signing_on: bool
    encryption_on: bool
    signing_identity: str | None  # PayloadUUID of the identity payload, if named
    encryption_identity: str | None
    encrypt_by_default: bool
    per_message_switch: bool
    signing_user_overrideable: bool
    encryption_identity_user_overrideable: bool
    ignored_keys: tuple[str, ...]
    signing_off_reason: str
    encryption_off_reason: str


def account_rules(payload_type: str, content: Mapping[str, Any], os_version: OSVersion | str) -> AccountRules:
    """Keys outside their schema range are ignored; then the rules of the device's iOS range apply."""
    version = OSVersion.parse(os_version)
    present = [key for key in SMIME if key in content]
    honoured = {key for key in present if key_support(payload_type, key, version).honoured}
    if version >= V10:
        honoured.discard("SMIMEEnabled")  # "ignored in iOS 10.0+" whatever the schema's deprecation says
    values = {key: content[key] for key in honoured}
    ignored = tuple(sorted(set(present) - honoured))
    if version < V10:
        return _before_10(values, ignored)
    if version < V12:
        return _from_10(values, ignored)
    return _from_12(values, ignored)


def _flag(values: Mapping[str, Any], key: str) -> bool:
    return values.get(key) is True


def _uuid(values: Mapping[str, Any], key: str) -> str | None:
    value = values.get(key)
    return value if isinstance(value, str) and value else None


def _before_10(values: Mapping[str, Any], ignored: tuple[str, ...]) -> AccountRules:
    on = _flag(values, "SMIMEEnabled")
    encryption_identity = _uuid(values, ENC_UUID)
    switch = on and _flag(values, "SMIMEEnablePerMessageSwitch")  # honoured from 8.0 (schema)
    off = "SMIMEEnabled is not true (below iOS 10.0 it is S/MIME's master switch)"
    return AccountRules(
        on, on, _uuid(values, SIGN_UUID), encryption_identity,
        # "Without the switch, an account with an encryption identity encrypts every message."
        on and encryption_identity is not None and not switch, switch, False, False, ignored, off, off,
    )


def _from_10(values: Mapping[str, Any], ignored: tuple[str, ...]) -> AccountRules:
    encryption_identity = _uuid(values, ENC_UUID)
    encryption_on = _flag(values, "SMIMEEncryptionEnabled") or encryption_identity is not None
    switch = _flag(values, "SMIMEEnablePerMessageSwitch")
    return AccountRules(
        _flag(values, "SMIMESigningEnabled"), encryption_on, _uuid(values, SIGN_UUID), encryption_identity,
        encryption_on and not switch, switch, False, False, ignored,
        "SMIMESigningEnabled is not true",
        "neither SMIMEEncryptionEnabled nor an encryption identity (SMIMEEncryptionCertificateUUID) is set",
    )


def _from_12(values: Mapping[str, Any], ignored: tuple[str, ...]) -> AccountRules:
    encryption_identity = _uuid(values, ENC_UUID)
    by_default = values.get("SMIMEEncryptByDefault")  # wins over the legacy SMIMEEncryptionEnabled
    if not isinstance(by_default, bool):
        legacy = values.get("SMIMEEncryptionEnabled")
        # iOS: an encryption identity with encryption left unset turns encryption on.
        by_default = legacy if isinstance(legacy, bool) else encryption_identity is not None
    switch = values.get("SMIMEEnableEncryptionPerMessageSwitch")  # wins over SMIMEEnablePerMessageSwitch
    if not isinstance(switch, bool):
        switch = _flag(values, "SMIMEEnablePerMessageSwitch")
    return AccountRules(
        _flag(values, "SMIMESigningEnabled"), by_default or switch, _uuid(values, SIGN_UUID),
        encryption_identity, by_default, switch, _flag(values, "SMIMESigningUserOverrideable"),
        _flag(values, "SMIMEEncryptionCertificateUUIDUserOverrideable"), ignored,
        "SMIMESigningEnabled is not true",
        "encryption is off by default (SMIMEEncryptByDefault) and there is no per-message switch",
    )


# Identities and trust -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    certificate: x509.Certificate | None
    has_private_key: bool
    where: str  # for reasons: which profile payload or answer it came from
    problem: str | None = None  # why the server cannot judge it at all


def _load_certificate(data: Any) -> x509.Certificate | None:
    if not isinstance(data, bytes):
        return None
    for load in (x509.load_der_x509_certificate, x509.load_pem_x509_certificate):
        try:
            return load(data)
        except ValueError:
            continue
    return None


class Keychain:
    """Identities and trust anchors on one device, from its profiles and its last CertificateList."""

    def __init__(self, evidence: Evidence, roots: Sequence[x509.Certificate] = (),
                 exclude_sha256: str | None = None) -> None:
        self.anchors: list[x509.Certificate] = list(roots)
        self.intermediates: list[x509.Certificate] = []
        self.by_uuid: dict[str, Identity] = {}
        self.listed: list[Identity] = []
        self._exclude = exclude_sha256
        for profile in evidence.profiles.values():
            self._read_profile(profile, evidence)
        for item in evidence.certificate_list or ():
            self._read_listed(item)

    def _read_profile(self, profile: InstalledProfile, evidence: Evidence) -> None:
        for payload in profile.plist.get("PayloadContent") or ():
            if not isinstance(payload, dict):
                continue
            kind, uuid = payload.get("PayloadType"), payload.get("PayloadUUID")
            if kind in (ROOT, PKCS1, PEM):
                self._add_certificate(_load_certificate(payload.get("PayloadContent")))
            elif kind == PKCS12 and isinstance(uuid, str):
                identity = self._open_pkcs12(payload, f"{profile.identifier} payload {uuid}")
                self.by_uuid[uuid] = _cross_check(identity, profile, evidence)

    def _open_pkcs12(self, payload: Mapping[str, Any], where: str) -> Identity:
        password = payload.get("Password")
        try:
            loaded = memo_load_pkcs12(
                payload.get("PayloadContent"), password.encode() if isinstance(password, str) else None
            )
            key = loaded.key
            certificate = loaded.cert.certificate if loaded.cert else None
            extra = [item.certificate for item in loaded.additional_certs]
            if certificate is None and payload.get(KEY_DELIVERED) is True and extra:
                certificate = extra.pop(0)  # redacted (secrets at rest): the identity's certificate comes first
        except (ValueError, TypeError):
            return Identity(None, False, where, f"the server cannot open the PKCS#12 of {where}")
        for other in extra:
            self._add_certificate(other)
        if certificate is None:
            return Identity(None, False, where, f"the PKCS#12 of {where} holds no certificate")
        # A redacted payload holds the certificates alone; the key went to the device.
        return Identity(certificate, key is not None or payload.get(KEY_DELIVERED) is True, where)

    def _read_listed(self, item: CertificateListItem) -> None:
        certificate = _load_certificate(item.data)
        if certificate is None:
            return
        if item.is_identity:
            self.listed.append(Identity(certificate, True, f"CertificateList ({item.common_name})"))
        else:
            self._add_certificate(certificate)

    def _add_certificate(self, certificate: x509.Certificate | None) -> None:
        if certificate is None:
            return
        target = self.anchors if certificate.subject == certificate.issuer else self.intermediates
        if certificate not in target:
            target.append(certificate)

    def trusted(self, certificate: x509.Certificate) -> bool:
        current = certificate
        for _ in range(MAX_CHAIN):
            if current in self.anchors or _issuer(current, self.anchors) is not None:
                return True
            parent = _issuer(current, self.intermediates)
            if parent is None or parent == current:
                return False
            current = parent
        return False

    def problem(self, identity: Identity, now: datetime) -> str | None:
        """Why the identity is not usable (docs/readiness.md: valid now, private key present, trusted chain)."""
        certificate = identity.certificate
        if identity.problem or certificate is None:
            return identity.problem or f"no certificate in {identity.where}"
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        if now < start:
            return f"the certificate of {identity.where} is not valid until {start}"
        if now > end:
            return f"the certificate of {identity.where} expired on {end}"
        if not identity.has_private_key:
            return f"the private key of {identity.where} is not on the device"
        if not self.trusted(certificate):
            return f"the chain of {identity.where} does not end in a root the device trusts"
        return None

    def usable(self, now: datetime) -> list[Identity]:
        """Every usable identity but the device's MDM identity, once each."""
        out: dict[bytes, Identity] = {}
        for identity in [*self.by_uuid.values(), *self.listed]:
            certificate = identity.certificate
            if certificate is None or self.problem(identity, now) is not None:
                continue
            if certificate.fingerprint(hashes.SHA256()).hex() != self._exclude:
                out.setdefault(certificate.fingerprint(hashes.SHA256()), identity)
        return list(out.values())


def _issuer(certificate: x509.Certificate, candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def _cross_check(identity: Identity, profile: InstalledProfile, evidence: Evidence) -> Identity:
    """A CertificateList answered after the install says whether the identity is still there."""
    listed, at = evidence.certificate_list, evidence.certificate_list_at
    if identity.certificate is None or listed is None or at is None or at < profile.acknowledged_at:
        return identity
    der = identity.certificate.public_bytes(Encoding.DER)
    match = next((item for item in listed if item.data == der), None)
    if match is None:
        return Identity(None, False, identity.where, f"{identity.where} is missing from the CertificateList")
    return Identity(identity.certificate, identity.has_private_key and match.is_identity, identity.where)


# Readiness per account ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountReadiness:
    profile_identifier: str
    payload_identifier: str
    payload_type: str  # com.apple.mail.managed or com.apple.eas.account
    account: str  # who and where, for the admin
    signing: Judgement
    encryption: Judgement
    encrypt_by_default: bool
    per_message_switch: bool
    signing_user_overrideable: bool
    encryption_identity_user_overrideable: bool
    ignored_keys: tuple[str, ...]
    delivery: str = "profile"  # or "declaration": profile_identifier is then the account declaration's


@dataclass(frozen=True, slots=True)
class DeviceReadiness:
    device_id: str
    os_version: str | None
    accounts: tuple[AccountReadiness, ...]
    installed_profiles: tuple[str, ...]  # identifiers, as the server believes
    profile_list_at: float | None
    certificate_list_at: float | None
    pending_installs: int
    notes: tuple[str, ...]


def expected_readiness(
    device_id: str, commands: Iterable[QueuedCommand], *, os_version: OSVersion | str | None, now: datetime,
    device_cert_sha256: str | None = None, trusted_roots: Sequence[x509.Certificate] = (),
) -> DeviceReadiness:
    """Readiness of every Mail and Exchange account in the profiles the device acknowledged.

    `trusted_roots`: roots the device trusts without a command (the enrollment profile's CA, built-ins);
    `device_cert_sha256`: the MDM identity, which is never offered for S/MIME.
    """
    commands = list(commands)
    evidence = gather_evidence(commands)
    notes = list(evidence.notes)
    accounts: list[AccountReadiness] = []
    version = None if os_version is None else OSVersion.parse(os_version)
    if version is None:
        notes.append("the device never reported its OSVersion: readiness cannot be judged")
    else:
        keychain = Keychain(evidence, trusted_roots, device_cert_sha256)
        usable = keychain.usable(now)
        for profile in sorted(evidence.profiles.values(), key=lambda p: p.identifier):
            for payload in profile.plist.get("PayloadContent") or ():
                if isinstance(payload, dict) and payload.get("PayloadType") in (MAIL, EAS):
                    accounts.append(_account(profile, payload, version, keychain, usable, now))
    return DeviceReadiness(
        device_id, None if version is None else str(version), tuple(accounts),
        tuple(sorted(evidence.profiles)), evidence.profile_list_at, evidence.certificate_list_at,
        evidence.pending_installs, tuple(notes),
    )


def _account(profile: InstalledProfile, payload: Mapping[str, Any], version: OSVersion, keychain: Keychain,
             usable: list[Identity], now: datetime) -> AccountReadiness:
    kind = payload["PayloadType"]
    rules = account_rules(kind, payload, version)
    judge = Judge(keychain, usable, now)
    return AccountReadiness(
        profile.identifier, str(payload.get("PayloadIdentifier")), kind, _describe(kind, payload),
        judge(rules.signing_on, rules.signing_identity, rules.signing_off_reason),
        judge(rules.encryption_on, rules.encryption_identity, rules.encryption_off_reason, encrypting=True),
        rules.encrypt_by_default, rules.per_message_switch, rules.signing_user_overrideable,
        rules.encryption_identity_user_overrideable, rules.ignored_keys,
    )


@dataclass(frozen=True, slots=True)
class Judge:
    keychain: Keychain
    usable: list[Identity]
    now: datetime

    def __call__(self, on: bool, named: str | None, off_reason: str, *, encrypting: bool = False) -> Judgement:
        if not on:
            return Judgement(IdentityState.DISABLED, off_reason)
        if named is None:
            offered = [item for item in self.usable if not encrypting or _rsa(item)]
            if offered:
                choice = f"no identity named: the user chooses among {len(offered)} on the device"
                return Judgement(IdentityState.NEEDS_IDENTITY_CHOICE, choice)
            rsa_needed = " with an RSA key" if encrypting and self.usable else ""
            return Judgement(IdentityState.NOT_FUNCTIONAL, f"no identity named and none usable{rsa_needed} on "
                             "the device")
        identity = self.keychain.by_uuid.get(named)
        if identity is None:
            return Judgement(IdentityState.NOT_FUNCTIONAL, f"identity payload {named} is not on the device")
        problem = self.keychain.problem(identity, self.now)
        if problem is None and encrypting and not _rsa(identity):
            # Mail is encrypted to the recipient's RSA key (CMS key transport): no one can encrypt to an EC key.
            problem = f"the identity of {identity.where} has an EC key; S/MIME mail encrypts to RSA keys only"
        if problem is not None:
            return Judgement(IdentityState.NOT_FUNCTIONAL, problem)
        return Judgement(IdentityState.READY, f"identity from {identity.where}")


def _rsa(identity: Identity) -> bool:
    return identity.certificate is not None and isinstance(identity.certificate.public_key(), rsa.RSAPublicKey)


def _describe(kind: str, payload: Mapping[str, Any]) -> str:
    if kind == EAS:
        user, host = payload.get("UserName") or payload.get("EmailAddress"), payload.get("Host")
    else:
        user = payload.get("EmailAddress") or payload.get("IncomingMailServerUsername")
        host = payload.get("IncomingMailServerHostName")
    return f"{user or '?'} on {host or '?'}"
