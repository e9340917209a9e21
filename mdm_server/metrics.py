"""Server metrics for Prometheus: counters and fixed-bucket histograms cheap enough for the request path.

Pure (no Twisted): the service and web layer increment them; `web/metrics.py` gathers and renders them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Seconds; covers a fast Idle (~0.2 ms in process) up to a request stuck behind a 10,000-device enqueue.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """A Prometheus histogram: per-bucket counts (made cumulative only when rendered), sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus buckets are "le").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((_number(bound), running))
        return out


@dataclass
class ServerMetrics:
    """What the server counts as it answers devices; one instance per `MDMService`."""

    checkins: Counter[tuple[str, int]] = field(default_factory=Counter)  # (MessageType, HTTP status)
    reports: Counter[tuple[str, int]] = field(default_factory=Counter)  # (Status, HTTP status)
    latency: dict[str, Histogram] = field(default_factory=dict)  # by channel: checkin, connect, other
    reenrollments: Counter[str] = field(default_factory=Counter)  # new identity on a known device: accepted|refused

    def checkin(self, message_type: str, status: int) -> None:
        self.checkins[(message_type, status)] += 1

    def report(self, status: str, http_status: int) -> None:
        self.reports[(status, http_status)] += 1

    def request_done(self, channel: str, seconds: float) -> None:
        histogram = self.latency.get(channel)
        if histogram is None:
            histogram = self.latency[channel] = Histogram()
        histogram.observe(seconds)


# Text exposition format 0.0.4 -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One metric family: HELP, TYPE and its samples as (name suffix, labels, value)."""

    name: str
    kind: str  # counter | gauge | histogram
    help: str
    samples: tuple[tuple[str, Mapping[str, str], float], ...]


def counter(name: str, help_text: str, values: Mapping[tuple[str, ...], float], labels: tuple[str, ...]
            ) -> Family:
    samples = tuple(("", dict(zip(labels, key, strict=True)), value) for key, value in sorted(values.items()))
    return Family(name, "counter", help_text, samples)


def gauge(name: str, help_text: str, values: Mapping[tuple[str, ...], float], labels: tuple[str, ...] = ()
          ) -> Family:
    family = counter(name, help_text, values, labels)
    return Family(name, "gauge", help_text, family.samples)


def histogram(name: str, help_text: str, by_label: Mapping[str, Histogram], label: str) -> Family:
    samples: list[tuple[str, Mapping[str, str], float]] = []
    for value, hist in sorted(by_label.items()):
        for bound, count in hist.cumulative():
            samples.append(("_bucket", {label: value, "le": bound}, count))
        samples.append(("_sum", {label: value}, hist.sum))
        samples.append(("_count", {label: value}, hist.count))
    return Family(name, "histogram", help_text, tuple(samples))


def render(families: Iterable[Family]) -> bytes:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            lines.append(f"{family.name}{suffix}{_labels(labels)} {_number(value)}")
    return ("\n".join(lines) + "\n").encode()


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape_label(str(value))}"' for key, value in labels.items()) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
