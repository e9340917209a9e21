"""The load run's HTML report: one self-contained file, matplotlib plots inlined as SVG, tables of figures.

Plots: check-ins per second, latency percentiles over time, rollout completion, server CPU and RSS.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to SVG only
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402

from .reports import failure_rows  # noqa: E402

ROLLOUT_LABELS = (("push_to_checkin", "server's push → check-in (Idle answered)"),
                  ("push_to_ack", "server's push → Acknowledged"),
                  ("delivery_to_checkin", "push reaching the device → check-in"),
                  ("delivery_to_ack", "push reaching the device → Acknowledged"))
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}.fail{color:#b00}.pass{color:#070}figure{margin:1.5em 0}
figcaption{font-weight:600}"""


def write_html(report: dict[str, Any], path: Path) -> None:
    path.write_text(render_html(report), encoding="utf-8")


def render_html(report: dict[str, Any]) -> str:
    options = report["options"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mdmsim load report</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>mdmsim load: {options['devices']} devices for {report['elapsed']:.1f} s</h1>",
             "<p class='fail' id='interrupted'>Interrupted (Ctrl-C): the figures up to that moment.</p>"
             if report.get("interrupted") else "",
             f"<p>Target: {html.escape(str(report['target']['url']))}; {options['processes']} fleet process(es); "
             f"{report['checkin']['rate']:.0f} check-ins/s over the run, peak {report['checkin']['peak_rate']:.0f}/s."
             "</p>", _thresholds(report), _messages(report)]
    timeline = report["timeline"]
    if timeline:
        parts.append(_figure("Check-ins per second", _throughput_plot(timeline), "throughput"))
        parts.append(_figure("Latency over time (ms)", _latency_plot(timeline), "latency"))
    rollout = report.get("rollout")
    if rollout:
        parts.append(_rollout(rollout))
        if rollout["curve"]:
            parts.append(_figure("Rollout completion", _rollout_plot(rollout), "rollout"))
    samples = (report.get("server") or {}).get("samples", [])
    if samples:
        parts.append(_figure("Server CPU and RSS", _server_plot(samples), "server"))
    parts.append(_errors(report))
    parts.append("</body></html>")
    return "\n".join(parts)


def _figure(caption: str, svg: str, name: str) -> str:
    return f"<figure id='plot-{name}'><figcaption>{html.escape(caption)}</figcaption>{svg}</figure>"


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.tight_layout()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG in HTML needs neither


def _throughput_plot(timeline: list[dict[str, Any]]) -> str:
    figure, axes = plt.subplots(figsize=(10, 3))
    t = [p["t"] for p in timeline]
    axes.plot(t, [p["requests"] for p in timeline], label="requests/s")
    axes.plot(t, [p["errors"] for p in timeline], label="errors/s", color="tab:red")
    axes.set_xlabel("seconds since start")
    axes.legend(loc="upper left")
    return _svg(figure)


def _latency_plot(timeline: list[dict[str, Any]]) -> str:
    figure, axes = plt.subplots(figsize=(10, 3))
    t = [p["t"] for p in timeline]
    for key in ("p50", "p95", "p99"):
        axes.plot(t, [p[key] * 1000 for p in timeline], label=key)
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("ms (log scale)")
    axes.set_yscale("log")
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.grid(True, which="major", color="#ddd")
    axes.legend(loc="upper left")
    return _svg(figure)


def _rollout_plot(rollout: dict[str, Any]) -> str:
    figure, axes = plt.subplots(figsize=(10, 3))
    axes.step([0.0] + [x for x, _ in rollout["curve"]], [0.0] + [100 * y for _, y in rollout["curve"]],
              where="post")
    for point in (50, 95, 99):
        axes.axhline(point, color="#bbb", linewidth=0.8)
    axes.set_xlabel("seconds since the rollout started")
    axes.set_ylabel("% of the label acknowledged")
    axes.set_ylim(0, 101)
    return _svg(figure)


def _server_plot(samples: list[dict[str, float]]) -> str:
    figure, cpu_axes = plt.subplots(figsize=(10, 3))
    t = [s["t"] for s in samples]
    cpu_axes.plot(t, [100 * s["cpu"] for s in samples], label="CPU % of one core")
    cpu_axes.set_ylabel("CPU %")
    cpu_axes.set_xlabel("seconds since start")
    rss_axes = cpu_axes.twinx()
    rss_axes.plot(t, [s["rss"] / 1e6 for s in samples], color="tab:orange", label="RSS MB")
    rss_axes.set_ylabel("RSS MB")
    figure.legend(loc="upper left")
    return _svg(figure)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _messages(report: dict[str, Any]) -> str:
    rows = []
    for name, stats in [*report["messages"].items(), ("all requests", report["checkin"])]:
        latency = stats["latency"]
        rows.append([name, stats["count"], stats["errors"],
                     *(f"{latency[k] * 1000:.1f}" for k in ("p50", "p90", "p95", "p99", "max"))])
    return "<h2>Requests</h2>" + _table(
        ["message", "count", "errors", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms"], rows)


def _rollout(rollout: dict[str, Any]) -> str:
    times = rollout["time_to"]
    rows = [[f"{point} of the label", "never" if times[point] is None else f"{times[point]:.2f} s"]
            for point in times]
    for key, label in ROLLOUT_LABELS:
        stats = rollout.get(key)
        if rollout.get("declarative"):
            label = label.replace("Acknowledged", "status report: declaration active and valid")
        if not stats:
            continue
        rows.append([label, f"p50 {stats['p50'] * 1000:.0f} ms, p99 {stats['p99'] * 1000:.0f} ms, "
                                            f"max {stats['max'] * 1000:.0f} ms ({stats['count']} devices)"])
    done = ("reported the account declaration active and valid (DDM convergence: from the kick to that status "
            "report)" if rollout.get("declarative") else "acknowledged")
    return (f"<h2>Rollout: {html.escape(rollout['source'])}</h2><p>{rollout['acknowledged']} of "
            f"{rollout['devices']} devices {done} ({rollout['method']}).</p>" + _table(["", ""], rows))


def _thresholds(report: dict[str, Any]) -> str:
    verdicts = report.get("thresholds") or []
    if not verdicts:
        return ""
    rows = "".join(f"<li class='{'pass' if v['passed'] else 'fail'}'>{'✓' if v['passed'] else '✗'} "
                   f"{html.escape(v['threshold'])} (actual {v['actual']})</li>" for v in verdicts)
    return f"<h2>Thresholds</h2><ul>{rows}</ul>"


def _errors(report: dict[str, Any]) -> str:
    rows = [[kind, count] for kind, count in report["errors"]["by_kind"].items()]
    rows += [[f"enrollment: {reason}", count] for reason, count in report["enrollment"]["failures"].items()]
    parts = ["<h2>Errors</h2>" + (_table(["kind", "count"], rows) if rows else "<p>None.</p>")]
    rows = [[name, value] for name, value in failure_rows(report)]
    parts.append("<h2 id='failures'>Failures by kind</h2>" + _table(["failure", "count"], rows))
    verdict = report.get("verdict")
    if verdict:
        css = "pass" if verdict["exit_code"] == 0 else "fail"
        reasons = "; ".join(verdict["reasons"]) or "the run did what was asked"
        parts.append(f"<h2>Verdict</h2><p class='{css}'>exit {verdict['exit_code']}: {html.escape(reasons)}</p>")
    return "\n".join(parts)
