"""DDM benchmark: an Exchange declaration with an S/MIME identity asset rolled out to N devices over TLS.

`mdmsim load` end to end (our server in one process, the fleet in another, per-session TLS connections): every
device's user gets an EC signing identity first (not timed), then Apply to Label of an Exchange setting with
`delivery: declaration`. Measured: time until every device's DDM status report shows the account declaration
active and valid, and DDM status reports handled per server CPU-second over that window.
Run: `.venv/bin/python benchmarks/ddm_bench.py [--devices 10000] [--ramp 90]`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from load_bench import _window_cpu
from queue_bench import machine

from device_sim.fleet import FleetSpec
from mdm_world.procedure import P12_PASSWORD, Organisation
from mdmsim.load.config import Realism
from mdmsim.load.orchestrator import LoadOptions, LoadRun
from mdmsim.load.rollout import EXCHANGE_SETTING, RolloutPlan

OS_MIX = (("17.5", 1),)
TARGETS = {"all_active_s": 60.0, "status_per_cpu_s": 1500.0}  # at 10,000 devices


def identities(devices: int, seed: int, setting: dict[str, Any]):
    """The rollout's `prepare`: every fleet user, with an EC signing identity, on the server; the setting then
    names the user-provided setting they were uploaded to."""
    def prepare(admin, device_ids: list[str]) -> None:
        began = time.time()
        slot = admin.call("POST", "/api/v2/settings", {"kind": "user_provided", "name": "load signing",
                                                       "purpose": "smime_signing"})["id"]
        setting["smime"] = {"signing_enabled": True, "signing_identity": slot}
        org = Organisation.create("Load", "example.com", now=datetime.now(UTC))
        spec = FleetSpec(devices, seed=seed, os_mix=OS_MIX)
        for index in range(devices):
            user = spec.facts(index).user
            admin.call("POST", "/api/v2/users", {"userId": user.user_id, "email": user.email})
            org.issue(user.email, "signing", now=datetime.now(UTC))
            p12 = base64.b64encode(org.p12(user.email, "signing")).decode()
            admin.call("POST", f"/api/v2/users/{user.user_id}/certificates",
                       {"settingId": slot, "p12": p12, "password": P12_PASSWORD})
        print(f"    {devices} users and signing identities uploaded in {time.time() - began:.0f} s", flush=True)
    return prepare


def status_handling(reports: int = 2000) -> dict[str, float]:
    """In process, no TLS: one iOS 17.5 device's real status report (account declared active) replayed to the
    server's check-in endpoint `reports` times; the server's CPU per report (signature check, decode, merge,
    store) measured with time.process_time. The device's HTTP path is the one a TLS request takes after TLS."""
    from mdm_world.admin_client import AdminClient
    from mdm_world.world import World

    world = World(FleetSpec(1, seed=3, os_mix=OS_MIX))
    [runner] = world.enroll()
    world.run_for(60)
    sent: list[Any] = []
    transport_send = world.transport.send

    def recording(request, roots, session=None):
        if request.message == "DeclarativeManagement:status":
            sent.append(request)
        return transport_send(request, roots, session)

    runner.transport = type("Recording", (), {"send": staticmethod(recording)})()
    admin = AdminClient(world.admin_http, "admin", world.server.admin_password)
    admin.post("/api/v2/settings", {**EXCHANGE_SETTING, "delivery": "declaration"})
    udid = runner.machine.facts.udid
    admin.post("/api/v2/labels", {"id": "l", "name": "L", "type": "manual", "deviceUuids": [udid]})
    admin.post("/api/v2/labels/l/apply", {"settingId": "s1"})
    admin.put("/api/v2/devices/wakeup", {"deviceUuids": [udid]})
    world.run_for(60)
    request = sent[-1]
    path = "/" + request.url.split("://", 1)[-1].partition("/")[2]
    headers = {"Content-Type": request.content_type, "Mdm-Signature": request.signature}
    begin = time.process_time()
    for _ in range(reports):
        answer = world.admin_http.request("PUT", path, request.body, headers)
        assert answer.status == 200, answer.status
    used = time.process_time() - begin
    return {"reports": reports, "cpu": used, "per_cpu_second": reports / used, "bytes": len(request.body)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--ramp", type=float, default=90.0, help="enrollment ramp, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the run's JSON report in this directory")
    args = parser.parse_args(argv)
    body = {**EXCHANGE_SETTING, "name": "bench Exchange", "user_name": "$USERID$", "email_address": "$EMAIL$",
            "delivery": "declaration"}
    plan = dataclasses.replace(RolloutPlan(None, setting_body=body, source="Exchange + identity asset, declared",
                                           delivery="declaration"),
                               prepare=identities(args.devices, args.seed, body))
    options = LoadOptions(devices=args.devices, duration=args.ramp + 10, ramp=args.ramp, seed=args.seed,
                          os_mix=OS_MIX, rollout=plan, rollout_timeout=600,
                          realism=Realism(connections="per-session", timeout=120.0))
    print(f"ddm_bench: {args.devices} devices (iOS 17.5) over TLS on {machine()}", flush=True)
    started, load_before = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ddm-bench-") as workdir:
        report = LoadRun(options, Path(workdir)).run()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "ddm-bench.json").write_text(json.dumps(report, indent=1))
    print("\n".join(summary(report, args.devices, time.time() - started, load_before)))
    alone = status_handling()
    print(f"- in process (no TLS, no network): {alone['reports']} status reports of {alone['bytes']} bytes in "
          f"{alone['cpu']:.2f} CPU-s: **{alone['per_cpu_second']:.0f} per CPU-second** "
          f"({1000 * alone['cpu'] / alone['reports']:.2f} ms each)")
    return 0 if report["rollout"] and report["rollout"]["completion"] == 1.0 else 1


def summary(report: dict[str, Any], devices: int, wall: float, load_before: float) -> list[str]:
    r = report["rollout"]
    done = r["time_to"]["p100"]
    end = r["at"] + (done if done is not None else r["time_to"]["p50"] or 0.0)
    server_cpu = _window_cpu(report["server"].get("samples", []), r["at"], end)
    fleet_cpu = _window_cpu(report["fleet"].get("samples", []), r["at"], end)
    status = r["ddm_convergence"]["status_reports"]
    convergence = r["ddm_convergence"]["from_push"]
    rate = status / server_cpu if server_cpu else float("nan")
    return [
        f"- devices {devices}: enrolled {report['enrollment']['enrolled']}, errors {report['errors']['total']} "
        f"{report['errors']['by_kind'] or ''}; run wall {wall:.0f} s; load avg {load_before:.1f}→"
        f"{os.getloadavg()[0]:.1f}",
        f"- declared: {r['acknowledged']}/{r['devices']} reported the account active and valid; time to 50 / 95 / "
        f"100 %: {_s(r['time_to']['p50'])} / {_s(r['time_to']['p95'])} / **{_s(done)}** "
        f"(target ≤ {TARGETS['all_active_s']:.0f} s at 10,000)",
        f"- per device, server's push → status report showing it active: p50 {convergence['p50']:.2f} s, "
        f"p99 {convergence['p99']:.2f} s, max {convergence['max']:.2f} s",
        f"- DDM status reports {status} in {server_cpu:.1f} server CPU-s (fleet {fleet_cpu:.1f} CPU-s): "
        f"**{rate:.0f} per server CPU-second** (target ≥ {TARGETS['status_per_cpu_s']:.0f}); every DDM request "
        f"{sum(v['count'] for k, v in report['messages'].items() if k.startswith(('DeclarativeManagement', 'DDM')))}",
    ]


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
