"""Merging the workers' final reports into the run's report: counts add up, histograms are added.

The report is a plain dict (the JSON file's content); CSV, HTML, the table and thresholds all read it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import histograms as h
from .meter import ROLLOUT_SERIES, reason_kind

REPORT_VERSION = 2  # 2: raw histograms (`histograms`), failures by kind, interrupted runs
COMPLETION_POINTS = (50, 95, 99, 100)


def merge_finals(finals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The fleet-side part of the report from every worker's `final` message."""
    messages = h.merge_messages(final["messages"] for final in finals)
    total = h.total_of(messages)
    errors: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    enroll_failures: Counter[str] = Counter()
    for final in finals:
        errors.update(final["error_kinds"])
        commands.update(final["commands"])
        enroll_failures.update(final["enroll_failures"])
    return {
        "messages": {name: stats.summary() for name, stats in sorted(messages.items())},
        "checkin": {**total.summary()},
        "histograms": {"messages": {name: h.encode(stats.histogram) for name, stats in sorted(messages.items())},
                       "counts": {name: {"count": stats.count, "errors": stats.errors}
                                  for name, stats in sorted(messages.items())}},
        "failures": failures(finals, errors, enroll_failures),
        "commands": dict(sorted(commands.items())),
        "sessions": sum(final["sessions"] for final in finals),
        "errors": {"by_kind": dict(sorted(errors.items())), "total": sum(errors.values())},
        "enrollment": {
            "devices": sum(final["devices"] for final in finals),
            "enrolled": sum(final["enrolled"] for final in finals),
            "failed": sum(enroll_failures.values()),
            "failures": dict(enroll_failures.most_common(20)),
            "offline": sum(final["offline"] for final in finals),
        },
        "fleet": {
            "workers": len(finals), "cpu_seconds": sum(final["cpu"] for final in finals),
            "rss": sum(final["rss"] for final in finals), "peak_rss": sum(final["peak_rss"] for final in finals),
            "per_worker": [_worker(final) for final in finals],
        },
    }


def failures(finals: Sequence[Mapping[str, Any]], errors: Mapping[str, int],
             enroll_failures: Mapping[str, int]) -> dict[str, Any]:
    """Every failure by kind: enrollments (refused, tls, timeout, http_NNN, cannot simulate...), requests,
    the push link (drops, failed connects, seconds down, summed over the workers' links) and stalled devices."""
    enrollment: Counter[str] = Counter()
    for reason, count in enroll_failures.items():
        enrollment[reason_kind(reason)] += count
    links = [final["push_link"] for final in finals if final.get("push_link")]
    link = None
    if links:
        link = {key: sum(part[key] for part in links) for key in
                ("connects", "disconnects", "connect_failures", "undeliverable")}
        link["missed_while_down"] = sum(part.get("missed_while_down", 0) for part in links)
        link.update(connected=all(part["connected"] for part in links),
                    down_seconds=round(sum(part["down_seconds"] for part in links), 3))
    return {"enrollment": dict(sorted(enrollment.items())), "requests": dict(sorted(errors.items())),
            "push_link": link, "pushes_received": sum(final.get("pushes_received", 0) for final in finals),
            "stalled_devices": sum(final.get("stalled", 0) for final in finals),
            "unfinished_enrollments": sum(final.get("unfinished", 0) for final in finals)}


