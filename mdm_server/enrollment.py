"""The enrollment profile a device installs: our CA as a root, a fresh identity as PKCS#12, com.apple.mdm.

Each call issues a new device identity (EC P-256 by default) with a random PKCS#12 password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mdm_protocol.payloads import configuration_profile, mdm_payload, pkcs12_payload, root_certificate_payload
from mdm_protocol.profile import encode_profile

from .ca import CertificateAuthority, KeyType
from .pki import export_pkcs12, random_password

ENROLLMENT_IDENTIFIER = "com.mdmsim.enrollment"
# Inspect and install/remove profiles (1|2), device and network information (16|32), apps (256) and the
# rest of what an MDM server usually asks; never 0, 2 needs 1, 128 needs 64 (SPEC section 4).
ACCESS_RIGHTS = 8191


@dataclass(frozen=True)
class Enrollment:
    profile: bytes  # the .mobileconfig
    identity: x509.Certificate
    user_id: str | None


def build_enrollment(
    authority: CertificateAuthority, *, server_url: str, topic: str, now: datetime,
    user_id: str | None = None, key_type: KeyType | str = KeyType.EC,
    common_name: Callable[[], str] | None = None,
) -> Enrollment:
    """A fresh enrollment profile; a `user_id` is written into the identity (x509 UID) to bind the device."""
    name = common_name() if common_name else f"mdmsim device identity {x509.random_serial_number():x}"[:64]
    certificate, key = authority.issue_device_identity(name, now, key_type, user_id=user_id)
    password = random_password()
    p12 = export_pkcs12(certificate, key, password, "MDM identity")
    root = root_certificate_payload(
        authority.certificate.public_bytes(serialization.Encoding.DER),
        identifier=f"{ENROLLMENT_IDENTIFIER}.root", file_name="mdmsim-ca.cer", display_name="mdmsim CA",
    )
    identity = pkcs12_payload(
        p12, identifier=f"{ENROLLMENT_IDENTIFIER}.identity", password=password, file_name="identity.p12",
        display_name="MDM identity",
    )
    mdm = mdm_payload(
        f"{server_url}/mdm/connect", topic, identity.uuid, identifier=f"{ENROLLMENT_IDENTIFIER}.mdm",
        check_in_url=f"{server_url}/mdm/checkin", sign_message=True, access_rights=ACCESS_RIGHTS,
        check_out_when_removed=True, display_name="mdmsim MDM",
    )
    profile = configuration_profile(
        [root, identity, mdm], identifier=ENROLLMENT_IDENTIFIER, display_name="mdmsim enrollment",
        organization="mdmsim",
    )
    return Enrollment(encode_profile(profile), certificate, user_id)


def identity_user(certificate: x509.Certificate) -> str | None:
    """The user an identity was issued for, if any (the x509 UID attribute)."""
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(values[0].value) if values else None
