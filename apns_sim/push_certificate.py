"""Apple's conventions for MDM push certificates (topic in the subject UID, an extension for the environment,
the push hosts), and a provider's client certificate read as a `ProviderIdentity`. Pure: cryptography only.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from .provider_api import Environment, ProviderIdentity

# Apple marks a push certificate's environment with these extensions (value: DER NULL).
APNS_DEVELOPMENT_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.3.1")
APNS_PRODUCTION_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.3.2")
APPLE_HOSTS = ("api.push.apple.com", "api.development.push.apple.com")
GATEWAY_NAMES = ("localhost", "127.0.0.1", *APPLE_HOSTS)  # what the gateway's TLS certificate names


def provider_identity(certificate: x509.Certificate | None, authority: x509.Certificate) -> ProviderIdentity | None:
    """What a push certificate says: topic (subject UID), environment, validity, and whether we issued it."""
    if certificate is None:
        return None
    try:
        certificate.verify_directly_issued_by(authority)
        ours = True
    except (ValueError, TypeError, InvalidSignature):
        ours = False
    uids = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    topic = str(uids[0].value) if uids else None
    oids = {extension.oid for extension in certificate.extensions}
    environment = None
    if APNS_PRODUCTION_OID in oids:
        environment = Environment.PRODUCTION
    elif APNS_DEVELOPMENT_OID in oids:
        environment = Environment.DEVELOPMENT
    return ProviderIdentity(topic, environment, certificate.not_valid_before_utc.timestamp(),
                            certificate.not_valid_after_utc.timestamp(), ours)