def live_failures(latest: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The same accounting from the workers' progress messages, for the live line."""
    errors: Counter[str] = Counter()
    for part in latest:
        errors.update(part.get("error_kinds", {}))
    links = [part["push_link"] for part in latest if part.get("push_link")]
    return {"requests_failed_by_kind": dict(errors),
            "push_link_down": round(sum(part["down_seconds"] for part in links), 1) if links else None,
            "push_link_connected": all(part["connected"] for part in links) if links else None,
            "push_link_missed": sum(part.get("missed_while_down", 0) for part in links) if links else None}


def live_messages(latest: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per message type from the workers' progress messages (when they carry them): the report's shape and
    merged histograms, percentiles without the mean (see `histograms.live_percentiles`)."""
    merged = h.merge_messages(part["messages"] for part in latest if "messages" in part)
    return {name: {"count": stats.count, "errors": stats.errors, "latency": h.live_percentiles(stats.histogram)}
            for name, stats in sorted(merged.items())}


def live_second(buckets: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The latest second among these timeline buckets (added across workers): requests, p50/p95/p99 in seconds."""
    seconds = timeline_buckets(buckets)
    if not seconds:
        return None
    stats = h.MessageStats.from_wire(seconds[-1])
    return {"second": seconds[-1]["second"], "requests": stats.count, **h.live_percentiles(stats.histogram)}


def _worker(final: Mapping[str, Any]) -> dict[str, Any]:
    """One worker's own totals: they add up to the merged figures (its percentiles are for reading only)."""
    total = h.total_of(h.merge_messages([final["messages"]]))
    return {"worker": final.get("worker"), "devices": final["devices"], "enrolled": final["enrolled"],
            "requests": total.count, "errors": total.errors, "cpu_seconds": final["cpu"], "rss": final["rss"],
            "p95": h.LatencySummary.of(total.histogram).p95}


def merge_timeline(buckets: Iterable[Mapping[str, Any]], start: float) -> list[dict[str, Any]]:
    """Per-second buckets from every worker, added by second; latency percentiles of each merged second."""
    out = []
    for bucket in timeline_buckets(buckets):
        stats = h.MessageStats.from_wire(bucket)
        summary = h.LatencySummary.of(stats.histogram)
        out.append({"t": bucket["second"] - start, "requests": stats.count, "errors": stats.errors,
                    "p50": summary.p50, "p95": summary.p95, "p99": summary.p99, "max": summary.max})
    return out


def timeline_buckets(buckets: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Buckets (`second` since the epoch, MessageStats wire fields) added by second, in order: what a report
    keeps raw so that runs from several hosts merge exactly."""
    by_second: dict[int, h.MessageStats] = {}
    for bucket in buckets:
        stats = by_second.setdefault(int(bucket["second"]), h.MessageStats())
        stats.add(h.MessageStats.from_wire(bucket))
    return [{"second": second, **by_second[second].to_wire()} for second in sorted(by_second)]


def rollout_raw(finals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The rollout's series merged, still encoded, and every device's acknowledgement time: kept in the report."""
    parts = [final["rollout"] for final in finals]
    merged = {name: h.encode(h.merge(h.decode(part[name]) for part in parts if name in part))
              for name in ROLLOUT_SERIES}
    return {**merged, "acked_at": sorted(t for part in parts for t in part["acked_at"])}


def rollout_figures(finals: Sequence[Mapping[str, Any]], start: Mapping[str, Any]) -> dict[str, Any]:
    """Per-device push-to-check-in and push-to-Acknowledged, and how long until X% of the label had it."""
    parts = [final["rollout"] for final in finals]
    # A part without one of the series (a hand-made one in tests) adds nothing to it.
    series = {name: h.merge(h.decode(part[name]) for part in parts if name in part) for name in ROLLOUT_SERIES}
    acked = sorted(t for part in parts for t in part["acked_at"])
    since = h.new_histogram()
    for seconds in acked:
        h.record(since, seconds)
    devices = start["devices"]
    figures = {
        **start,
        "acknowledged": len(acked),
        "completion": len(acked) / devices if devices else 0.0,
        "time_to": {f"p{point}": time_to(acked, devices, point) for point in COMPLETION_POINTS},
        **{name: h.LatencySummary.of(merged).to_json() for name, merged in series.items()},
        "since_rollout": h.LatencySummary.of(since).to_json(),
        "curve": completion_curve(acked, devices),
    }
    if start.get("declarative"):  # "acknowledged" = the status report showed the account declaration active
        figures["ddm_convergence"] = {"from_push": figures["push_to_ack"], "from_rollout": figures["since_rollout"],
                                      "status_reports": sum(part.get("status_reports", 0) for part in parts)}
    return figures


def time_to(acked: Sequence[float], devices: int, percent: float) -> float | None:
    """Seconds from the rollout's start until `percent` of the label's devices acknowledged; None if never."""
    needed = max(1, math.ceil(devices * percent / 100))
    return acked[needed - 1] if devices and len(acked) >= needed else None


def completion_curve(acked: Sequence[float], devices: int, points: int = 200) -> list[tuple[float, float]]:
    """(seconds since the rollout started, fraction of the label acknowledged), thinned for plotting."""
    if not acked or not devices:
        return []
    step = max(1, len(acked) // points)
    curve = [(acked[i], (i + 1) / devices) for i in range(0, len(acked), step)]
    if curve[-1][0] != acked[-1]:
        curve.append((acked[-1], len(acked) / devices))
    return curve


def add_rates(report: dict[str, Any], elapsed: float) -> None:
    """Check-ins per second over the run, and the best and median whole second."""
    timeline = report.get("timeline", [])
    per_second = sorted(point["requests"] for point in timeline)
    checkin = report["checkin"]
    checkin["rate"] = checkin["count"] / elapsed if elapsed > 0 else 0.0
    checkin["peak_rate"] = float(per_second[-1]) if per_second else 0.0
    busy = [n for n in per_second if n > 0]
    checkin["median_busy_rate"] = float(busy[len(busy) // 2]) if busy else 0.0
