"""A simulated iOS keychain: identities and certificates from profiles, trusted roots, the key archive.

Judges whether an identity is usable for S/MIME (docs/readiness.md): in its validity period, key present, chain trusted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
EMAIL_PROTECTION = ExtendedKeyUsageOID.EMAIL_PROTECTION
_PURPOSE_NAMES = {EMAIL_PROTECTION: "email protection (S/MIME)",
                  ExtendedKeyUsageOID.CLIENT_AUTH: "client authentication"}
# Room for root → policy CA → issuing CA → leaf and more; bounds path building on hostile input.
MAX_CHAIN_DEPTH = 6


class KeychainError(Exception):
    """Something the keychain refuses (a clash of identities, a bad argument); `reason` is for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Moment = datetime | float  # a datetime, or POSIX seconds as the fleet's clocks give them


def as_utc(moment: Moment) -> datetime:
    """`moment` as an aware UTC datetime; a naive datetime is taken as UTC, as cryptography does."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(moment, int | float) and not isinstance(moment, bool):
        try:
            return datetime.fromtimestamp(moment, UTC)
        except (OverflowError, OSError, ValueError):
            raise KeychainError(f"{moment!r} seconds is outside the range of dates") from None
    raise KeychainError(f"a time must be a datetime or POSIX seconds, not {type(moment).__name__}")


def fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())


def common_name(certificate: x509.Certificate) -> str:
    """The subject's CN, else the whole subject (CertificateList needs some name for every certificate)."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names and isinstance(names[0].value, str) and names[0].value:
        return names[0].value
    return certificate.subject.rfc4514_string() or "(no subject)"


# Every device of a fleet installs the same few roots: their self-signatures (~0.1 ms each) are checked once per
# process. Certificates hash and compare by their DER, so an equal certificate finds the answer too.
_SELF_SIGNED: dict[x509.Certificate, bool] = {}
MAX_SELF_SIGNED_MEMO = 1024


def is_self_signed(certificate: x509.Certificate) -> bool:
    known = _SELF_SIGNED.get(certificate)
    if known is not None:
        return known
    answer = _signs_itself(certificate)
    if len(_SELF_SIGNED) < MAX_SELF_SIGNED_MEMO:  # full: the fleet's roots, seen first, stay; others pay each time
        _SELF_SIGNED[certificate] = answer
    return answer


def _signs_itself(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (InvalidSignature, ValueError, TypeError):  # TypeError: a key type that cannot sign certificates
        return False
    return True


@dataclass(frozen=True, slots=True)
class Identity:
    """A certificate with (until a policy deletes it) its private key, installed by one profile payload."""

    payload_uuid: str
    profile_identifier: str
    certificate: x509.Certificate
    private_key: PrivateKey | None
    file_name: str | None
    installed_at: datetime  # any Moment is accepted and stored as UTC
    chain: tuple[x509.Certificate, ...] = ()  # CA certificates that came in the same PKCS#12
    key_deleted_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.private_key is not None and self.private_key.public_key() != self.certificate.public_key():
            raise KeychainError(f"identity {self.payload_uuid}: the key does not match the certificate")
        object.__setattr__(self, "installed_at", as_utc(self.installed_at))
        object.__setattr__(self, "chain", tuple(self.chain))

    @property
    def common_name(self) -> str:
        return common_name(self.certificate)

    @property
    def has_private_key(self) -> bool:
        return self.private_key is not None


class ArchivedKey(NamedTuple):
    """A private key kept after its identity left, so mail encrypted to it stays readable (docs/readiness.md)."""

    certificate: x509.Certificate
    private_key: PrivateKey


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    """A certificate without a key (root or intermediate) and the profile that installed it."""

    certificate: x509.Certificate
    profile_identifier: str
    trusted_root: bool


def _may_encrypt(certificate: x509.Certificate) -> bool:
    """Whether a certificate's key could have decrypted mail: no EKU, or one allowing emailProtection."""
    return _allows_purpose(certificate, EMAIL_PROTECTION)


def _allows_purpose(certificate: x509.Certificate, purpose: x509.ObjectIdentifier | None) -> bool:
    if purpose is None:
        return True
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    except ValueError:
        return False
    return purpose in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages


def _leaf_policy() -> verification.ExtensionPolicy:
    # Device and S/MIME identities rarely carry SANs, and purpose is checked separately (per caller).
    agnostic = verification.Criticality.AGNOSTIC
    return (verification.ExtensionPolicy.webpki_defaults_ee()
            .may_be_present(x509.SubjectAlternativeName, agnostic, None)
            .may_be_present(x509.ExtendedKeyUsage, agnostic, None)
            .may_be_present(x509.AuthorityKeyIdentifier, agnostic, None)
            .may_be_present(x509.BasicConstraints, agnostic, None))


def verified_chain(certificate: x509.Certificate, roots: Sequence[x509.Certificate],
                   intermediates: Sequence[x509.Certificate], now: Moment) -> tuple[x509.Certificate, ...]:
    """The path from `certificate` to a trusted root at `now`; KeychainError saying why there is none.

    A self-signed certificate chains only to itself, so it passes only when it is one of `roots`.
    """
    if not roots:
        raise KeychainError("the device trusts no root certificates")
    verifier = (verification.PolicyBuilder().store(verification.Store(list(roots))).time(as_utc(now))
                .max_chain_depth(MAX_CHAIN_DEPTH)
                .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=_leaf_policy())
                .build_client_verifier())
    try:
        verified = verifier.verify(certificate, list(intermediates))
    except verification.VerificationError as exc:
        raise KeychainError(f"its chain does not end in a trusted root ({exc})") from None
    return tuple(verified.chain)


