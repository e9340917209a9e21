"""The enrollment profile a device installs: our CA as a root, the identity, com.apple.mdm.

The identity is a fresh PKCS#12 (EC P-256 by default, random password: `build_enrollment`) or a SCEP payload
with a one-time challenge, the device making its own RSA key (`build_scep_enrollment`).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from mdm_protocol.payloads import (
    configuration_profile,
    mdm_payload,
    new_uuid,
    pkcs12_payload,
    root_certificate_payload,
    scep_payload,
)
from mdm_protocol.profile import Payload, encode_profile

from .ca import CertificateAuthority, KeyType
from .enrollment_tokens import ENROLLMENT_TOKEN_OID
from .pki import export_pkcs12, random_password

ENROLLMENT_IDENTIFIER = "com.mdmsim.enrollment"
# Inspect and install/remove profiles (1|2), device and network information (16|32), apps (256) and the
# rest of what an MDM server usually asks; never 0, 2 needs 1, 128 needs 64 (SPEC section 4).
ACCESS_RIGHTS = 8191
# The PKCS#12 keeps the legacy suite every iOS 9-18 opens (3DES, SHA-1 MAC) but one KDF round, not 2,048: its
# password is random (ENROLLMENT_PASSWORD_BITS) and travels in the same profile, so stretching it defends
# nothing, while the 2,048 rounds were half the server's CPU per enrollment (a decision of the project lead).
ENROLLMENT_KDF_ROUNDS = 1
ENROLLMENT_PASSWORD_BYTES = 18
ENROLLMENT_PASSWORD_BITS = 8 * ENROLLMENT_PASSWORD_BYTES  # 144: beyond guessing even at one round
# Stand-ins for what differs between enrollment profiles; valid in their place, so the skeleton validates.
_SLOTS = {
    b"profile_uuid": "5107A000-0000-4000-8000-00000000000A",
    b"root_uuid": "5107A000-0000-4000-8000-00000000000B",
    b"identity_uuid": "5107A000-0000-4000-8000-00000000000C",
    b"mdm_uuid": "5107A000-0000-4000-8000-00000000000D",
    b"password": "mdmsim-password-slot-5107A",
}
_P12_SLOT = b"mdmsim PKCS#12 slot 5107A"
_SCEP_NAME_SLOT = "mdmsim-scep-subject-slot-5107A"


@dataclass(frozen=True)
class Enrollment:
    profile: bytes  # the .mobileconfig
    identity: x509.Certificate
    user_id: str | None


@dataclass(frozen=True, slots=True)
class ProfileTemplate:
    """The enrollment profile's XML with %-slots for its UUIDs, the PKCS#12 and its password.

    Every device's profile is the same but for those; building and validating the payloads and writing the
    plist cost more than issuing the identity, so they happen once per (CA, server URL, topic).
    """

    xml: bytes  # `bytes % mapping` fills it; a literal % in it is doubled

    def fill(self, p12: bytes, password: str) -> bytes:
        """A complete .mobileconfig with fresh PayloadUUIDs (the PKCS#12's base64 on one line: valid plist)."""
        values = {name: new_uuid().encode("ascii") for name in _SLOTS if name.endswith(b"_uuid")}
        values[b"password"] = escape(password).encode("utf-8")
        values[b"p12"] = base64.b64encode(p12)
        return self.xml % values


@functools.lru_cache(maxsize=32)
def profile_template(ca_der: bytes, server_url: str, topic: str, sign_message: bool = True) -> ProfileTemplate:
    """The validated skeleton for one CA (DER), server URL and push topic; ProfileError if it is invalid."""
    identity = pkcs12_payload(
        _P12_SLOT, identifier=f"{ENROLLMENT_IDENTIFIER}.identity", uuid=_SLOTS[b"identity_uuid"],
        password=_SLOTS[b"password"], file_name="identity.p12", display_name="MDM identity",
    )
    xml = _skeleton(ca_der, server_url, topic, identity, sign_message)
    at = xml.index(base64.b64encode(_P12_SLOT))
    start, end = xml.rindex(b"<data>", 0, at), xml.index(b"</data>", at) + len(b"</data>")
    return ProfileTemplate(_slotted(xml[:start] + b"<data>%(p12)s</data>" + xml[end:]))


@functools.lru_cache(maxsize=32)
def scep_profile_template(ca_der: bytes, server_url: str, topic: str, scep_url: str,
                          sign_message: bool = True) -> ProfileTemplate:
    """The skeleton whose identity is a SCEP payload; its Challenge is the template's password slot.

    Keysize 2048 RSA signing and encryption (Key Usage 5), CAFingerprint the SHA-256 of our CA: the device
    checks the GetCACert answer against it (newer iOS reads MD5, SHA-1 and SHA-2 fingerprints by length).
    """
    fingerprint = hashes.Hash(hashes.SHA256())
    fingerprint.update(ca_der)
    identity = scep_payload(
        scep_url, identifier=f"{ENROLLMENT_IDENTIFIER}.scep", uuid=_SLOTS[b"identity_uuid"], name="mdmsim",
        subject=[("O", "mdmsim"), ("CN", _SCEP_NAME_SLOT)], challenge=_SLOTS[b"password"], key_size=2048,
        key_type="RSA", key_usage=5, ca_fingerprint=fingerprint.finalize(), retries=3, retry_delay=10,
        display_name="MDM identity (SCEP)",
    )
    xml = _skeleton(ca_der, server_url, topic, identity, sign_message)
    return ProfileTemplate(_slotted(xml.replace(_SCEP_NAME_SLOT.encode(), b"%(p12)s")))


def _skeleton(ca_der: bytes, server_url: str, topic: str, identity: Payload, sign_message: bool) -> bytes:
    # SignMessage false: the device identifies itself by its TLS client certificate alone (mutual TLS).
    root = root_certificate_payload(
        ca_der, identifier=f"{ENROLLMENT_IDENTIFIER}.root", uuid=_SLOTS[b"root_uuid"], file_name="mdmsim-ca.cer",
        display_name="mdmsim CA",
    )
    mdm = mdm_payload(
        f"{server_url}/mdm/connect", topic, identity.uuid, identifier=f"{ENROLLMENT_IDENTIFIER}.mdm",
        uuid=_SLOTS[b"mdm_uuid"], check_in_url=f"{server_url}/mdm/checkin", sign_message=sign_message,
        access_rights=ACCESS_RIGHTS, check_out_when_removed=True, display_name="mdmsim MDM",
    )
    profile = configuration_profile(
        [root, identity, mdm], identifier=ENROLLMENT_IDENTIFIER, uuid=_SLOTS[b"profile_uuid"],
        display_name="mdmsim enrollment", organization="mdmsim",
    )
    return encode_profile(profile).replace(b"%", b"%%")


def _slotted(xml: bytes) -> bytes:
    for name, stand_in in _SLOTS.items():
        xml = xml.replace(escape(stand_in).encode("utf-8"), b"%(" + name + b")s")
    return xml


def build_enrollment(
    authority: CertificateAuthority, *, server_url: str, topic: str, now: datetime,
    user_id: str | None = None, key_type: KeyType | str = KeyType.EC,
    common_name: Callable[[], str] | None = None, token_id: str | None = None,
    sign_message: bool = True,
) -> Enrollment:
    """A fresh enrollment profile; a `user_id` is written into the identity (x509 UID) to bind the device,
    the enrollment token that issued it (`token_id`) beside it, for judging a later re-enrollment."""
    name = common_name() if common_name else f"mdmsim device identity {x509.random_serial_number():x}"[:64]
    extra = () if token_id is None else (x509.NameAttribute(ENROLLMENT_TOKEN_OID, token_id),)
    certificate, key = authority.issue_device_identity(name, now, key_type, user_id=user_id, extra=extra)
    password = random_password(ENROLLMENT_PASSWORD_BYTES)
    p12 = export_pkcs12(certificate, key, password, "MDM identity", kdf_rounds=ENROLLMENT_KDF_ROUNDS)
    ca_der = authority.certificate.public_bytes(serialization.Encoding.DER)
    template = profile_template(ca_der, server_url, topic, sign_message)
    return Enrollment(template.fill(p12, password), certificate, user_id)


def build_scep_enrollment(
    authority: CertificateAuthority, *, server_url: str, topic: str, scep_url: str, challenge: str,
    common_name: Callable[[], str] | None = None, sign_message: bool = True,
) -> bytes:
    """A fresh SCEP enrollment profile carrying `challenge` (issued, with its user, by the SCEP service)."""
    name = common_name() if common_name else f"mdmsim device identity {x509.random_serial_number():x}"[:64]
    ca_der = authority.certificate.public_bytes(serialization.Encoding.DER)
    template = scep_profile_template(ca_der, server_url, topic, scep_url, sign_message)
    values = {slot: new_uuid().encode("ascii") for slot in _SLOTS if slot.endswith(b"_uuid")}
    values[b"password"] = escape(challenge).encode("utf-8")
    values[b"p12"] = escape(name).encode("utf-8")  # the template's PKCS#12 slot holds the subject's CN
    return template.xml % values


def identity_user(certificate: x509.Certificate) -> str | None:
    """The user an identity was issued for, if any (the x509 UID attribute)."""
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(values[0].value) if values else None
