"""Soak benchmark (issue 15): `mdmsim serve` with retention under `mdmsim load`, 2,000 devices synced every
minute for N minutes, every device sent a DeviceInformation each minute (finished commands and results pile
up without retention). Passes when server RSS grows < 5 %, the database stays flat after the retention window,
and the load run counts 0 errors.

Run: `.venv/bin/python benchmarks/soak_bench.py [--minutes 15] [--devices 2000] [--retain 5m] [--json out.json]`
(`--minutes 3` for a short run; the retention window defaults to a fifth of the run, from 30 s to 5 min).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mdm_server.retention import sweep_interval  # noqa: E402
from mdm_server.storage.sqlite_schema import WAL_SIZE_LIMIT  # noqa: E402
from mdm_world.durations import parse_duration  # noqa: E402
from mdmsim.load.admin_http import AdminHTTP, AdminHTTPError  # noqa: E402

RAMP = 60.0  # enrollments spread over the first minute
SAMPLE_EVERY = 5.0
RSS_GROWTH_LIMIT = 0.05
DB_GROWTH_LIMIT = 0.05  # "flat": within 5 % of its size once the first window has passed
WAL_BOUND = 2 * WAL_SIZE_LIMIT  # the WAL's limit plus one transaction larger than any the soak makes
QUERIES = ["DeviceName", "OSVersion", "BuildVersion", "ModelName", "Model", "ProductName", "SerialNumber",
           "DeviceCapacity", "AvailableDeviceCapacity", "BatteryLevel", "IsSupervised", "WiFiMAC", "BluetoothMAC"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def database_bytes(data_dir: Path) -> int:
    """The queue database as it takes disk: the file and its WAL."""
    return sum(p.stat().st_size for p in data_dir.glob("mdmsim.sqlite3*") if p.is_file())


def wal_bytes(data_dir: Path) -> int:
    """The WAL alone (part of database_bytes): tells a file that grows from one that only swings."""
    wal = data_dir / "mdmsim.sqlite3-wal"
    return wal.stat().st_size if wal.is_file() else 0


def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": [round(load1, 2), round(load5, 2)]}


class Server:
    """`mdmsim serve` on a fresh data dir; `url`, `enroll_url`, `pid` once it says it is listening."""

    def __init__(self, data_dir: Path, retain: float, log: Path) -> None:
        self.data_dir, self.port, self.push_port = data_dir, free_port(), free_port()
        command = [sys.executable, "-u", "-m", "mdmsim.cli", "serve", "--data-dir", str(data_dir),
                   "--listen", f"ssl:{self.port}:interface=127.0.0.1:backlog=1024",
                   "--push-link", f"tcp:{self.push_port}:interface=127.0.0.1", "--retain", f"{retain}s"]
        self.log = log.open("wb")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT)
        self.pid = self.process.pid
        self.enroll_url = ""
        deadline = time.monotonic() + 90
        for line in iter(self.process.stdout.readline, b""):
            text = line.decode(errors="replace").strip()
            if "enrollment profile:" in text:
                self.enroll_url = text.split("enrollment profile:", 1)[1].strip()
                break
            if time.monotonic() > deadline:
                break
        if not self.enroll_url:
            raise SystemExit(f"soak: the server did not start; see {log}")
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.port}"
        state = json.loads((data_dir / "server.json").read_text())
        self.admin = AdminHTTP(self.url, "admin", state["admin_password"], str(data_dir / "ca.pem"))

    def _drain(self) -> None:
        for _ in iter(self.process.stdout.readline, b""):
            pass

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        return self.process.returncode


def enrolled_devices(admin: AdminHTTP) -> list[str]:
    """Every enrolled device, page by page through the list envelope (`items`, `nextCursor`)."""
    found: list[str] = []
    cursor = ""
    while True:
        page = admin.call("GET", f"/api/v1/devices?state=enrolled&limit=1000{'&cursor=' + cursor if cursor else ''}")
        found += [device["deviceId"] for device in page["items"]]
        cursor = page.get("nextCursor") or ""
        if not cursor:
            return found


def queue_inventory(admin: AdminHTTP, devices: list[str], round_number: int) -> int:
    """A DeviceInformation for every device, delivered at its next sync; how many were refused."""
    refused = 0
    for start in range(0, len(devices), 1000):
        batch = devices[start:start + 1000]
        body = {"deviceIds": batch, "push": False,
                "command": {"RequestType": "DeviceInformation", "Queries": QUERIES}}
        try:
            answer = admin.call("POST", "/api/v1/commands", body)
        except AdminHTTPError as exc:
            print(f"soak: round {round_number}: {exc.reason}", file=sys.stderr)
            refused += len(batch)
            continue
        results = answer.get("results", {})
        refused += sum(1 for r in results.values() if r.get("status") != 201)
    return refused


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    data_dir = workdir / "data"
    server = Server(data_dir, args.retain, workdir / "server.log")
    report_path = workdir / "load.json"
    load = [sys.executable, "-m", "mdmsim.cli", "load", "--target", server.enroll_url,
            "--push-link", f"127.0.0.1:{server.push_port}", "--server-pid", str(server.pid),
            "--ca-file", str(data_dir / "ca.pem"), "--admin-password", server.admin.password or "",
            "--devices", str(args.devices), "--ramp", f"{RAMP:g}s", "--duration", f"{args.minutes * 60 + RAMP:g}s",
            "--sync-interval", "1m", "--json", str(report_path)]
    started = time.monotonic()
    fleet = subprocess.Popen(load, stdout=subprocess.DEVNULL, stderr=(workdir / "load.log").open("wb"), cwd=ROOT)
    samples: list[dict[str, float]] = []
    refused, round_starts, next_round = 0, [], started + RAMP + 15
    try:
        while fleet.poll() is None:
            now = time.monotonic()
            samples.append({"t": round(now - started, 1), "rss": rss_bytes(server.pid),
                            "db": database_bytes(data_dir), "wal": wal_bytes(data_dir)})
            if now >= next_round and now - started < args.minutes * 60 + RAMP - 30:
                round_starts.append(round(now - started, 1))
                refused += queue_inventory(server.admin, enrolled_devices(server.admin), len(round_starts))
                next_round += 60
            time.sleep(SAMPLE_EVERY)
    finally:
        if fleet.poll() is None:
            fleet.terminate()
        fleet.wait(timeout=60)
        stored = stored_commands(data_dir)
        server_exit = server.stop()
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    figures = judge(args, samples, report, refused, round_starts, fleet.returncode, server_exit)
    figures["commands_queued"], figures["commands_stored_at_end"] = len(round_starts) * args.devices, stored
    return figures


def stored_commands(data_dir: Path) -> dict[str, int]:
    """Commands in the database by status, read beside the running server (WAL readers do not block it)."""
    db = sqlite3.connect(f"file:{data_dir / 'mdmsim.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT status, count(*) FROM commands GROUP BY status").fetchall())
    finally:
        db.close()


def cycle_peaks(samples: list[dict[str, float]], starts: list[float], key: str) -> list[float]:
    """The peak of `key` in each inventory cycle (from one round to the next; the last ends with the run)."""
    bounds = [*starts, float("inf")]
    return [max((s[key] for s in samples if bounds[i] <= s["t"] < bounds[i + 1]), default=0.0)
            for i in range(len(starts))]


def judge(args: argparse.Namespace, samples: list[dict[str, float]], report: dict[str, Any], refused: int,
          round_starts: list[float], load_exit: int | None, server_exit: int | None) -> dict[str, Any]:
    # Sizes swing within each minute (a round of commands, the results, the sweeps), so cycles are compared
    # peak to peak. The warm cycle is the first to start once every device has enrolled and a whole window of
    # results has been stored and swept; no later cycle may peak higher than it by the limit.
    warm_at = RAMP + args.retain + sweep_interval(args.retain)
    # The WAL swings by a transaction around its limit (journal_size_limit): it is judged on its own bound,
    # and "flat" is asked of the database file itself; the total on disk is reported beside them.
    for sample in samples:
        sample["main"] = sample["db"] - sample.get("wal", 0)
    rss, db = cycle_peaks(samples, round_starts, "rss"), cycle_peaks(samples, round_starts, "main")
    wal = cycle_peaks(samples, round_starts, "wal")
    warm = next((i for i, start in enumerate(round_starts) if start >= warm_at), None)
    later = [] if warm is None else list(range(warm + 1, len(round_starts)))
    errors = (report.get("errors") or {}).get("total")
    figures: dict[str, Any] = {
        "devices": args.devices, "minutes": args.minutes, "retain_s": args.retain,
        "inventory_rounds_at_s": round_starts, "commands_refused": refused, "load_exit": load_exit,
        "server_exit": server_exit, "load_errors": errors, "requests": (report.get("checkin") or {}).get("count"),
        "rss_peak_per_cycle_mb": [round(v / 1e6, 1) for v in rss],
        "db_file_peak_per_cycle_mb": [round(v / 1e6, 2) for v in db], "warm_cycle": warm,
        "wal_peak_per_cycle_mb": [round(v / 1e6, 2) for v in wal],
        "disk_peak_per_cycle_mb": [round(v / 1e6, 2) for v in cycle_peaks(samples, round_starts, "db")],
        "wal_peak_mb": round(max(wal, default=0.0) / 1e6, 2), "wal_limit_mb": round(WAL_BOUND / 1e6, 2),
    }
    if warm is not None and later:
        figures["rss_growth"] = round(max(rss[i] for i in later) / rss[warm] - 1, 4)
        figures["db_growth_after_window"] = round(max(db[i] for i in later) / db[warm] - 1, 4)
    figures["pass"] = bool(
        later and figures["rss_growth"] < RSS_GROWTH_LIMIT and figures["db_growth_after_window"] < DB_GROWTH_LIMIT
        and max(wal, default=0.0) <= WAL_BOUND and errors == 0 and refused == 0 and load_exit == 0
        and server_exit in (0, -signal.SIGTERM))  # stopped by us, not crashed
    figures["samples"] = samples
    return figures


def rejudge(path: Path) -> int:
    """The verdict of a saved run under today's judge: its samples, rounds, counts and exits as recorded."""
    saved = json.loads(path.read_text())
    if not all("wal" in sample for sample in saved["samples"]):
        raise SystemExit(f"{path}: its samples have no WAL figure (a run from before it was sampled); today's "
                         "rule cannot judge it")
    args = argparse.Namespace(devices=saved["devices"], minutes=saved["minutes"], retain=saved["retain_s"])
    report = {"errors": {"total": saved["load_errors"]}, "checkin": {"count": saved["requests"]}}
    figures = judge(args, saved["samples"], report, saved["commands_refused"], saved["inventory_rounds_at_s"],
                    saved["load_exit"], saved["server_exit"])
    figures.pop("samples")
    print(json.dumps({**figures, "rejudged": str(path), "date": saved["date"], "command": saved["command"]},
                     indent=1))
    return 0 if figures["pass"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="length of the run after the ramp")
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--retain", type=parse_duration, default=None,
                        help="the server's --retain (default: a fifth of the run, from 30s to 5m)")
    parser.add_argument("--json", type=Path, help="write the figures and samples here")
    parser.add_argument("--rejudge", type=Path, metavar="JSON",
                        help="judge the samples of an earlier run's --json again (same rules as a live run)")
    args = parser.parse_args()
    if args.rejudge:
        return rejudge(args.rejudge)
    args.retain = args.retain or min(300.0, max(30.0, args.minutes * 60 / 5))
    info = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "command": " ".join(["benchmarks/soak_bench.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory(prefix="mdmsim-soak-") as workdir:
        figures = soak(args, Path(workdir))
        if not figures["pass"]:
            for name in ("server.log", "load.log"):
                tail = (Path(workdir) / name).read_text(errors="replace")[-2000:]
                print(f"--- {name} (tail)\n{tail}", file=sys.stderr)
    figures.update(info)
    samples = figures.pop("samples")
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**figures, "samples": samples}, indent=1) + "\n")
    return 0 if figures["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
