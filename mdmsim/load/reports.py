"""Writing a load run's report: JSON (everything), CSV (Locust-style files under a prefix), and thresholds.

The HTML report with plots is in `html_report.py`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .thresholds import flat_metrics

STAT_COLUMNS = ("count", "errors", "mean", "p50", "p90", "p95", "p99", "max")


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


def write_csv(report: dict[str, Any], prefix: str) -> list[Path]:
    """PREFIX_stats.csv (per message type, ms), PREFIX_history.csv (per second), PREFIX_metrics.csv
    (every flat metric thresholds can name), and PREFIX_rollout.csv when there was a rollout."""
    written = [_stats(report, Path(f"{prefix}_stats.csv")), _history(report, Path(f"{prefix}_history.csv")),
               _metrics(report, Path(f"{prefix}_metrics.csv")), _failures(report, Path(f"{prefix}_failures.csv"))]
    if report.get("rollout"):
        written.append(_rollout(report, Path(f"{prefix}_rollout.csv")))
    return written


def _stats(report: dict[str, Any], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["message", "count", "errors", *(f"{c}_ms" for c in STAT_COLUMNS[2:])])
        for name, stats in [*report["messages"].items(), ("all", report["checkin"])]:
            latency = stats["latency"]
            out.writerow([name, stats["count"], stats["errors"],
                          *(f"{latency[c] * 1000:.3f}" for c in STAT_COLUMNS[2:])])
    return path


def _history(report: dict[str, Any], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["t_s", "requests", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu",
                      "server_rss_bytes"])
        samples = {round(s["t"]): s for s in (report.get("server") or {}).get("samples", [])}
        for point in report["timeline"]:
            sample = samples.get(round(point["t"]), {})
            out.writerow([point["t"], point["requests"], point["errors"],
                          *(f"{point[k] * 1000:.3f}" for k in ("p50", "p95", "p99", "max")),
                          sample.get("cpu", ""), sample.get("rss", "")])
    return path


def _metrics(report: dict[str, Any], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["metric", "value"])
        for name, value in sorted(flat_metrics(report).items()):
            out.writerow([name, value])
    return path


def failure_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every failure by kind as (name, value) rows, zeros included for the push link: CSV and HTML show them."""
    failures = report.get("failures") or {}
    rows: list[tuple[str, Any]] = [(f"enrollment.{kind}", n) for kind, n in failures.get("enrollment", {}).items()]
    rows += [(f"request.{kind}", n) for kind, n in failures.get("requests", {}).items()]
    link = failures.get("push_link")
    if link:
        rows += [(f"push_link.{key}", link[key]) for key in
                 ("connected", "down_seconds", "disconnects", "connect_failures", "undeliverable")]
        rows.append(("push_link.missed_while_down", link.get("missed_while_down", 0)))
    rows.append(("missed_pushes", failures.get("missed_pushes")))
    rows.append(("stalled_devices", failures.get("stalled_devices", 0)))
    rows.append(("unfinished_enrollments", failures.get("unfinished_enrollments", 0)))
    rows.append(("interrupted", bool(report.get("interrupted"))))
    return rows


def _failures(report: dict[str, Any], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["failure", "value"])
        for name, value in failure_rows(report):
            out.writerow([name, "" if value is None else value])
    return path


def _rollout(report: dict[str, Any], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["seconds_since_rollout", "fraction_acknowledged"])
        out.writerows(report["rollout"]["curve"])
    return path
