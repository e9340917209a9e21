"""`mdmsim report merge`: load reports from several hosts as one run, percentiles recomputed from the merged
raw histograms (never averaged); counts, failures and enrollment add up; the run spans them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from . import histograms as h
from . import summary


class MergeError(ValueError):
    """A report that cannot be merged (not a load report, or from before raw histograms were kept)."""


def merge_reports(reports: Sequence[Mapping[str, Any]], names: Sequence[str] = ()) -> dict[str, Any]:
    if not reports:
        raise MergeError("nothing to merge")
    for index, report in enumerate(reports):
        _check(report, names[index] if index < len(names) else f"report {index + 1}")
    messages = _messages(reports)
    total = h.total_of(messages)
    start = min(r["started_at"] for r in reports)
    elapsed = max(r["started_at"] + r["elapsed"] for r in reports) - start
    buckets = [b for r in reports for b in r["histograms"]["timeline"]]
    merged: dict[str, Any] = {
        "mdmsim_load": summary.REPORT_VERSION, "merged_from": list(names) or len(reports),
        "options": _options(reports), "target": {"url": sorted({r["target"]["url"] for r in reports}),
                                                 "own_server": all(r["target"]["own_server"] for r in reports)},
        "started_at": start, "elapsed": elapsed, "interrupted": any(r.get("interrupted") for r in reports),
        "messages": {name: stats.summary() for name, stats in sorted(messages.items())},
        "checkin": total.summary(),
        "histograms": {"messages": {name: h.encode(stats.histogram) for name, stats in sorted(messages.items())},
                       "counts": {name: {"count": s.count, "errors": s.errors} for name, s in sorted(messages.items())},
                       "timeline": summary.timeline_buckets(buckets), "rollout": _rollout_raw(reports)},
        "commands": _add(r["commands"] for r in reports), "sessions": sum(r["sessions"] for r in reports),
        "errors": {"by_kind": _add(r["errors"]["by_kind"] for r in reports),
                   "total": sum(r["errors"]["total"] for r in reports)},
        "enrollment": _enrollment(reports), "failures": _failures(reports), "fleet": _fleet(reports),
        "timeline": summary.merge_timeline(buckets, start),
        "server": {"per_report": [r.get("server") or {} for r in reports]},
    }
    summary.add_rates(merged, elapsed)
    merged["rollout"] = _rollout(reports, merged["histograms"]["rollout"])
    return merged


def _check(report: Mapping[str, Any], name: str) -> None:
    if "mdmsim_load" not in report:
        raise MergeError(f"{name} is not an `mdmsim load` report")
    if not isinstance(report.get("histograms"), Mapping) or "timeline" not in report["histograms"]:
        raise MergeError(f"{name} holds no raw histograms (written by an mdmsim before report version 2): "
                         "its percentiles cannot be merged exactly")


def _messages(reports: Sequence[Mapping[str, Any]]) -> dict[str, h.MessageStats]:
    parts = []
    for report in reports:
        raw = report["histograms"]
        parts.append({name: {**raw["counts"][name], "histogram": encoded}
                      for name, encoded in raw["messages"].items()})
    return h.merge_messages(parts)


def _add(counts: Any) -> dict[str, int]:
    total: Counter[str] = Counter()
    for part in counts:
        total.update(part)
    return dict(sorted(total.items()))


def _enrollment(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    parts = [r["enrollment"] for r in reports]
    out = {key: sum(p.get(key, 0) for p in parts) for key in ("devices", "enrolled", "failed", "offline")}
    out["failures"] = dict(Counter(_add(p["failures"] for p in parts)).most_common(20))
    done = [p.get("completed_after") for p in parts]
    out["completed_after"] = None if None in done else max(done)  # every host's devices had settled by then
    return out


def _failures(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    parts = [r.get("failures") or {} for r in reports]
    links = [p["push_link"] for p in parts if p.get("push_link")]
    link = None
    if links:
        link = {key: sum(x[key] for x in links) for key in
                ("connects", "disconnects", "connect_failures", "undeliverable", "down_seconds")}
        link["missed_while_down"] = sum(x.get("missed_while_down", 0) for x in links)
        link["connected"] = all(x["connected"] for x in links)
    missed = [p.get("missed_pushes") for p in parts]
    return {"enrollment": _add(p.get("enrollment", {}) for p in parts),
            "requests": _add(p.get("requests", {}) for p in parts), "push_link": link,
            "pushes_received": sum(p.get("pushes_received", 0) for p in parts),
            "missed_pushes": None if None in missed else sum(missed),
            "stalled_devices": sum(p.get("stalled_devices", 0) for p in parts),
            "unfinished_enrollments": sum(p.get("unfinished_enrollments", 0) for p in parts)}


def _fleet(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    parts = [r["fleet"] for r in reports]
    return {"workers": sum(p["workers"] for p in parts), "cpu_seconds": sum(p["cpu_seconds"] for p in parts),
            "rss": sum(p["rss"] for p in parts), "peak_rss": sum(p["peak_rss"] for p in parts),
            "per_worker": [w for p in parts for w in p["per_worker"]]}


def _options(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The merged run's own figures (devices, processes) and each input's options as they were."""
    return {"devices": sum(r["options"]["devices"] for r in reports),
            "processes": sum(r["options"]["processes"] for r in reports),
            "duration": max(r["options"]["duration"] for r in reports),
            "per_report": [r["options"] for r in reports]}


def _rollout_raw(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    raws = [r["histograms"].get("rollout") for r in reports]
    raws = [raw for raw in raws if raw]
    return summary.rollout_raw([{"rollout": raw} for raw in raws]) if raws else None


def _rollout(reports: Sequence[Mapping[str, Any]], raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Each host's devices counted from its own rollout start; the label is every host's devices together."""
    starts = [r["rollout"] for r in reports if r.get("rollout")]
    if raw is None or not starts:
        return None
    start = {"source": starts[0]["source"], "method": starts[0]["method"],
             "devices": sum(s["devices"] for s in starts), "at": min(s["at"] for s in starts)}
    for key in ("queued", "pushed"):
        if all(key in s for s in starts):
            start[key] = sum(s[key] for s in starts)
    return summary.rollout_figures([{"rollout": raw}], start)
