"""Admin-console benchmark: the device list pages and searches with 10,000 devices on SQLite, server time per page.

Run: `.venv/bin/python benchmarks/console_bench.py [--devices 10000] [--rounds 7] [--max-page-ms 300]`.
Each page goes through the real twisted.web tree in memory (no sockets), signed in with a console session; the
time is the server's (the request in, the HTML out). Exit 1 if a page's median is over the target.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from device_sim.clock import HeapClock
from device_sim.memory_http import MemoryHTTP
from mdm_server.app import DATABASE_FILE, MDMServer, ServerConfig
from mdm_server.storage import SQLiteStorage

sys.path.insert(0, str(Path(__file__).parent))
from admin_bench import machine  # noqa: E402  (one machine line for every benchmark)

START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC).timestamp()
TOPIC = "com.apple.mgmt.External.console-bench"
OS_VERSIONS = ("15.8", "16.7.10", "17.5.1", "18.1")


def udid(index: int) -> str:
    return hashlib.sha1(f"console-bench-{index}".encode()).hexdigest().upper()


def fill(storage: SQLiteStorage, count: int) -> None:
    """`count` enrolled devices with the facts an Authenticate carries, and a push token each."""
    for index in range(count):
        device_id = udid(index)
        facts = {"UDID": device_id, "DeviceName": f"Phone {index:05d}", "SerialNumber": f"F2LX{index:06d}",
                 "ProductName": "iPhone15,2", "OSVersion": OS_VERSIONS[index % len(OS_VERSIONS)],
                 "IMEI": f"35 {index:012d}"}
        storage.authenticate(device_id, facts, TOPIC, hashlib.sha256(device_id.encode()).hexdigest(), now=START)
        storage.token_update(device_id, hashlib.sha256(device_id.encode()).digest(), f"magic-{index}", now=START)
        storage.bind_user(device_id, f"user{index:05d}")


class Console:
    """A signed-in console session over the in-memory site."""

    def __init__(self, server: MDMServer) -> None:
        self.http = MemoryHTTP(server.site)
        answer = self.http.request("POST", "/admin/login", urlencode(
            {"username": "admin", "password": server.admin_password}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status == 303, answer.body
        self.cookie = answer.headers["set-cookie"].split(";", 1)[0]

    def get(self, path: str) -> tuple[float, float, str]:
        wall, cpu = time.perf_counter(), time.process_time()
        answer = self.http.request("GET", path, b"", {"Cookie": self.cookie})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert answer.status == 200, (path, answer.status)
        return wall, cpu, answer.body.decode()


def measure(console: Console, label: str, path: str, rounds: int, expect_rows: int | None) -> float:
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu, page = console.get(path)
        walls.append(wall)
        cpus.append(cpu)
    rows = len(re.findall(r'<tr><td><a href="/admin/devices/', page))
    assert expect_rows is None or rows == expect_rows, f"{label}: {rows} rows, expected {expect_rows}"
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(f"  {label:<44} {wall * 1e3:7.1f} ms wall  {cpu * 1e3:7.1f} ms CPU  (median of {rounds}; {rows} rows)")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-page-ms", type=float, default=300.0, help="fail if a page's median is over this")
    args = parser.parse_args(argv)
    print(f"console_bench: {args.devices} devices on SQLite; {machine()}")
    with tempfile.TemporaryDirectory(prefix="console-bench-") as temporary:
        data = Path(temporary) / "data"
        data.mkdir()
        storage = SQLiteStorage(data / DATABASE_FILE)
        began = time.perf_counter()
        fill(storage, args.devices)
        print(f"  setup: {args.devices} devices in {time.perf_counter() - began:.1f} s")
        server = MDMServer(ServerConfig(data_dir=data, in_memory=False), clock=HeapClock(START), storage=storage)
        server.startService()
        console = Console(server)
        middle = sorted(udid(i) for i in range(args.devices))[args.devices // 2]
        last = args.devices - 1
        pages = [
            ("first page", "/admin/devices", 50),
            ("a middle page (cursor)", "/admin/devices?" + urlencode({"cursor": middle}), 50),
            ("search, a full page of matches ('phone')", "/admin/devices?q=phone", 50),
            ("search, one match (a serial number)", "/admin/devices?" + urlencode({"q": f"F2LX{last:06d}"}), 1),
            ("search, no match", "/admin/devices?q=no-such-device", 0),
        ]
        worst = max(measure(console, label, path, args.rounds, rows) for label, path, rows in pages)
        server.stopService()
        storage.close()
    verdict = "ok" if worst * 1e3 <= args.max_page_ms else "FAILED"
    print(f"slowest page: {worst * 1e3:.1f} ms against a target of {args.max_page_ms:.0f} ms: {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
