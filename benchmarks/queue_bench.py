"""Command-queue benchmark: one ~8 KB InstallProfile queued to 10,000 devices in SQLite, then drained.

Run: `.venv/bin/python benchmarks/queue_bench.py [--devices 10000] [--max-enqueue 2.0] [--backend sqlite]`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from protocol_bench import SEED, TOPIC, profile_bytes

from mdm_protocol.commands import install_profile
from mdm_protocol.plist import encode_plist
from mdm_protocol.report import encode_command
from mdm_server.storage import MemoryStorage, NewCommand, SQLiteStorage, Storage

FACTS = {"OSVersion": "17.5.1", "BuildVersion": "21F90", "ProductName": "iPhone15,2"}
NOW = 1_785_000_000.0


def timed(label: str, count: int, work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    elapsed = time.perf_counter() - start
    print(f"  {label:<52} {elapsed:8.3f} s  {elapsed / count * 1e6:9.1f} µs/device")
    return elapsed


def enroll_all(store: Storage, devices: list[str]) -> None:
    for device_id in devices:
        cert = hashlib.sha256(device_id.encode()).hexdigest()
        store.authenticate(device_id, {**FACTS, "SerialNumber": device_id[:12].upper()}, TOPIC, cert, now=NOW)
        store.token_update(device_id, device_id.encode()[:32], f"magic-{device_id}", now=NOW)


def drain_all(store: Storage, devices: list[str]) -> None:
    """What the server does per device: next command, send it, record the device's Acknowledged."""
    for device_id in devices:
        queued = store.next_command(device_id, now=NOW + 1)
        store.mark_sent(device_id, queued.command_uuid, now=NOW + 1)
        report = encode_plist(
            {"UDID": device_id, "CommandUUID": queued.command_uuid, "Status": "Acknowledged"}
        )
        store.record_result(device_id, queued.command_uuid, "Acknowledged", report, now=NOW + 2)
    assert store.next_command(devices[0], now=NOW + 3) is None


def run(make_store: Callable[[], Storage], devices: list[str], shared: NewCommand, per_device) -> float:
    store = make_store()
    timed("enrol (Authenticate + TokenUpdate)", len(devices), lambda: enroll_all(store, devices))
    enqueue = timed(
        "enqueue one InstallProfile to all (one call)",
        len(devices),
        lambda: store.enqueue(devices, shared, now=NOW),
    )
    timed("drain: next_command + mark_sent + record_result", len(devices), lambda: drain_all(store, devices))
    timed(
        "enqueue a distinct InstallProfile per device",
        len(devices),
        lambda: store.enqueue(devices, per_device.__getitem__, now=NOW + 10),
    )
    store.close()
    return enqueue


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000, help="number of devices (default 10000)")
    parser.add_argument(
        "--max-enqueue", type=float, default=2.0, help="fail (exit 1) above this many seconds"
    )
    parser.add_argument("--backend", choices=["sqlite", "memory", "both"], default="both")
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    profile = profile_bytes(rng)
    devices = [f"{rng.getrandbits(160):040x}" for _ in range(args.devices)]
    command = install_profile(profile, command_uuid="B5A0D5A2-4C0A-4D87-9D2C-8E1F3C1D6A11")
    shared = NewCommand(command.command_uuid, "InstallProfile", encode_command(command))
    per_device = {}
    for device_id in devices:
        own = install_profile(profile, command_uuid=f"{device_id[:8]}-0000-4000-8000-{device_id[-12:]}")
        per_device[device_id] = NewCommand(own.command_uuid, "InstallProfile", encode_command(own))
    print(f"{machine()}\n{args.devices} devices; InstallProfile of {len(shared.payload)} bytes "
          f"(a {len(profile)}-byte profile: root CA, PKCS#12 identity, Exchange with S/MIME)")  # fmt: skip
    enqueue_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
        path = Path(tmp) / "mdmsim.sqlite3"
        backends = {"sqlite": lambda: SQLiteStorage(path), "memory": MemoryStorage}
        for name in ["sqlite", "memory"] if args.backend == "both" else [args.backend]:
            print(f"{name}:")
            seconds = run(backends[name], devices, shared, per_device)
            if name == "sqlite":
                enqueue_seconds = seconds
                size = sum(f.stat().st_size for f in Path(tmp).iterdir())
                print(f"  {'database + WAL on disk':<52} {size / 1e6:8.1f} MB")
    if enqueue_seconds > args.max_enqueue:
        print(f"FAIL: enqueue took {enqueue_seconds:.3f} s, above {args.max_enqueue} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
