"""The server side of a load run: CPU and RSS from /proc of the server process, and its /metrics figures.

Percentiles from Prometheus buckets are estimates (linear within a bucket, like PromQL's histogram_quantile).
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc/<pid>/stat; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class ProcessWatch:
    """Samples one process each tick: CPU as a fraction of one core since the last sample, and RSS."""

    pid: int
    samples: list[dict[str, float]] = field(default_factory=list)
    _last: tuple[float, float] | None = None
    _first: tuple[float, float] | None = None

    def sample(self, now: float, offset: float) -> dict[str, float] | None:
        cpu, rss = cpu_seconds(self.pid), rss_bytes(self.pid)
        if cpu is None or rss is None:
            return None
        if self._first is None:
            self._first = (now, cpu)
        point = {"t": offset, "cpu": 0.0, "rss": float(rss)}
        if self._last is not None and now > self._last[0]:
            point["cpu"] = (cpu - self._last[1]) / (now - self._last[0])
        self._last = (now, cpu)
        self.samples.append(point)
        return point

    def summary(self) -> dict[str, Any]:
        if not self.samples or self._first is None or self._last is None:
            return {"pid": self.pid}
        elapsed = self._last[0] - self._first[0]
        used = self._last[1] - self._first[1]
        return {
            "pid": self.pid, "cpu_seconds": used, "cpu_avg": used / elapsed if elapsed > 0 else 0.0,
            "cpu_max": max(s["cpu"] for s in self.samples), "rss_max": max(s["rss"] for s in self.samples),
            "rss_end": self.samples[-1]["rss"], "samples": self.samples,
        }


# Prometheus text → figures ---------------------------------------------------------------------------------

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse_exposition(text: str) -> Samples:
    samples: Samples = defaultdict(dict)
    for line in text.split("\n"):
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        key = tuple(_LABEL.findall(labels or ""))
        samples[name][key] = math.inf if value == "+Inf" else float(value)
    return dict(samples)


def server_figures(before: Samples | None, after: Samples) -> dict[str, Any]:
    """What the server counted during the run (after minus before), by the label that matters."""
    def delta(name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for key, value in after.get(name, {}).items():
            old = (before or {}).get(name, {}).get(key, 0.0)
            labels = dict(key)
            name_of = labels.get(label, "")
            code = labels.get("code")
            out[name_of if code in (None, "200") else f"{name_of} ({code})"] += value - old
        return dict(out)

    gauges = {name: {dict(k).get(label, ""): v for k, v in after.get(name, {}).items()}
              for name, label in (("mdmsim_commands", "status"), ("mdmsim_devices", "state"))}
    return {
        "checkins": delta("mdmsim_checkin_messages_total", "message_type"),
        "reports": delta("mdmsim_command_reports_total", "status"),
        "pushes": delta("mdmsim_pushes_total", "outcome"),
        "apns": delta("mdmsim_apns_pushes_total", "event"),
        "queue_at_end": gauges["mdmsim_commands"],
        "devices_at_end": gauges["mdmsim_devices"],
        "latency_estimate": _latency(before, after),
    }


def _latency(before: Samples | None, after: Samples) -> dict[str, dict[str, float]]:
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    old = (before or {}).get("mdmsim_request_duration_seconds_bucket", {})
    for key, value in after.get("mdmsim_request_duration_seconds_bucket", {}).items():
        labels = dict(key)
        buckets[labels["channel"]].append((float(labels["le"]), value - old.get(key, 0.0)))
    out = {}
    for channel, series in buckets.items():
        series.sort()
        count = series[-1][1] if series else 0.0
        out[channel] = {"count": count, **{f"p{q}": histogram_quantile(q / 100, series) for q in (50, 95, 99)}}
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's estimate from cumulative (le, count) buckets sorted by le; seconds."""
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # PromQL answers the highest finite bound here
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 0.0)
        lower_bound, lower_count = bound, count
    return lower_bound


def flat_numbers(figures: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested figures → `a.b.c` numbers (for thresholds on server counts, e.g. server.pushes.accepted)."""
    out: dict[str, float] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_numbers(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out
