"""Load benchmark: `mdmsim load` end to end on this machine, our server in one process, the fleet in another.

Scenarios: sustained check-ins/s over TLS (a connection per session, and keep-alive); a rollout of one
Exchange profile with a PKCS#12 identity to 10,000 enrolled devices; 50,000 devices idling on a 60-minute sync
interval for 10 minutes. Run: `.venv/bin/python benchmarks/load_bench.py [throughput|rollout|idle ...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from queue_bench import machine

from mdmsim.load.config import Realism
from mdmsim.load.orchestrator import LoadOptions, LoadRun
from mdmsim.load.rollout import RolloutPlan

CONNECTION_NAMES = {"per-session": "a new TLS connection per session (iOS-like, default)",
                    "per-request": "a new TLS connection per request", "keep-alive": "keep-alive"}
GO_REFERENCE = (750, 880)  # check-ins/s of an established Go MDM server with a Go device simulator, here


def run(options: LoadOptions, label: str, keep: Path | None) -> dict[str, Any]:
    started, load_before = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="load-bench-") as workdir:
        last: list[dict[str, Any]] = []
        report = LoadRun(options, Path(workdir), progress=lambda status: _progress(status, last)).run()
    report["bench"] = {"label": label, "wall": time.time() - started, "load_before": load_before,
                       "load_after": os.getloadavg()[0]}
    if keep:
        (keep / f"{label}.json").write_text(json.dumps(report, indent=1))
    return report


def _progress(status: dict[str, Any], last: list[dict[str, Any]]) -> None:
    if not last or status["elapsed"] - last[0]["elapsed"] >= 30:
        last[:] = [status]
        print(f"    [{status['elapsed']:5.0f} s] enrolled {status['enrolled']}/{status['devices']} "
              f"requests {status['requests']} errors {status['errors']}", flush=True)


def steady(report: dict[str, Any], settle: float = 3.0) -> dict[str, float]:
    """Requests/s and CPU over the whole seconds after every device enrolled (closed-loop check-ins only)."""
    begin = (report["enrollment"]["completed_after"] or 0.0) + settle
    points = [p for p in report["timeline"] if begin <= p["t"] < report["elapsed"] - 1.5]
    requests = sum(p["requests"] for p in points)
    seconds = max(1, len(points))
    server = [s["cpu"] for s in report["server"].get("samples", []) if begin <= s["t"] < report["elapsed"] - 1]
    fleet = [s["cpu"] for s in report["fleet"].get("samples", []) if begin <= s["t"] < report["elapsed"] - 1]
    server_cpu = sum(server) / len(server) if server else 0.0
    fleet_cpu = sum(fleet) / len(fleet) if fleet else 0.0
    rate = requests / seconds
    return {"seconds": seconds, "rate": rate, "server_cpu": server_cpu, "fleet_cpu": fleet_cpu,
            "per_server_cpu_second": rate / server_cpu if server_cpu else 0.0,
            "per_fleet_cpu_second": rate / fleet_cpu if fleet_cpu else 0.0}


def throughput(args: argparse.Namespace) -> list[str]:
    lines = [f"### Sustained check-ins ({args.devices} devices in a closed loop, {args.seconds:g} s measured)"]
    lines.append("| connections | check-ins/s | server CPU | fleet CPU | per server CPU-s | per fleet CPU-s | "
                 "Idle p50 / p99 ms | errors | load avg |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for mode in args.connections.split(","):
        options = LoadOptions(devices=args.devices, duration=3 * args.ramp + args.seconds + 10, ramp=args.ramp,
                              after_enrollment=args.seconds + 5,
                              realism=Realism(connections=mode, checkin_interval=0.0))
        name = CONNECTION_NAMES[mode]
        print(f"  throughput, {name} ...", flush=True)
        report = run(options, f"throughput-{mode}", args.keep)
        figures, idle = steady(report), report["messages"]["Idle"]["latency"]
        lines.append(
            f"| {name} | **{figures['rate']:.0f}** | {figures['server_cpu']:.0%} | {figures['fleet_cpu']:.0%} | "
            f"{figures['per_server_cpu_second']:.0f} | {figures['per_fleet_cpu_second']:.0f} | "
            f"{idle['p50'] * 1000:.0f} / {idle['p99'] * 1000:.0f} | {report['errors']['total']} | "
            f"{report['bench']['load_before']:.1f}→{report['bench']['load_after']:.1f} |")
        print("   ", lines[-1], flush=True)
    return lines


def rollout(args: argparse.Namespace) -> list[str]:
    devices = args.rollout_devices
    realism = Realism(connections=args.rollout_connections, timeout=120.0)
    options = LoadOptions(devices=devices, duration=args.rollout_ramp + 10, ramp=args.rollout_ramp,
                          processes=args.rollout_processes, realism=realism,
                          rollout=RolloutPlan.parse("exchange"), rollout_timeout=600,
                          apns_gateway=args.rollout_gateway)
    how = f"{args.rollout_processes} fleet process(es), {CONNECTION_NAMES[args.rollout_connections]}"
    if args.rollout_gateway:
        how += ", pushes through `mdmsim apns` (HTTP/2 provider client, gateway's push link)"
    print(f"  rollout to {devices} devices, {how} ...", flush=True)
    report = run(options, f"rollout-{args.rollout_processes}p-{args.rollout_connections}", args.keep)
    r = report["rollout"]
    t, ack, checkin = r["time_to"], r["push_to_ack"], r["push_to_checkin"]
    arrival_ack, arrival_checkin = r["delivery_to_ack"], r["delivery_to_checkin"]
    window = {side: _window_cpu((report.get(side) or {}).get("samples", []), r["at"], r["at"] + (t["p100"] or 0.0))
              for side in ("server", "fleet", "apns_gateway")}
    gateway = report.get("apns_gateway")
    return [
        f"### Rollout: one Exchange profile with a PKCS#12 identity to {devices} enrolled devices ({how})",
        f"- enrollment: {report['enrollment']['enrolled']}/{devices} in "
        f"{report['enrollment']['completed_after'] or float('nan'):.0f} s (ramp {args.rollout_ramp:g} s), "
        f"{report['enrollment']['failed']} failed",
        f"- queue + push for the label via the admin API: {r['admin_seconds']:.2f} s ({r['queued']} queued, "
        f"{r['pushed']} pushed)",
        f"- **time until 50% / 95% / 99% / 100% Acknowledged: {_s(t['p50'])} / {_s(t['p95'])} / {_s(t['p99'])} / "
        f"{_s(t['p100'])}** (target 100% ≤ 30 s); {r['acknowledged']}/{r['devices']} acknowledged",
        f"- from the server's push: push→check-in p50 {checkin['p50']:.2f} s, p99 {checkin['p99']:.2f} s; "
        f"**push→Acknowledged p50 {ack['p50']:.2f} s, p99 {ack['p99']:.2f} s**, max {ack['max']:.2f} s",
        f"- from the push reaching the device: →check-in p50 {arrival_checkin['p50']:.2f} s, p99 "
        f"{arrival_checkin['p99']:.2f} s; →Acknowledged p50 {arrival_ack['p50']:.2f} s, p99 "
        f"{arrival_ack['p99']:.2f} s",
        f"- CPU: server {report['server']['cpu_seconds']:.1f} s, fleet {report['fleet']['cpu_seconds']:.1f} s over "
        f"the run (enrollment included); from the rollout's start to 100 %: server {window['server']:.1f} s, "
        f"fleet {window['fleet']:.1f} s ({1000 * window['server'] / devices:.2f} / "
        f"{1000 * window['fleet'] / devices:.2f} ms per device)",
        *([f"- APNs gateway CPU {gateway.get('cpu_seconds', 0):.1f} s over the run, {window['apns_gateway']:.1f} s "
           f"from the rollout's start to 100 % ({1000 * window['apns_gateway'] / devices:.2f} ms per device), RSS "
           f"max {gateway.get('rss_max', 0) / 1e6:.0f} MB"] if gateway else []),
        f"- errors {report['errors']['total']} {report['errors']['by_kind'] or ''}; server CPU avg "
        f"{report['server']['cpu_avg']:.0%}, RSS max {report['server']['rss_max'] / 1e6:.0f} MB; fleet RSS max "
        f"{report['fleet'].get('rss_max', 0) / 1e6:.0f} MB; load avg {report['bench']['load_before']:.1f}→"
        f"{report['bench']['load_after']:.1f}",
    ]


def idle(args: argparse.Namespace) -> list[str]:
    devices = args.idle_devices
    # --duration only caps the run: enrollment on a shared machine took 3.4x the ramp once (and cut the idle part).
    options = LoadOptions(devices=devices, duration=10 * args.idle_ramp + args.idle_seconds, ramp=args.idle_ramp,
                          after_enrollment=args.idle_seconds, sync_interval=3600.0, realism=Realism(timeout=60.0))
    print(f"  {devices} devices idling ...", flush=True)
    report = run(options, "idle", args.keep)
    done = report["enrollment"]["completed_after"]
    window = report["elapsed"] - done if done else 0.0
    server, fleet = report["server"], report["fleet"]
    syncs = server.get("metrics", {}).get("pushes", {}).get("accepted", 0)
    return [
        f"### {devices} enrolled devices idling on a 60-minute sync interval",
        f"- enrollment: {report['enrollment']['enrolled']}/{devices} in {done or float('nan'):.0f} s "
        f"(ramp {args.idle_ramp:g} s), {report['enrollment']['failed']} failed; then idle for {window:.0f} s",
        f"- **fleet RSS {fleet.get('rss_max', 0) / 1e6:.0f} MB ({fleet.get('rss_max', 0) / devices / 1e3:.1f} KB "
        f"per device), server RSS {server['rss_max'] / 1e6:.0f} MB; errors {report['errors']['total']}** "
        f"{report['errors']['by_kind'] or ''}",
        f"- sync pushes accepted {syncs:.0f} ({syncs / max(1.0, report['elapsed']) * 60:.0f}/min, expected "
        f"~{devices / 60:.0f}/min once enrolled), Idle check-ins {report['messages'].get('Idle', {}).get('count', 0)}, "
        f"Idle p99 {report['messages'].get('Idle', {}).get('latency', {}).get('p99', 0) * 1000:.0f} ms",
        f"- server CPU avg {server['cpu_avg']:.0%}, fleet CPU avg {fleet.get('cpu_avg', 0):.0%}; load avg "
        f"{report['bench']['load_before']:.1f}→{report['bench']['load_after']:.1f}",
    ]


def _window_cpu(samples: list[dict[str, float]], begin: float, end: float) -> float:
    """CPU-seconds between two run times: each sample's CPU share times the interval it covers."""
    used, previous = 0.0, None
    for sample in samples:
        if previous is not None and begin <= sample["t"] <= end + 1.0:
            used += sample["cpu"] * (sample["t"] - previous)
        previous = sample["t"]
    return used


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["throughput", "rollout", "idle"],
                        choices=["throughput", "rollout", "idle"])
    parser.add_argument("--devices", type=int, default=1000, help="throughput: devices in the closed loop")
    parser.add_argument("--ramp", type=float, default=15.0, help="throughput: enrollment ramp (s)")
    parser.add_argument("--seconds", type=float, default=40.0, help="throughput: measured seconds per mode")
    parser.add_argument("--rollout-devices", type=int, default=10_000)
    parser.add_argument("--rollout-ramp", type=float, default=90.0)
    parser.add_argument("--rollout-processes", type=int, default=1, help="rollout: fleet worker processes")
    parser.add_argument("--rollout-gateway", action="store_true",
                        help="rollout: our server pushes through an `mdmsim apns` process, the fleet attaches there")
    parser.add_argument("--connections", default="per-session,keep-alive",
                        help="throughput: connection modes to run, comma-separated (per-session, per-request, "
                             "keep-alive)")
    parser.add_argument("--rollout-connections", default="per-session", choices=list(CONNECTION_NAMES))
    parser.add_argument("--rollout-keep-alive", dest="rollout_connections", action="store_const",
                        const="keep-alive", help="rollout: --rollout-connections keep-alive")
    parser.add_argument("--idle-devices", type=int, default=50_000)
    parser.add_argument("--idle-ramp", type=float, default=300.0)
    parser.add_argument("--idle-seconds", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, help="write each run's full JSON report into this directory")
    args = parser.parse_args(argv)
    print(f"{machine()}; {time.strftime('%Y-%m-%d')}", flush=True)
    lines: list[str] = []
    for name in args.scenarios:
        lines += [*globals()[name](args), ""]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
