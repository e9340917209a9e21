"""Certificate chains for device identities and S/MIME: chain to trusted roots, validity, extended key usage.

cryptography's verifier with a leaf policy that allows what iOS devices and mail certificates carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from .errors import SignatureError

# cryptography parses certificate fields lazily, so reading one can raise any of these on hostile input.
CERTIFICATE_ERRORS = (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
_PURPOSE_NAMES = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
}


# --- certificate chains --------------------------------------------------------------------------------


def verify_chain(
    certificate: x509.Certificate,
    roots: Sequence[x509.Certificate],
    *,
    intermediates: Sequence[x509.Certificate] = (),
    now: datetime,
    purpose: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> None:
    """Check `certificate` chains to one of `roots` and is valid at `now` (naive means UTC).

    The leaf needs no SAN (device identities have none); if it has an extendedKeyUsage it must allow
    `purpose` (clientAuth for device identities, emailProtection for S/MIME; None skips the check).
    """
    moment = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    _check_validity(certificate, moment)
    _check_purpose(certificate, purpose)
    if not roots:
        raise SignatureError("no trusted root certificates to verify against")
    leaf_policy = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, verification.Criticality.AGNOSTIC, None)
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(roots)))
        .time(moment)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(certificate, list(intermediates))
    except (verification.VerificationError, *CERTIFICATE_ERRORS) as exc:
        raise SignatureError(f"certificate does not chain to a trusted CA: {exc}") from None


def _check_validity(certificate: x509.Certificate, moment: datetime) -> None:
    try:
        subject = certificate.subject.rfc4514_string()
    except CERTIFICATE_ERRORS:
        subject = "(malformed subject)"
    if moment < certificate.not_valid_before_utc:
        raise SignatureError(f"certificate {subject} is not valid before {certificate.not_valid_before_utc}")
    if moment > certificate.not_valid_after_utc:
        raise SignatureError(f"certificate {subject} expired at {certificate.not_valid_after_utc}")


def _check_purpose(certificate: x509.Certificate, purpose: x509.ObjectIdentifier | None) -> None:
    if purpose is None:
        return
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    except CERTIFICATE_ERRORS as exc:
        raise SignatureError(f"certificate extensions are malformed: {exc}") from None
    if purpose not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        name = _PURPOSE_NAMES.get(purpose, purpose.dotted_string)
        raise SignatureError(f"certificate is not for {name}: its extendedKeyUsage excludes it")
