"""`mdmsim report merge`: reports from several hosts merge exactly: percentiles come from the added raw
histograms (never averaged), counts and failures add up, and the merged run is judged by the same exit codes."""

from __future__ import annotations

import json

import pytest

from mdmsim import cli
from mdmsim.load import histograms as h
from mdmsim.load import summary
from mdmsim.load.merge import MergeError, merge_reports

START = 1_800_000_000.0


def _host_report(latencies: list[float], *, started_at: float = START, devices: int = 10,
                 enrolled: int | None = None, error_kinds: dict | None = None, link: dict | None = None) -> dict:
    """A report as `mdmsim load --json` writes it, from one worker's final message."""
    stats = h.MessageStats()
    for value in latencies:
        stats.record(value, ok=True)
    timeline = [{"second": int(started_at) + i % 3, **one.to_wire()} for i, one in enumerate(_split(latencies))]
    final = {"messages": {"Idle": stats.to_wire()}, "error_kinds": error_kinds or {}, "commands": {"X:Ack": 2},
             "enroll_failures": {}, "sessions": 3, "devices": devices, "enrolled": devices if enrolled is None
             else enrolled, "offline": 0, "cpu": 1.0, "rss": 10, "peak_rss": 20, "stalled": 0,
             **({"push_link": link, "pushes_received": 5} if link else {})}
    report = {"mdmsim_load": summary.REPORT_VERSION, "options": {"devices": devices, "processes": 1,
                                                                  "duration": 60.0},
              "target": {"url": "https://mdm.example.com", "own_server": False}, "started_at": started_at,
              "elapsed": 60.0, "interrupted": False, **summary.merge_finals([final]),
              "timeline": summary.merge_timeline(timeline, started_at), "rollout": None, "server": {}}
    report["histograms"]["timeline"] = summary.timeline_buckets(timeline)
    report["histograms"]["rollout"] = None
    report["failures"]["missed_pushes"] = 0 if link else None
    summary.add_rates(report, 60.0)
    return json.loads(json.dumps(report))  # what a file holds


def _split(values: list[float]) -> list[h.MessageStats]:
    parts = [h.MessageStats() for _ in range(3)]
    for index, value in enumerate(values):
        parts[index % 3].record(value, ok=True)
    return parts


def test_percentiles_come_from_merged_histograms_never_averaged():
    fast, slow = _host_report([0.001] * 900), _host_report([0.100] * 100, started_at=START + 30)
    merged = merge_reports([fast, slow], ["a.json", "b.json"])
    everything = h.MessageStats()
    for value in [0.001] * 900 + [0.100] * 100:
        everything.record(value, ok=True)
    assert merged["messages"]["Idle"] == everything.summary()
    assert merged["checkin"]["latency"]["p95"] == pytest.approx(0.1, rel=1e-3)  # averaging would say ~0.05
    assert merged["elapsed"] == 90.0 and merged["checkin"]["rate"] == pytest.approx(1000 / 90)
    assert sum(point["requests"] for point in merged["timeline"]) == 1000
    assert merged["enrollment"]["devices"] == 20 and merged["commands"] == {"X:Ack": 4}
    assert merged["merged_from"] == ["a.json", "b.json"]


def test_failures_add_up_across_hosts():
    link = {"connected": True, "connects": 1, "disconnects": 1, "connect_failures": 2, "down_seconds": 4.5,
            "undeliverable": 0}
    one = _host_report([0.01] * 10, error_kinds={"timeout": 2}, link=link)
    two = _host_report([0.01] * 10, error_kinds={"timeout": 1, "tls": 3}, link={**link, "connected": False})
    failures = merge_reports([one, two])["failures"]
    assert failures["requests"] == {"timeout": 3, "tls": 3}
    assert failures["push_link"]["down_seconds"] == 9.0 and failures["push_link"]["connected"] is False
    assert failures["pushes_received"] == 10 and failures["missed_pushes"] == 0
    assert failures["push_link"]["missed_while_down"] == 0  # reports from before the count: none missed


def test_the_cli_writes_the_merged_report_and_judges_it(tmp_path):
    paths = []
    for index, report in enumerate([_host_report([0.01] * 50), _host_report([0.02] * 50, enrolled=7)]):
        paths.append(tmp_path / f"host{index}.json")
        paths[-1].write_text(json.dumps(report))
    out = tmp_path / "merged.json"
    assert cli.main(["report", "merge", *map(str, paths[:1]), "--json", str(out)]) == 0
    assert cli.main(["report", "merge", *map(str, paths), "--json", str(out), "--csv", str(tmp_path / "m")]) == 1
    merged = json.loads(out.read_text())
    assert merged["checkin"]["count"] == 100 and merged["enrollment"]["enrolled"] == 17
    assert merged["verdict"]["exit_code"] == 1
    assert (tmp_path / "m_failures.csv").exists()
    assert cli.main(["report", "merge", *map(str, paths[:1]), "--threshold", "checkin.p99<1ms"]) == 99


def test_a_report_without_raw_histograms_cannot_be_merged_exactly(tmp_path):
    old = _host_report([0.01])
    del old["histograms"]
    with pytest.raises(MergeError, match="no raw histograms"):
        merge_reports([old])
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    (tmp_path / "junk.json").write_text("{not json")
    assert cli.main(["report", "merge", str(path)]) == 2
    assert cli.main(["report", "merge", str(tmp_path / "junk.json")]) == 2
    assert cli.main(["report", "merge", str(tmp_path / "missing.json")]) == 2
