"""Pass/fail thresholds over a load run's figures, k6 style: `checkin.p95<200ms`, `errors.count==0`.

METRIC OP VALUE[UNIT]: a flat metric of the report (`flat_metrics`); units ms, s, m, %, /s, KB, MB, GB.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
}
_UNITS = {"": 1.0, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "%": 0.01,
          "kb": 1e3, "mb": 1e6, "gb": 1e9, "/s": 1.0}
_FORM = re.compile(
    r"^\s*(?P<metric>[A-Za-z][\w:/-]*\.[\w.]*?)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?\d+(?:\.\d+)?)\s*"
    r"(?P<unit>[a-zA-Zµ%/]*)\s*$"
)


class ThresholdError(ValueError):
    """A threshold that cannot be understood; the message says how to write one."""


@dataclass(frozen=True)
class Threshold:
    text: str
    metric: str
    op: str
    value: float  # in the metric's base unit: seconds, ratio, bytes, count

    @classmethod
    def parse(cls, text: str) -> Threshold:
        match = _FORM.match(text)
        if not match:
            raise ThresholdError(f"bad threshold {text!r}: write METRIC OP VALUE[UNIT], e.g. "
                                 "'checkin.p95<200ms', 'errors.count==0', 'rollout.p100<=30s'")
        unit = match["unit"].lower()
        if unit not in _UNITS:
            raise ThresholdError(f"bad unit {match['unit']!r} in {text!r}: use one of ms, s, m, %, KB, MB, GB")
        return cls(text.strip(), match["metric"], match["op"], float(match["value"]) * _UNITS[unit])


@dataclass(frozen=True)
class Verdict:
    threshold: Threshold
    actual: float | None  # None: the run did not measure this metric
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold.text, "metric": self.threshold.metric, "actual": self.actual,
                "passed": self.passed}


def evaluate(thresholds: list[Threshold], metrics: Mapping[str, float]) -> list[Verdict]:
    """A metric the run did not produce fails its threshold (k6 treats such a threshold as an error)."""
    out = []
    for threshold in thresholds:
        actual = metrics.get(threshold.metric)
        passed = actual is not None and _OPERATORS[threshold.op](actual, threshold.value)
        out.append(Verdict(threshold, actual, passed))
    return out


def flat_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The report's figures as `name.stat` → number: what thresholds (and the CSV summary) can refer to."""
    flat: dict[str, float] = {}
    for name, stats in report.get("messages", {}).items():
        _message(flat, name, stats)
    if "checkin" in report:
        _message(flat, "checkin", report["checkin"])
        flat["checkin.rate"] = report["checkin"].get("rate", 0.0)
    errors = report.get("errors", {})
    flat["errors.count"] = float(sum(errors.get("by_kind", {}).values()))
    for kind, count in errors.get("by_kind", {}).items():
        flat[f"errors.{kind}"] = float(count)
    enrollment = report.get("enrollment", {})
    for key in ("enrolled", "failed"):
        if key in enrollment:
            flat[f"enroll.{key}"] = float(enrollment[key])
    _rollout(flat, report.get("rollout"))
    failures = report.get("failures") or {}
    for kind, count in failures.get("enrollment", {}).items():
        flat[f"failures.enrollment.{kind}"] = float(count)
    link = failures.get("push_link") or {}
    for key in ("down_seconds", "disconnects", "connect_failures", "missed_while_down"):
        if key in link:
            flat[f"failures.push_link.{key}"] = float(link[key])
    for key in ("missed_pushes", "stalled_devices"):
        if failures.get(key) is not None:
            flat[f"failures.{key}"] = float(failures[key])
    for key, value in (report.get("server") or {}).items():
        if isinstance(value, int | float):
            flat[f"server.{key}"] = float(value)
    for key, value in (report.get("fleet") or {}).items():
        if isinstance(value, int | float):
            flat[f"fleet.{key}"] = float(value)
    return flat


def _message(flat: dict[str, float], name: str, stats: Mapping[str, Any]) -> None:
    flat[f"{name}.count"] = float(stats["count"])
    flat[f"{name}.errors"] = float(stats["errors"])
    flat[f"{name}.error_rate"] = stats["errors"] / stats["count"] if stats["count"] else 0.0
    for key, value in stats["latency"].items():
        if key != "count":
            flat[f"{name}.{key}"] = float(value)


def _rollout(flat: dict[str, float], rollout: Mapping[str, Any] | None) -> None:
    if not rollout:
        return
    flat["rollout.devices"] = float(rollout["devices"])
    flat["rollout.acknowledged"] = float(rollout["acknowledged"])
    flat["rollout.completion"] = rollout["completion"]
    for key, value in rollout["time_to"].items():
        if value is not None:
            flat[f"rollout.{key}"] = float(value)
    for series in ("push_to_checkin", "push_to_ack", "delivery_to_checkin", "delivery_to_ack", "since_rollout"):
        for key, value in rollout.get(series, {}).items():
            flat[f"{series}.{key}"] = float(value)
