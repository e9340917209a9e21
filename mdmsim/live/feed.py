"""The dashboard's events, from the run's live status (the dict the progress line prints): no I/O, no Twisted.

One source of truth: `mdmsim load` and `mdmsim fleet` hand their status over; rates come from differences
between two statuses, exactly as the progress line computes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mdmsim.load.progress import LiveProgress

Status = dict[str, Any]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def message_rows(messages: dict[str, Any]) -> list[dict[str, Any]]:
    """Per message type (the report's `messages` shape: count, errors, latency in seconds) in milliseconds."""
    rows = []
    for name, stats in sorted(messages.items()):
        latency = stats.get("latency", {})
        rows.append({"name": name, "count": stats["count"], "errors": stats["errors"],
                     **{key: _ms(latency.get(key, 0.0)) for key in ("p50", "p95", "p99", "max")}})
    return rows


@dataclass
class DashboardFeed:
    """Builds one event per publication; the request rate is that of the last two distinct statuses."""

    title: str
    seq: int = 0
    _previous: Status | None = None
    _current: Status | None = None
    _rate: float = 0.0
    _latest_second: dict[str, Any] | None = field(default=None)

    def event(self, status: Status, now: float, *, finished: str | None = None) -> dict[str, Any]:
        if status is not self._current:
            self._previous, self._current = self._current, status
            self._rate = LiveProgress.rate(status, self._previous)
            if status.get("latest_second"):
                self._latest_second = status["latest_second"]
        self.seq += 1
        second = self._latest_second
        rollout = None
        if status.get("rollout_devices"):
            acked, devices = status["rollout_acked"], status["rollout_devices"]
            rollout = {"acked": acked, "devices": devices, "percent": round(100 * acked / devices, 1)}
        return {
            "seq": self.seq, "sent_at": now, "title": self.title, "finished": finished,
            "elapsed": round(status["elapsed"], 2), "duration": status["duration"], "devices": status["devices"],
            "enrolled": status["enrolled"], "enroll_failed": status["enroll_failed"],
            "requests": status["requests"], "errors": status["errors"], "rate": round(self._rate, 1),
            "errors_by_kind": dict(sorted((status.get("requests_failed_by_kind") or {}).items())),
            "latency": None if second is None else {key: _ms(second.get(key)) for key in ("p50", "p95", "p99")},
            "messages": message_rows(status.get("messages") or {}),
            "rollout": rollout, "installs_acknowledged": status.get("installs_acknowledged"),
            "server": None if status.get("server_cpu") is None else
            {"cpu": round(100 * status["server_cpu"], 1), "rss_mb": round(status["server_rss"] / 1e6, 1)},
        }


def server_sent_event(event: dict[str, Any], kind: str = "status") -> bytes:
    """One text/event-stream record; `id` lets a reconnecting EventSource say where it was."""
    data = json.dumps(event, separators=(",", ":"), sort_keys=True)
    return f"id: {event['seq']}\nevent: {kind}\ndata: {data}\n\n".encode()
