"""Latency statistics that merge exactly across worker processes: HdrHistogram per message type.

Workers ship them encoded; the parent adds them, so percentiles are of all samples, never averaged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour, in microseconds: any longer is clamped (and no request lives that long)
SIGNIFICANT_DIGITS = 3  # 0.1% value resolution, HdrHistogram's usual setting
PERCENTILES = (50.0, 90.0, 95.0, 99.0)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record(histogram: HdrHistogram, seconds: float) -> None:
    histogram.record_value(min(HIGHEST_US, max(LOWEST_US, round(seconds * 1_000_000))))


def encode(histogram: HdrHistogram) -> str:
    return histogram.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    """A histogram from `encode()`; a clear ValueError when the text is not one."""
    try:
        decoded = HdrHistogram.decode(text.encode("ascii"))
    except Exception as exc:  # hdrh raises assorted errors (zlib, struct, its own) on bad input
        raise ValueError(f"not an encoded HdrHistogram: {type(exc).__name__}: {exc}") from None
    # Re-add into our standard range so every merged histogram has the same shape.
    histogram = new_histogram()
    histogram.add(decoded)
    return histogram


def merge(histograms: Iterable[HdrHistogram]) -> HdrHistogram:
    total = new_histogram()
    for histogram in histograms:
        total.add(histogram)
    return total


@dataclass(frozen=True)
class LatencySummary:
    """Seconds; `count` samples. Percentiles are HdrHistogram's (equivalent-value ranges of 0.1%)."""

    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, histogram: HdrHistogram) -> LatencySummary:
        count = histogram.get_total_count()
        if count == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p = histogram.get_percentile_to_value_dict(list(PERCENTILES))
        return cls(count, histogram.get_mean_value() / 1e6, *(p[q] / 1e6 for q in PERCENTILES),
                   histogram.get_max_value() / 1e6)

    def to_json(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "p50": self.p50, "p90": self.p90, "p95": self.p95,
                "p99": self.p99, "max": self.max}


def live_percentiles(histogram: HdrHistogram) -> dict[str, float]:
    """Seconds: p50 to p99 and max, without the mean (hdrh's mean walks every bucket in Python, ~20 ms a
    histogram; a live view refreshed each second cannot afford it, the final report can)."""
    if histogram.get_total_count() == 0:
        return {"p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p = histogram.get_percentile_to_value_dict(list(PERCENTILES))
    return {**{f"p{q:g}": p[q] / 1e6 for q in PERCENTILES}, "max": histogram.get_max_value() / 1e6}


@dataclass
class MessageStats:
    """One message type's requests: how many, how many failed (non-2xx or no answer), their latencies."""

    count: int = 0
    errors: int = 0
    histogram: HdrHistogram = field(default_factory=new_histogram)

    def record(self, seconds: float, ok: bool) -> None:
        self.count += 1
        self.errors += not ok
        record(self.histogram, seconds)

    def add(self, other: MessageStats) -> None:
        self.count += other.count
        self.errors += other.errors
        self.histogram.add(other.histogram)

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "errors": self.errors,
                "latency": LatencySummary.of(self.histogram).to_json()}

    def to_wire(self) -> dict[str, Any]:
        return {"count": self.count, "errors": self.errors, "histogram": encode(self.histogram)}

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> MessageStats:
        try:
            return cls(int(body["count"]), int(body["errors"]), decode(body["histogram"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad message statistics from a worker: {exc!r}") from None


def merge_messages(parts: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, MessageStats]:
    """Workers' `{message: MessageStats.to_wire()}` maps merged into one, message by message."""
    merged: dict[str, MessageStats] = {}
    for part in parts:
        for name, wire in part.items():
            merged.setdefault(name, MessageStats()).add(MessageStats.from_wire(wire))
    return merged


def total_of(stats: Mapping[str, MessageStats]) -> MessageStats:
    """Every message type together (the `checkin` figures)."""
    total = MessageStats()
    for one in stats.values():
        total.add(one)
    return total
