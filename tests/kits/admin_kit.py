"""Test kit for the admin model: a fixed clock, real CA-issued identities and P12s, devices, a wired model.

Shared by test_admin_settings, test_admin_render, test_admin_users and test_cli_profile.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from pyasn1.codec.ber import decoder
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_modules import rfc5652, rfc7292

from mdm_server.admin.docstore import DocumentStore
from mdm_server.admin.identities import IdentityStore
from mdm_server.admin.pkcs12_bags import pkcs12_kdf
from mdm_server.admin.render import SettingsRenderer
from mdm_server.admin.secrets_at_rest import SecretBox
from mdm_server.admin.settings import SettingKind, StoredSetting
from mdm_server.admin.settings_store import SettingsStore
from mdm_server.admin.users import UserStore
from mdm_server.ca import CertificateAuthority, PrivateKey
from mdm_server.pki import Pkcs12Encryption, export_pkcs12
from mdm_server.storage.interface import Device, EnrollmentState

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse"


@functools.cache
def authority() -> CertificateAuthority:
    return CertificateAuthority.create("mdmsim test CA", now=NOW - timedelta(days=800))


@functools.cache
def identity(name: str, key_type: str = "ec", *,
             expired: bool = False) -> tuple[x509.Certificate, PrivateKey]:
    """A real identity issued by the test CA; `expired` ones ran out 35 days before NOW."""
    issued = NOW - timedelta(days=400) if expired else NOW - timedelta(days=1)
    return authority().issue_device_identity(name, issued, key_type)


def p12_for(name: str, password: str = PASSWORD, *, expired: bool = False,
            encryption: Pkcs12Encryption = Pkcs12Encryption.MODERN) -> bytes:
    certificate, key = identity(name, expired=expired)
    chain = [authority().certificate]
    return export_pkcs12(certificate, key, password, name, chain=chain, encryption=encryption)


def two_key_p12(password: str = PASSWORD) -> bytes:
    """A PKCS#12 with two private keys (and a valid MAC), as some exporting tools produce."""
    first = p12_for("first", password, encryption=Pkcs12Encryption.LEGACY)
    second = p12_for("second", password, encryption=Pkcs12Encryption.LEGACY)
    pfx, safes = _unpack(first)
    extra_bag = next(bag for bag in _key_bags(_unpack(second)[1]))
    for content_info in safes:
        if content_info["contentType"] == rfc5652.id_data:
            contents = _safe_contents(content_info)
            if any(bag["bagId"] == rfc7292.id_pkcs8ShroudedKeyBag for bag in contents):
                contents.append(extra_bag)
                content_info["content"] = encoder.encode(univ.OctetString(encoder.encode(contents)))
    return _repack(pfx, safes, password)


def _unpack(data: bytes) -> tuple[Any, Any]:
    pfx, _ = decoder.decode(data, asn1Spec=rfc7292.PFX())
    octets, _ = decoder.decode(bytes(pfx["authSafe"]["content"]), asn1Spec=univ.OctetString())
    safes, _ = decoder.decode(bytes(octets), asn1Spec=rfc7292.AuthenticatedSafe())
    return pfx, safes


def _safe_contents(content_info: Any) -> Any:
    octets, _ = decoder.decode(bytes(content_info["content"]), asn1Spec=univ.OctetString())
    return decoder.decode(bytes(octets), asn1Spec=rfc7292.SafeContents())[0]


def _key_bags(safes: Any) -> list[Any]:
    return [bag for info in safes if info["contentType"] == rfc5652.id_data for bag in _safe_contents(info)
            if bag["bagId"] == rfc7292.id_pkcs8ShroudedKeyBag]


def _repack(pfx: Any, safes: Any, password: str) -> bytes:
    """Re-encode the PFX and recompute its SHA-1 MAC (RFC 7292 B.2 key, HMAC over the AuthenticatedSafe)."""
    body = encoder.encode(safes)
    pfx["authSafe"]["content"] = encoder.encode(univ.OctetString(body))
    mac = pfx["macData"]
    key = pkcs12_kdf(password.encode("utf-16-be") + b"\x00\x00", bytes(mac["macSalt"]), 3,
                     int(mac["iterations"]), 20)
    mac["mac"]["digest"] = univ.OctetString(hmac.new(key, body, hashlib.sha1).digest())
    return encoder.encode(pfx)


def device(device_id: str = "UDID-0001", os_version: str | None = "17.4", product: str = "iPhone15,2", *,
           user_id: str | None = "alice", **facts: Any) -> Device:
    base: dict[str, Any] = {"UDID": device_id, "ProductName": product}
    if os_version is not None:
        base["OSVersion"] = os_version
    base.update(facts)
    base = {key: value for key, value in base.items() if value is not None}
    return Device(device_id, EnrollmentState.ENROLLED, "com.apple.mgmt.External.test", base, "0" * 64,
                  0.0, 0.0, 0.0, user_id=user_id)


@dataclass
class AdminWorld:
    """The settings/users/identities/renderer stack on one document store, with a clock tests can move."""

    docs: DocumentStore
    box: SecretBox
    now: list[datetime] = field(default_factory=lambda: [NOW])

    def __post_init__(self) -> None:
        self.settings = SettingsStore(self.docs)
        self.users = UserStore(self.docs)
        self.identities = IdentityStore(self.docs, self.settings, self.users, self.box,
                                        now=lambda: self.now[0])
        self.renderer = SettingsRenderer(self.settings, self.users, self.identities)

    def advance(self, **delta: float) -> None:
        self.now[0] += timedelta(**delta)

    def smime_pair(self, *, delete_after: int | None = None) -> tuple[StoredSetting, StoredSetting]:
        """A signing and an encryption user-provided setting, as EPMM wants (one per purpose)."""
        signing = self.settings.create(SettingKind.USER_PROVIDED, {
            "name": "S/MIME signing", "purpose": "smime_signing", "display_name": "Mail signing",
            "delete_private_keys_after_days": delete_after})
        encryption = self.settings.create(SettingKind.USER_PROVIDED, {
            "name": "S/MIME encryption", "purpose": "smime_encryption"})
        return signing, encryption

    def user(self, user_id: str = "alice", **extra: Any) -> None:
        self.users.create({"user_id": user_id, "email": f"{user_id}@example.com", **extra})


def admin_world(path: str = ":memory:", box: SecretBox | None = None) -> AdminWorld:
    return AdminWorld(DocumentStore(path), box or SecretBox.ephemeral())
