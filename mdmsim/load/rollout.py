"""Rolling a profile out to the fleet's label through the server's admin API, and the sync policy for it.

A setting (id or JSON file) goes by Apply to Label (V2); a .mobileconfig or `exchange` by InstallProfile (V1).
With a delivery (`declaration`, `auto`), the setting (or a built-in V2 Exchange setting) is declared instead (DDM).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from mdm_protocol.payloads import configuration_profile, eas_payload, pkcs12_payload, root_certificate_payload
from mdm_protocol.profile import encode_profile
from mdm_server.ca import CertificateAuthority
from mdm_server.pki import export_pkcs12

from .admin_http import AdminHTTP, AdminHTTPError

BUILTIN_EXCHANGE = "exchange"
EXCHANGE_IDENTIFIER = "com.example.load.exchange"
DELIVERIES = ("profile", "declaration", "auto")
# The built-in Exchange account as a V2 setting, for a declared rollout (fixed user: load fleets have no users).
EXCHANGE_SETTING = {"kind": "exchange", "name": "mdmsim load Exchange", "host": "mail.example.com",
                    "user_name": "load", "email_address": "load@example.com"}


class RolloutError(Exception):
    """The rollout could not be started; the reason says what the server refused or lacks."""


def exchange_profile() -> bytes:
    """An Exchange account with its S/MIME identity as a PKCS#12 and the root that issued it (a fresh CA)."""
    now = datetime.now(UTC)
    authority = CertificateAuthority.create("mdmsim load mail CA", now=now)
    certificate, key = authority.issue_device_identity("load@example.com", now)
    p12 = export_pkcs12(certificate, key, "load-secret", "Load S/MIME")
    root = root_certificate_payload(authority.certificate.public_bytes(serialization.Encoding.DER),
                                    identifier=f"{EXCHANGE_IDENTIFIER}.root")
    identity = pkcs12_payload(p12, identifier=f"{EXCHANGE_IDENTIFIER}.identity", password="load-secret",
                              file_name="load.p12")
    eas = eas_payload(identifier=f"{EXCHANGE_IDENTIFIER}.eas", host="mail.example.com", user_name="load",
                      email_address="load@example.com", ssl=True, payload_certificate_uuid=identity.uuid)
    return encode_profile(configuration_profile([root, identity, eas], identifier=EXCHANGE_IDENTIFIER,
                                                display_name="Load test mail"))


@dataclass(frozen=True)
class RolloutPlan:
    """`setting`: a server setting id (V2); `profile`: profile bytes sent as InstallProfile (V1)."""

    at: float | None  # seconds after the run started; None: once every device has enrolled (or failed)
    setting: str | None = None
    profile: bytes | None = None
    source: str = ""
    setting_body: dict[str, Any] | None = None  # a V2 setting to create on the target, then apply
    delivery: str | None = None  # the setting's `delivery` (profile|declaration|auto); None: as the setting says
    # Called with the admin API and the enrolled device ids before the rollout's clock starts (a benchmark
    # uploading users' identities, say); not part of what is measured.
    prepare: Callable[[AdminHTTP, list[str]], None] | None = field(default=None, compare=False)

    @property
    def declarative(self) -> bool:
        """Measured as DDM: a device has it once its status report shows the account declaration active."""
        return self.delivery in ("declaration", "auto")

    @classmethod
    def parse(cls, text: str, at: float | None = None, delivery: str | None = None) -> RolloutPlan:
        if delivery is not None:
            return cls._with_delivery(text, at, delivery)
        if text == BUILTIN_EXCHANGE:
            return cls(at, profile=exchange_profile(), source="built-in Exchange profile with a PKCS#12 identity")
        path = Path(text)
        if path.suffix == ".json":
            return cls(at, setting_body=_setting_file(path), source=f"setting from {path}")
        if path.suffix in (".mobileconfig", ".plist") or path.is_file():
            try:
                return cls(at, profile=path.read_bytes(), source=str(path))
            except OSError as exc:
                raise RolloutError(f"cannot read the profile {path}: {exc.strerror}") from None
        return cls(at, setting=text, source=f"setting {text}")

    @classmethod
    def _with_delivery(cls, text: str, at: float | None, delivery: str) -> RolloutPlan:
        if delivery not in DELIVERIES:
            raise RolloutError(f"--rollout-delivery must be one of {', '.join(DELIVERIES)}, not {delivery!r}")
        if text == BUILTIN_EXCHANGE:
            body, source = dict(EXCHANGE_SETTING), "built-in Exchange setting"
        elif Path(text).suffix == ".json":
            body, source = _setting_file(Path(text)), f"setting from {text}"
        else:
            raise RolloutError("--rollout-delivery needs a setting to create: a .json setting file or "
                               f"'{BUILTIN_EXCHANGE}' (an existing setting keeps the delivery it has)")
        return cls(at, setting_body={**body, "delivery": delivery}, source=f"{source}, delivery {delivery}",
                   delivery=delivery)


