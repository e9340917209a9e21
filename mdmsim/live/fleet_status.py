"""`mdmsim fleet --web`: the fleet's observer read as the live status a load run hands its progress line.

The same keys as `mdmsim load`'s status, so one dashboard shows both; percentiles are the observer's own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from device_sim.stats import FleetObserver
from mdm_protocol.report import Status


def fleet_status(observer: FleetObserver, errors: Counter[str], *, elapsed: float, duration: float,
                 devices: int) -> dict[str, Any]:
    """What the fleet has done so far: enrollments, requests and failures by kind, latency per message type."""
    messages = {name: {"count": stats.count, "errors": stats.errors,
                       "latency": {key: stats.percentile(q) for key, q in
                                   (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))}}
                for name, stats in list(observer.messages.items())}
    installs = sum(n for (kind, status), n in observer.commands.items()
                   if kind == "InstallProfile" and status is Status.ACKNOWLEDGED)
    return {
        "elapsed": elapsed, "duration": duration, "devices": devices, "enrolled": observer.enrolled,
        "enroll_failed": observer.enrollment_failures,
        "requests": sum(stats["count"] for stats in messages.values()),
        "errors": sum(stats["errors"] for stats in messages.values()),
        "requests_failed_by_kind": dict(errors), "messages": messages, "installs_acknowledged": installs,
        "rollout_acked": 0, "rollout_devices": None, "server_cpu": None, "server_rss": None,
    }
