"""The server's profile-signing identity (made at first start in the data dir, issued by our CA) and what it
signs: enrollment profiles and InstallProfile payloads, as CMS SignedData the way Fleet, Zentral and MicroMDM send.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mdm_protocol.profile_signing import sign_profile

from .ca import CertificateAuthority, KeyType, as_utc, private_key_pem, write_private_file

SIGNER_CERTIFICATE_FILE = "profile-signing.pem"
SIGNER_KEY_FILE = "profile-signing.key"
SIGNER_NAME = "mdmsim profile signing"
_CMS_START = b"\x30"  # a DER SEQUENCE: already CMS (the admin sent a signed or encrypted profile as is)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProfileSigner:
    """Signs profile plists; the CA certificate travels in each signature so a device can build the chain."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...]

    @classmethod
    def load_or_create(cls, data_dir: Path | str, authority: CertificateAuthority, *, now: datetime,
                       key_type: KeyType | str = KeyType.EC) -> ProfileSigner:
        """The identity kept in `data_dir` (profile-signing.pem, .key 0600); a new one when it does not fit the CA
        or has expired."""
        directory = Path(data_dir)
        cert_path, key_path = directory / SIGNER_CERTIFICATE_FILE, directory / SIGNER_KEY_FILE
        chain = (authority.certificate,)
        if cert_path.exists() and key_path.exists():
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            fits = (certificate.issuer == authority.certificate.subject
                    and certificate.not_valid_after_utc > as_utc(now))
            if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) and fits \
                    and key.public_key() == certificate.public_key():
                return cls(certificate, key, chain)
            log.warning("the profile-signing identity in %s does not fit the CA or has expired; issuing a new one",
                        directory)
        certificate, new_key = authority.issue_signing_identity(SIGNER_NAME, now, key_type=key_type)
        assert isinstance(new_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(key_path, private_key_pem(new_key))
        write_private_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
        return cls(certificate, new_key, chain)

    def sign(self, profile: bytes) -> bytes:
        """`profile` as a signed profile; one that is already CMS (signed or encrypted by the admin) is left as is."""
        if profile.startswith(_CMS_START):
            return profile
        return sign_profile(profile, self.certificate, self.private_key, chain=self.chain)


__all__ = ["SIGNER_CERTIFICATE_FILE", "SIGNER_KEY_FILE", "ProfileSigner"]