class Keychain:
    """Identities by PayloadUUID, profile certificates, the built-in root store and the key archive."""

    def __init__(self, builtin_roots: Iterable[x509.Certificate] = ()) -> None:
        self._builtin = tuple(builtin_roots)
        self._identities: dict[str, Identity] = {}
        self._certificates: list[StoredCertificate] = []
        self._archive: list[ArchivedKey] = []
        # Verified paths by leaf and p12 chain, with the window in which every certificate on them is valid;
        # readiness asks again on every change, and path building is the costly part. Cleared when certs move.
        self._paths: dict[tuple[bytes, ...], tuple[datetime, datetime, x509.Certificate]] = {}
        self._roots: tuple[x509.Certificate, ...] | None = None  # trusted_roots(), until certificates move

    @classmethod
    def restored(cls, identities: Iterable[Identity], certificates: Iterable[StoredCertificate],
                 archive: Iterable[ArchivedKey] = ()) -> Keychain:
        """A keychain as it was saved (device_sim.device_snapshot): identities, certificates in install order,
        the key archive."""
        keychain = cls()
        keychain._identities = {item.payload_uuid: item for item in identities}
        keychain._certificates = list(certificates)
        keychain._archive = list(archive)
        return keychain

    # --- profile installs and removals -------------------------------------------------------------------

    def add_identity(self, identity: Identity) -> None:
        """Store `identity`; one that is current again leaves the archive (it is no longer archived)."""
        held = self._identities.get(identity.payload_uuid)
        if held is not None and held.profile_identifier != identity.profile_identifier:
            raise KeychainError(f"PayloadUUID {identity.payload_uuid} already holds an identity of profile "
                                f"{held.profile_identifier!r}")
        self._identities[identity.payload_uuid] = identity
        if self._archive:  # certificates compare by their DER: equal ones are the same identity again
            self._archive = [item for item in self._archive if item.certificate != identity.certificate]

    def add_root(self, certificate: x509.Certificate, profile_identifier: str) -> None:
        """A root installed by a profile: trusted for TLS and S/MIME chains (MDM-installed, SPEC 5)."""
        self._certificates.append(StoredCertificate(certificate, profile_identifier, True))
        self._paths.clear()
        self._roots = None

    def add_intermediate(self, certificate: x509.Certificate, profile_identifier: str) -> None:
        """A CA or other certificate a profile installed that is not a root: used to build chains only."""
        self._certificates.append(StoredCertificate(certificate, profile_identifier, False))
        self._paths.clear()
        self._roots = None

    def remove_profile(self, profile_identifier: str, *, keep_encryption_keys: bool) -> tuple[Identity, ...]:
        """Drop everything `profile_identifier` installed; return the identities that left.

        With `keep_encryption_keys`, keys that could have decrypted mail go to the archive (docs/readiness.md).
        """
        leaving = tuple(item for item in self._identities.values()
                        if item.profile_identifier == profile_identifier)
        for identity in leaving:
            del self._identities[identity.payload_uuid]
            if keep_encryption_keys and identity.private_key is not None:
                self._archive_key(identity)
        self._certificates = [item for item in self._certificates
                              if item.profile_identifier != profile_identifier]
        self._paths.clear()
        self._roots = None
        return leaving

    def _archive_key(self, identity: Identity) -> None:
        if not _may_encrypt(identity.certificate) or identity.private_key is None:
            return
        # The archive holds keys no identity holds any more; another profile may still carry the same one.
        known = {fingerprint(item.certificate) for item in self._archive}
        known |= {fingerprint(item.certificate) for item in self._identities.values()}
        if fingerprint(identity.certificate) not in known:
            self._archive.append(ArchivedKey(identity.certificate, identity.private_key))

    def delete_private_keys_older_than(self, days: int, now: Moment, *,
                                       payload_uuids: Collection[str] | None = None) -> tuple[str, ...]:
        """EPMM's "Delete Private Keys After Days": keys of identities installed `days` or more ago go.

        The identities stay (their certificates still list) but are no longer usable. `payload_uuids`
        limits the policy to the identities of one user-provided certificate setting. Returns the UUIDs hit.
        """
        if not isinstance(days, int) or isinstance(days, bool) or days < 0:
            raise KeychainError(f"days must be a non-negative integer, not {days!r}")
        moment = as_utc(now)
        cutoff = moment - timedelta(days=days)
        hit = []
        for uuid, identity in list(self._identities.items()):
            in_scope = payload_uuids is None or uuid in payload_uuids
            if in_scope and identity.private_key is not None and identity.installed_at <= cutoff:
                self._identities[uuid] = replace(identity, private_key=None, key_deleted_at=moment)
                hit.append(uuid)
        return tuple(hit)

    # --- queries -------------------------------------------------------------------------------------------

    def identity(self, payload_uuid: str) -> Identity | None:
        return self._identities.get(payload_uuid)

    def identities(self) -> tuple[Identity, ...]:
        return tuple(self._identities.values())

    def certificates(self) -> tuple[StoredCertificate, ...]:
        """Roots and intermediates installed by profiles, in install order."""
        return tuple(self._certificates)

    def trusted_roots(self) -> tuple[x509.Certificate, ...]:
        """Roots installed by profiles, then the built-in store; each certificate once."""
        if self._roots is None:
            self._roots = self._collect_roots()
        return self._roots

    def _collect_roots(self) -> tuple[x509.Certificate, ...]:
        # Certificates hash and compare by their DER: no SHA-256 per root on every enrollment.
        profile_roots = [item.certificate for item in self._certificates if item.trusted_root]
        return tuple(dict.fromkeys(profile_roots + list(self._builtin)))

    @property
    def archive(self) -> tuple[ArchivedKey, ...]:
        return tuple(self._archive)

    def decryption_keys(self) -> tuple[ArchivedKey, ...]:
        """Every (certificate, key) that can decrypt mail: current identities first, then the archive."""
        current = tuple(ArchivedKey(item.certificate, item.private_key) for item in self._identities.values()
                        if item.private_key is not None)
        return current + tuple(self._archive)

    def usable(self, identity: Identity, now: Moment, *,
               purpose: x509.ObjectIdentifier | None = EMAIL_PROTECTION) -> tuple[bool, str]:
        """Whether `identity` can sign/decrypt at `now` (docs/readiness.md), and a human reason either way."""
        name = f"“{identity.common_name}”"
        if identity.private_key is None:
            if identity.key_deleted_at is not None:
                when = identity.key_deleted_at.date().isoformat()
                return False, f"the private key of {name} was deleted on {when} (Delete Private Keys policy)"
            return False, f"the keychain holds no private key for {name}"
        moment = as_utc(now)
        certificate = identity.certificate
        if moment < certificate.not_valid_before_utc:
            return False, f"{name} is not valid until {certificate.not_valid_before_utc.isoformat()}"
        if moment > certificate.not_valid_after_utc:
            return False, f"{name} expired on {certificate.not_valid_after_utc.isoformat()}"
        if not _allows_purpose(certificate, purpose):
            what = _PURPOSE_NAMES.get(purpose, purpose.dotted_string) if purpose else ""
            return False, f"{name} is not for {what}: its extendedKeyUsage excludes it"
        try:
            root = self._trusted_root(identity, moment)
        except KeychainError as exc:
            return False, f"{name}: {exc.reason}"
        until = certificate.not_valid_after_utc.date().isoformat()
        return True, f"{name} is valid until {until} and chains to “{common_name(root)}”"

    def _trusted_root(self, identity: Identity, moment: datetime) -> x509.Certificate:
        key = (fingerprint(identity.certificate), *(fingerprint(item) for item in identity.chain))
        cached = self._paths.get(key)
        if cached is not None and cached[0] <= moment <= cached[1]:
            return cached[2]
        intermediates = list(identity.chain) + [item.certificate for item in self._certificates
                                                if not item.trusted_root]
        path = verified_chain(identity.certificate, self.trusted_roots(), intermediates, moment)
        start = max(item.not_valid_before_utc for item in path)
        self._paths[key] = (start, min(item.not_valid_after_utc for item in path), path[-1])
        return path[-1]

    def usable_identities(self, now: Moment, *,
                          purpose: x509.ObjectIdentifier | None = EMAIL_PROTECTION) -> tuple[Identity, ...]:
        return tuple(item for item in self._identities.values() if self.usable(item, now, purpose=purpose)[0])
