"""Admin-model benchmark: an Exchange setting with per-user S/MIME P12s rendered for 10,000 devices, queued.

Run: `.venv/bin/python benchmarks/admin_bench.py [--devices 10000] [--users N] [--max-render 10.0]`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mdm_server.admin.docstore import DocumentStore
from mdm_server.admin.identities import IdentityStore
from mdm_server.admin.render import SettingsRenderer
from mdm_server.admin.secrets_at_rest import SecretBox
from mdm_server.admin.settings import SettingKind
from mdm_server.admin.settings_store import SettingsStore
from mdm_server.admin.users import UserStore
from mdm_server.ca import CertificateAuthority
from mdm_server.pki import export_pkcs12
from mdm_server.storage import SQLiteStorage
from mdm_server.storage.interface import Device, EnrollmentState

NOW = datetime(2026, 11, 26, tzinfo=UTC)
CLOCK_START = NOW.timestamp()
OS_VERSIONS = ("9.3.5", "10.3.4", "11.4.1", "12.5.7", "15.8", "16.7.10", "17.5.1", "18.1")
TOPIC = "com.apple.mgmt.External.bench"
PASSWORD = "bench password"


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    python, sqlite = platform.python_version(), sqlite3.sqlite_version
    return f"{os.cpu_count()} CPUs ({cpu}), Python {python}, SQLite {sqlite}"


def build_admin(directory: Path,
                users: int) -> tuple[DocumentStore, SettingsStore, UserStore, IdentityStore, str]:
    """Two user-provided settings, an Exchange setting using both, and `users` users with their own P12."""
    docs = DocumentStore(directory / "admin.sqlite3")
    settings, user_store = SettingsStore(docs), UserStore(docs)
    box = SecretBox.load_or_create(directory)
    identities = IdentityStore(docs, settings, user_store, box, now=lambda: NOW)
    signing = settings.create(SettingKind.USER_PROVIDED, {"name": "Signing", "purpose": "smime_signing"})
    encryption = settings.create(SettingKind.USER_PROVIDED,
                                 {"name": "Encryption", "purpose": "smime_encryption"})
    exchange = settings.create(SettingKind.EXCHANGE, {
        "name": "Exchange", "host": "mail.example.com", "user_name": "corp\\$USERID$",
        "smime": {"enable_for_ios_9_3_3": True, "signing_enabled": True,
                  "signing_identity": signing.setting_id,
                  "encryption_by_default": True, "encryption_identity": encryption.setting_id,
                  "per_message_switch": True}})
    authority = CertificateAuthority.create("bench CA", now=NOW)
    start = time.perf_counter()
    for index in range(users):
        user_id = f"user{index:05d}"
        user_store.create({"user_id": user_id, "email": f"{user_id}@example.com"})
        certificate, key = authority.issue_device_identity(user_id, NOW)
        p12 = export_pkcs12(certificate, key, PASSWORD, user_id)
        identities.upload(user_id, p12, PASSWORD, v1_type="ALL")  # one identity for both settings
        if (index + 1) % 1000 == 0:
            print(f"  ... {index + 1} users uploaded", file=sys.stderr)
    elapsed = time.perf_counter() - start
    print(f"  setup: {users} users, each with a P12 upload (V1 type All: signing + encryption)"
          f"{elapsed:8.2f} s  {elapsed / users * 1e3:6.2f} ms/upload")
    return docs, settings, user_store, identities, exchange.setting_id


def devices(count: int, users: int) -> list[Device]:
    out = []
    for index in range(count):
        udid = hashlib.sha1(f"bench-{index}".encode()).hexdigest()
        version = OS_VERSIONS[index % len(OS_VERSIONS)]
        facts = {"UDID": udid, "OSVersion": version, "ProductName": "iPhone15,2"}
        out.append(Device(udid, EnrollmentState.ENROLLED, TOPIC, facts, "0" * 64, 0.0, 0.0, 0.0,
                          user_id=f"user{index % users:05d}"))
    return out


def render_all(renderer: SettingsRenderer, setting_id: str,
               fleet: list[Device]) -> tuple[float, float, list[float], int, list[str]]:
    """Wall time, CPU time (what other processes on a shared machine cannot inflate), per-render times."""
    timings, sizes, hashes = [], 0, []
    start, cpu = time.perf_counter(), time.process_time()
    for device in fleet:
        began = time.perf_counter()
        rendered = renderer.render(setting_id, device)
        timings.append(time.perf_counter() - began)
        sizes += len(rendered.profile)
        hashes.append(rendered.content_hash)
    return time.perf_counter() - start, time.process_time() - cpu, timings, sizes, hashes


def report(label: str, elapsed: float, cpu: float, timings: list[float], count: int) -> None:
    cuts = statistics.quantiles(timings, n=100)
    print(f"  {label:<40} {elapsed:6.2f} s wall, {cpu:6.2f} s CPU  {elapsed / count * 1e6:5.0f} µs/device  "
          f"(p50 {cuts[49] * 1e6:.0f} µs, p99 {cuts[98] * 1e6:.0f} µs)")


def apply_to_label(directory: Path, docs, renderer, users, fleet: list[Device]) -> None:
    """If labels/Apply to Label exist: enrol the fleet in SQLite storage and time Apply to Label."""
    try:
        from device_sim.clock import HeapClock
        from mdm_server.admin.apply import LabelAdmin
        from mdm_server.admin.labels import Label, LabelType
    except ImportError as exc:
        print(f"  apply to label: skipped ({exc})")
        return
    storage = SQLiteStorage(directory / "mdm.sqlite3")
    for device in fleet:
        certificate = device.device_id + "0" * 24  # 64 hex digits, unique per device
        storage.authenticate(device.device_id, device.facts, TOPIC, certificate, now=CLOCK_START)
        storage.token_update(device.device_id, bytes.fromhex(device.device_id), f"magic-{device.device_id}",
                             now=CLOCK_START)
        storage.bind_user(device.device_id, device.user_id)
    admin = LabelAdmin(storage, docs, renderer, users, clock=HeapClock(CLOCK_START))
    admin.start()
    ids = frozenset(device.device_id for device in fleet)
    admin.save_label(Label("all", "All devices", LabelType.MANUAL, device_ids=ids))
    start, cpu = time.perf_counter(), time.process_time()
    delivery = admin.apply("all", renderer.settings.list(SettingKind.EXCHANGE)[0].setting_id)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"  {'Apply to Label: render + queue':<40} {elapsed:6.2f} s wall, {cpu:6.2f} s CPU  "
          f"{elapsed / len(fleet) * 1e6:5.0f} µs/device  ({delivery.installs} InstallProfile queued)")
    storage.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000, help="number of devices (default 10000)")
    parser.add_argument("--users", type=int, help="distinct users, each with a P12 (default: one per device)")
    parser.add_argument("--max-render", type=float, default=10.0,
                        help="fail (exit 1) if rendering all devices takes longer (seconds)")
    args = parser.parse_args(argv)
    users = args.users or args.devices
    print(f"admin_bench: {args.devices} devices, {users} users; {machine()}")
    with tempfile.TemporaryDirectory(prefix="admin-bench-") as temporary:
        directory = Path(temporary)
        docs, settings, user_store, identities, setting_id = build_admin(directory, users)
        fleet = devices(args.devices, users)
        renderer = SettingsRenderer(settings, user_store, identities)
        cold, cpu, timings, size, hashes = render_all(renderer, setting_id, fleet)
        report("render all (first pass)", cold, cpu, timings, len(fleet))
        warm, warm_cpu, timings, _, again = render_all(renderer, setting_id, fleet)
        report("render all (second pass, same content)", warm, warm_cpu, timings, len(fleet))
        assert hashes == again, "content hashes changed between two renders of unchanged input"
        print(f"  profiles: {size / len(fleet):.0f} bytes on average, {size / 1e6:.1f} MB in all")
        fresh = SettingsRenderer(settings, user_store, identities)
        apply_to_label(directory, docs, fresh, user_store, fleet)
        docs.close()
    verdict = "ok" if cold <= args.max_render else "FAILED"
    print(f"render all: {cold:.2f} s against a target of {args.max_render:.1f} s: {verdict}")
    return 0 if cold <= args.max_render else 1


if __name__ == "__main__":
    sys.exit(main())
