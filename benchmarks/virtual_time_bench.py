"""Virtual time at fleet scale: N devices through 24 virtual hours at a 60-minute sync interval, with one
profile rollout (Apply to Label) in the middle, all in one process on the heap clock.

    .venv/bin/python benchmarks/virtual_time_bench.py [--devices 10000] [--hours 24]

Prints wall-clock seconds for enrollment and for the simulated day, sessions and rollout completion.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from cryptography.hazmat.primitives import serialization

from device_sim.fleet import FleetSpec, parse_mix
from mdm_world import procedure as P
from mdm_world.admin_client import AdminClient
from mdm_world.roots import self_signed_root
from mdm_world.world import World


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    figures: dict[str, float | int] = {"devices": args.devices, "virtual_hours": args.hours}

    started, cpu_started = time.perf_counter(), time.process_time()
    world = World(FleetSpec(args.devices, seed=7, os_mix=parse_mix("9.3.3:5,10.3:10,12.0:20,17.5:65")))
    world.enroll(spread=1800)
    world.run_for(1900)
    figures["enrolled"] = world.observer.enrolled
    figures["enroll_wall_s"] = round(time.perf_counter() - started, 2)
    figures["enroll_cpu_s"] = round(time.process_time() - cpu_started, 2)

    admin = AdminClient(world.transport.http, "admin", world.server.admin_password)
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.sync_policy(admin, "Hourly", 60, ["all-ios"])
    root = P.certificate_setting(admin, "Corporate root",
                                 self_signed_root("Corp Root").public_bytes(serialization.Encoding.DER))
    day_started, day_cpu = time.perf_counter(), time.process_time()
    sessions_before = world.observer.sessions
    half = args.hours * 3600 / 2
    world.run_for(half)
    rollout_at = world.now()
    applied = time.perf_counter()
    report = P.apply(admin, "all-ios", root)
    figures["apply_wall_s"] = round(time.perf_counter() - applied, 2)
    figures["installs_queued"] = report["installsQueued"]
    done_at = _run_until_installed(world, args.devices, half)
    figures["rollout_complete_virtual_min"] = round((done_at - rollout_at) / 60, 1) if done_at else -1
    figures["day_wall_s"] = round(time.perf_counter() - day_started, 2)
    figures["day_cpu_s"] = round(time.process_time() - day_cpu, 2)
    figures["sessions"] = world.observer.sessions - sessions_before
    figures["cpu_us_per_session"] = round(figures["day_cpu_s"] / max(1, figures["sessions"]) * 1e6)
    figures["total_wall_s"] = round(time.perf_counter() - started, 2)
    figures["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(figures, indent=1))


def _run_until_installed(world: World, devices: int, remaining: float) -> float | None:
    """Advance in 5-minute steps; note when every device has acknowledged the rollout."""
    done_at, end = None, world.now() + remaining
    while world.now() < end:
        world.run_for(min(300, end - world.now()))
        if done_at is None and sum(r.installs_acknowledged for r in world.observer.devices.values()) >= devices:
            done_at = world.now()
    return done_at


if __name__ == "__main__":
    main()
