"""Where a sender finds recipients' encryption certificates: the organisation directory and learned ones.

A certificate of someone in another organisation arrives only through a verified signed message they sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from mdm_protocol.certificate_chain import verify_chain
from mdm_protocol.cms import SignatureError

from ..keychain import Moment, as_utc
from .errors import DirectoryError
from .smime import Verified, certificate_addresses


def normalise_address(address: str) -> str:
    """`address` trimmed and lower-cased; DirectoryError unless it looks like local@domain."""
    if not isinstance(address, str):
        raise DirectoryError(f"a mail address must be a string, not {type(address).__name__}")
    cleaned = address.strip().lower()
    local, at, domain = cleaned.rpartition("@")
    if not at or not local or not domain or "@" in local or any(c.isspace() for c in cleaned):
        raise DirectoryError(f"{address!r} is not a mail address (local@domain)")
    return cleaned


def domain_of(address: str) -> str:
    return normalise_address(address).rpartition("@")[2]


def encryption_problem(certificate: x509.Certificate, now: Moment) -> str | None:
    """Why mail cannot be encrypted to `certificate` at `now`, or None when it can."""
    moment = as_utc(now)
    if moment < certificate.not_valid_before_utc:
        return f"its certificate is not valid until {certificate.not_valid_before_utc.date().isoformat()}"
    if moment > certificate.not_valid_after_utc:
        return f"its certificate expired on {certificate.not_valid_after_utc.date().isoformat()}"
    if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
        return "its certificate has a non-RSA key and only RSA recipients can be encrypted to here"
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_encipherment:
            return "its certificate is for signing only (keyUsage lacks keyEncipherment)"
    except x509.ExtensionNotFound:
        pass
    except ValueError as exc:
        return f"its certificate has a malformed keyUsage ({exc})"
    try:
        purposes = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        return f"its certificate has a malformed extendedKeyUsage ({exc})"
    allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    return None if allowed & set(purposes) else "its certificate is not for email protection"


class CertificateDirectory:
    """One organisation's directory (as Exchange's GAL): each user's encryption certificate, by address."""

    def __init__(self, domain: str) -> None:
        self.domain = domain_of(f"postmaster@{domain}")  # the same validation as any address's domain
        self._certificates: dict[str, x509.Certificate] = {}

    def publish(self, address: str, certificate: x509.Certificate) -> None:
        """List `certificate` for `address`, replacing an older one; it must name the address."""
        address = normalise_address(address)
        if domain_of(address) != self.domain:
            raise DirectoryError(f"{address} is not in {self.domain}; the directory lists only its own users")
        if not isinstance(certificate, x509.Certificate):
            what = type(certificate).__name__
            raise DirectoryError(f"a certificate must be an x509.Certificate, not {what}")
        if address not in certificate_addresses(certificate):
            named = ", ".join(certificate_addresses(certificate)) or "no address"
            raise DirectoryError(f"the certificate offered for {address} names {named}")
        self._certificates[address] = certificate

    def withdraw(self, address: str) -> None:
        self._certificates.pop(normalise_address(address), None)

    def lookup(self, address: str) -> x509.Certificate | None:
        return self._certificates.get(normalise_address(address))

    def addresses(self) -> tuple[str, ...]:
        return tuple(sorted(self._certificates))


@dataclass(frozen=True, slots=True)
class LearnedCertificate:
    address: str
    certificate: x509.Certificate
    learned_at: datetime


class LearnedCertificates:
    """Certificates one device picked up from verified signed messages, by the address they name."""

    def __init__(self) -> None:
        self._learned: dict[str, LearnedCertificate] = {}

    def learn(self, verified: Verified, *, roots: Sequence[x509.Certificate], now: Moment) -> tuple[str, ...]:
        """Keep the signer's encryption certificate for each address the signer's certificate names.

        Candidates are the signer certificate and those attached to the signature, but only ones naming the
        signer's own address and chaining to `roots`: a signer cannot plant a certificate for someone else.
        Returns the addresses learned.
        """
        learned = []
        for address in verified.addresses:
            best = self._best_candidate(address, verified, roots, now)
            held = self._learned.get(address)
            if best is None or (held is not None
                                and held.certificate.not_valid_before_utc > best.not_valid_before_utc):
                continue
            self._learned[address] = LearnedCertificate(address, best, as_utc(now))
            learned.append(address)
        return tuple(learned)

    @staticmethod
    def _best_candidate(address: str, verified: Verified, roots: Sequence[x509.Certificate],
                        now: Moment) -> x509.Certificate | None:
        usable = []
        for candidate in (verified.signer, *verified.certificates):
            if address not in certificate_addresses(candidate) or encryption_problem(candidate, now):
                continue
            try:
                verify_chain(candidate, roots, intermediates=verified.certificates, now=as_utc(now),
                             purpose=ExtendedKeyUsageOID.EMAIL_PROTECTION)
            except SignatureError:
                continue
            usable.append(candidate)
        # The most recently issued wins: a renewed encryption certificate replaces the one it succeeds.
        return max(usable, key=lambda item: item.not_valid_before_utc, default=None)

    def lookup(self, address: str) -> x509.Certificate | None:
        held = self._learned.get(normalise_address(address))
        return None if held is None else held.certificate

    def entries(self) -> tuple[LearnedCertificate, ...]:
        return tuple(self._learned[address] for address in sorted(self._learned))