@dataclass
class RolloutStart:
    started_at: float  # wall clock, just before the first admin call
    devices: int
    method: str  # "apply-to-label" | "install-profile"
    label_id: str | None = None
    queued: int = 0
    pushed: int = 0
    admin_seconds: float = 0.0  # how long the admin calls took (queueing and pushing 10,000 is not free)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "devices": self.devices, "method": self.method,
                "label_id": self.label_id, "queued": self.queued, "pushed": self.pushed,
                "admin_seconds": self.admin_seconds, "errors": self.errors[:20]}


def start_rollout(admin: AdminHTTP, plan: RolloutPlan, device_ids: list[str], run_id: str) -> RolloutStart:
    if not device_ids:
        raise RolloutError("no device has enrolled yet: nothing to roll out to")
    if plan.setting_body is not None:
        try:
            created = admin.call("POST", "/api/v2/settings", plan.setting_body)
        except AdminHTTPError as exc:
            raise RolloutError(f"the server refused the setting: {exc.reason}") from None
        return _apply_to_label(admin, created["id"], device_ids, run_id)
    if plan.setting is not None:
        return _apply_to_label(admin, plan.setting, device_ids, run_id)
    return _install_profile(admin, plan.profile, device_ids)


def _setting_file(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except OSError as exc:
        raise RolloutError(f"cannot read the setting {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise RolloutError(f"{path} is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
        raise RolloutError(f'{path} must hold a setting object with its "kind" (e.g. "exchange")')
    return body


def _install_profile(admin: AdminHTTP, profile: bytes, device_ids: list[str]) -> RolloutStart:
    started = time.time()
    command = {"RequestType": "InstallProfile", "Payload": {"$data": base64.b64encode(profile).decode()}}
    try:
        answer = admin.call("POST", "/api/v1/commands", {"deviceIds": device_ids, "command": command,
                                                         "push": True})
    except AdminHTTPError as exc:
        raise RolloutError(f"the server refused the InstallProfile batch: {exc.reason}") from None
    start = RolloutStart(started, len(device_ids), "install-profile", admin_seconds=time.time() - started)
    for device_id, result in answer["results"].items():
        if result.get("status") == 201:
            start.queued += 1
            start.pushed += bool(result.get("push", {}).get("pushed"))
        else:
            start.errors.append(f"{device_id}: {result.get('error')}")
    return start


def _apply_to_label(admin: AdminHTTP, setting: str, device_ids: list[str], run_id: str) -> RolloutStart:
    if not admin.has("/api/v2/labels"):
        raise RolloutError("this server has no labels API (/api/v2/labels): roll out a .mobileconfig file or "
                           f"the built-in '{BUILTIN_EXCHANGE}' profile instead of a setting id")
    started = time.time()
    try:
        label = admin.call("POST", "/api/v2/labels", {"name": f"mdmsim load {run_id}", "type": "manual",
                                                      "deviceUuids": device_ids})
        applied = admin.call("POST", f"/api/v2/labels/{label['id']}/apply", {"settingId": setting})
        woken = admin.call("PUT", "/api/v2/devices/wakeup", {"labelId": label["id"]})
    except AdminHTTPError as exc:
        raise RolloutError(f"Apply to Label failed: {exc.reason}") from None
    # A declared setting queues DeclarativeManagement commands (in `queued`), not InstallProfile.
    queued = applied["installsQueued"] + sum(1 for q in applied.get("queued", ())
                                             if q.get("requestType") == "DeclarativeManagement")
    start = RolloutStart(started, len(device_ids), "apply-to-label", label["id"],
                         queued=queued, pushed=woken["pushed"],
                         admin_seconds=time.time() - started)
    start.errors += [f"{e['deviceUuid']}: {e['reason']}" for e in applied.get("errors", [])]
    return start


def set_sync_interval(admin: AdminHTTP, seconds: float, run_id: str) -> str:
    """A filter label of every device and a top-priority sync policy on it; returns the policy id."""
    if not admin.has("/api/v2/sync-policies"):
        raise RolloutError("this server has no sync policies API (/api/v2/sync-policies), so "
                           "--sync-interval cannot be set; leave it out or use --checkin-interval")
    try:
        label = admin.call("POST", "/api/v2/labels", {"name": f"mdmsim load {run_id} (all)", "type": "filter",
                                                      "criteria": {}})
        policy = admin.call("POST", "/api/v2/sync-policies", {
            "id": f"mdmsim-load-{uuid.uuid4().hex[:8]}", "name": f"mdmsim load {run_id}", "priority": 1_000_000,
            "syncIntervalMinutes": seconds / 60, "labelIds": [label["id"]]})
    except AdminHTTPError as exc:
        raise RolloutError(f"could not set the sync interval: {exc.reason}") from None
    return policy["id"]
