"""GET /metrics: the server's counters in Prometheus text format 0.0.4, for Grafana during load tests.

Unauthenticated by design (like most exporters): it shows counts only, no device data; keep it on loopback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from twisted.web import resource
from twisted.web.server import Request

from .. import metrics as m
from ..storage.interface import CommandStatus, EnrollmentState


class MetricsSource(Protocol):
    """What a scrape reads: request counters, queue and device counts, push outcomes and deliveries."""

    def request_metrics(self) -> m.ServerMetrics: ...
    def command_counts(self) -> Mapping[CommandStatus, int]: ...
    def device_counts(self) -> Mapping[EnrollmentState, int]: ...
    def push_outcomes(self) -> Mapping[str, int]: ...
    def push_deliveries(self) -> Any: ...  # the APNs simulation's DeliveryStats


class MetricsResource(resource.Resource):
    """Reads its source at scrape time, so the request path only pays for its own increments."""

    isLeaf = True

    def __init__(self, source: MetricsSource) -> None:
        super().__init__()
        self.source = source

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader("allow", "GET, HEAD")
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return b"GET /metrics only\n"
        request.setHeader("content-type", m.CONTENT_TYPE)
        request.setHeader("cache-control", "no-store")
        return m.render(self.families())

    def families(self) -> list[m.Family]:
        return [*self._requests(), *self._queue(), *self._pushes(), *_process()]

    def _requests(self) -> list[m.Family]:
        metrics = self.source.request_metrics()
        checkins = {(kind, str(code)): n for (kind, code), n in metrics.checkins.items()}
        reports = {(status, str(code)): n for (status, code), n in metrics.reports.items()}
        return [
            m.counter("mdmsim_checkin_messages_total", "Check-in messages answered, by MessageType and HTTP "
                      "status", checkins, ("message_type", "code")),
            m.counter("mdmsim_command_reports_total", "Command-channel reports answered, by Status and HTTP "
                      "status", reports, ("status", "code")),
            m.counter("mdmsim_reenrollments_total", "Authenticate of a known device with a new identity, by "
                      "outcome (accepted, refused)", {(k,): n for k, n in metrics.reenrollments.items()},
                      ("outcome",)),
            m.histogram("mdmsim_request_duration_seconds", "Time to answer a device request (signature "
                        "check, service, storage), by channel", metrics.latency, "channel"),
        ]

    def _queue(self) -> list[m.Family]:
        commands = {(status.value,): n for status, n in self.source.command_counts().items()}
        devices = {(state.value,): n for state, n in self.source.device_counts().items()}
        return [
            m.gauge("mdmsim_commands", "Commands in the queue by status (Queued and NotNow are waiting)",
                    commands, ("status",)),
            m.gauge("mdmsim_devices", "Devices by enrollment state", devices, ("state",)),
        ]

    def _pushes(self) -> list[m.Family]:
        outcomes = {(outcome,): n for outcome, n in self.source.push_outcomes().items()}
        stats = self.source.push_deliveries()
        apns = {(name,): getattr(stats, name) for name in
                ("accepted", "rejected", "coalesced", "dropped", "delivered", "held_for_offline")}
        return [
            m.counter("mdmsim_pushes_total", "Pushes the server tried, by outcome (accepted, rejected, or "
                      "why it was not sent)", outcomes, ("outcome",)),
            m.counter("mdmsim_apns_pushes_total", "The APNs simulation's view of pushes: accepted, rejected, "
                      "coalesced (replaced a pending one), dropped, delivered, held for offline devices",
                      apns, ("event",)),
        ]


def _process() -> list[m.Family]:
    times = os.times()
    families = [m.counter("process_cpu_seconds_total", "User and system CPU time of the server process",
                          {(): times.user + times.system}, ())]
    statm = Path("/proc/self/statm")
    if statm.exists():
        rss = int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        families.append(m.gauge("process_resident_memory_bytes", "Resident set size", {(): rss}))
    return families
