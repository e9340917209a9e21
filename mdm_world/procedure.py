"""The product brief's procedure, step by step through the admin API: what the demo and scenarios do.

Root certificate setting, user-provided certificate settings, users' P12 uploads, Exchange settings, labels,
Apply to Label, sync. Certificates come from a real organisation CA; nothing here touches server internals.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from device_sim.mail.issuer import OrganisationCA, Usage

from .admin_client import AdminClient

P12_PASSWORD = "portal-upload"


def _rsa_key_der(_: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Organisation:
    """An organisation's S/MIME PKI: its CA and each user's (certificate, key) per purpose."""

    name: str
    domain: str
    ca: OrganisationCA
    identities: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    _rsa_pool: Any = None
    _pending: Any = None  # iterator over keys being generated in other processes

    def prepare_rsa_keys(self, count: int) -> None:
        """Start generating `count` RSA-2048 keys on the other cores (66 ms each) while the caller works."""
        self._rsa_pool = concurrent.futures.ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 1))
        self._pending = self._rsa_pool.map(_rsa_key_der, range(count), chunksize=8)

    def close(self) -> None:
        """Stop the key generators (keys not taken yet are dropped); later keys are made in-process."""
        if self._rsa_pool is not None:
            self._rsa_pool.shutdown(wait=True, cancel_futures=True)
            self._rsa_pool = self._pending = None

    def _rsa_key(self) -> rsa.RSAPrivateKey:
        if self._pending is not None:
            try:
                # Our own fresh keys: OpenSSL's consistency check would only repeat the generator's work.
                der = next(self._pending)
                return serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
            except StopIteration:
                self.close()
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @classmethod
    def create(cls, name: str, domain: str, *, now: datetime) -> Organisation:
        return cls(name, domain, OrganisationCA.create(name, domain, ec.generate_private_key(ec.SECP256R1()),
                                                       now=now))

    def issue(self, address: str, purpose: str, *, now: datetime) -> tuple[Any, Any]:
        """Signing identities are EC (fast); encryption needs RSA (CMS key transport)."""
        if purpose == "signing":
            key = ec.generate_private_key(ec.SECP256R1())
            usage = Usage.SIGNING
        else:
            key = self._rsa_key()
            usage = Usage.ENCRYPTION
        certificate = self.ca.issue(address, key, now=now, usage=usage)
        self.identities[(address, purpose)] = (certificate, key)
        return certificate, key

    def p12(self, address: str, purpose: str) -> bytes:
        certificate, key = self.identities[(address, purpose)]
        # What a CA or Keychain Access exports: AES-256/SHA-256 with OpenSSL's 2048 KDF rounds (cryptography's
        # BestAvailableEncryption picks far more rounds, which no real portal upload has).
        encryption = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
                      .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
                      .build(P12_PASSWORD.encode()))
        return pkcs12.serialize_key_and_certificates(address.encode(), key, certificate, None, encryption)

    def root_der(self) -> bytes:
        return self.ca.certificate.public_bytes(serialization.Encoding.DER)


def data(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def certificate_setting(admin: AdminClient, name: str, der: bytes) -> str:
    body = {"kind": "certificate", "name": name, "certificate": data(der), "fileName": f"{name}.cer"}
    return admin.post("/api/v2/settings", body)["id"]


def user_provided_setting(admin: AdminClient, name: str, purpose: str, **options: Any) -> str:
    body = {"kind": "user_provided", "name": name, "purpose": purpose, "displayName": name, **options}
    return admin.post("/api/v2/settings", body)["id"]


def exchange_setting(admin: AdminClient, name: str, host: str, smime: dict[str, Any], **options: Any) -> str:
    body = {"kind": "exchange", "name": name, "host": host, "smime": smime, **options}
    return admin.post("/api/v2/settings", body)["id"]


def add_user(admin: AdminClient, user_id: str, email: str, name: str) -> None:
    admin.post("/api/v2/users", {"userId": user_id, "email": email, "displayName": name})


def upload(admin: AdminClient, user_id: str, setting_id: str, p12: bytes) -> dict[str, Any]:
    body = {"settingId": setting_id, "p12": data(p12), "password": P12_PASSWORD}
    return admin.post(f"/api/v2/users/{user_id}/certificates", body)


def certificate_slot(admin: AdminClient, user_id: str, setting_id: str) -> dict[str, Any] | None:
    """A user's certificate slot for one setting ({"settingId", "current", "history"}), None if never set."""
    items = admin.get(f"/api/v2/users/{user_id}/certificates?limit=10000")["items"]
    return next((item for item in items if item["settingId"] == setting_id), None)


def manual_label(admin: AdminClient, label_id: str, name: str, device_ids: Iterable[str]) -> None:
    admin.post("/api/v2/labels", {"id": label_id, "name": name, "type": "manual",
                                  "deviceUuids": sorted(device_ids)})


def filter_label(
    admin: AdminClient, label_id: str, name: str, criteria: dict[str, Any], **extra: Any
) -> None:
    body = {"id": label_id, "name": name, "type": "filter", "criteria": criteria, **extra}
    admin.post("/api/v2/labels", body)


def apply(admin: AdminClient, label_id: str, setting_id: str) -> dict[str, Any]:
    return admin.post(f"/api/v2/labels/{label_id}/apply", {"settingId": setting_id})


def sync_policy(
    admin: AdminClient, name: str, minutes: float, label_ids: list[str], priority: int = 1
) -> None:
    body = {"name": name, "syncIntervalMinutes": minutes, "labelIds": label_ids, "priority": priority}
    admin.post("/api/v2/sync-policies", body)


def force_check_in(admin: AdminClient, device_ids: Iterable[str]) -> dict[str, Any]:
    return admin.put("/api/v2/devices/wakeup", {"deviceUuids": sorted(device_ids)})


def device_commands(admin: AdminClient, device_id: str, request_type: str | None = None) -> list[dict[str, Any]]:
    """The server's record of one device's commands (GET /api/v1/devices/{id}/commands), oldest first,
    optionally only those of one RequestType; each has at least `commandUuid`, `requestType`, `status`."""
    commands = admin.get(f"/api/v1/devices/{device_id}/commands?limit=10000")["items"]
    return [c for c in commands if request_type is None or c["requestType"] == request_type]
