"""Live progress while a load test runs (one refreshing line on a terminal) and the final summary table.

Off a terminal (CI logs) the line is printed every few seconds instead of refreshed in place.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

PLAIN_EVERY = 5.0  # seconds between printed lines when stderr is not a terminal


class LiveProgress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._last: dict[str, Any] | None = None
        self._printed_at = -PLAIN_EVERY

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal:
            self._live = Live(Text("starting..."), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def __call__(self, status: dict[str, Any]) -> None:
        line = self.line(status, self._last)
        self._last = status
        if self._live is not None:
            self._live.update(Text(line))
        elif status["elapsed"] - self._printed_at >= PLAIN_EVERY:
            self._printed_at = status["elapsed"]
            self.console.print(line, highlight=False)

    @staticmethod
    def rate(status: dict[str, Any], last: dict[str, Any] | None) -> float:
        """Requests per second since the previous status (the line's and the web dashboard's figure)."""
        if last is not None and status["elapsed"] > last["elapsed"]:
            return (status["requests"] - last["requests"]) / (status["elapsed"] - last["elapsed"])
        return 0.0

    @staticmethod
    def line(status: dict[str, Any], last: dict[str, Any] | None) -> str:
        rate = LiveProgress.rate(status, last)
        parts = [f"[{status['elapsed']:6.1f}/{status['duration']:g}s]",
                 f"enrolled {status['enrolled']}/{status['devices']}"
                 + (f" (target now {status['stage_target']})" if status.get("stage_target") is not None else ""),
                 f"check-ins/s {rate:7.0f}", f"requests {status['requests']}", f"errors {status['errors']}"]
        kinds = status.get("requests_failed_by_kind") or {}
        if kinds:
            parts[-1] += " (" + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) + ")"
        if status["enroll_failed"]:
            parts.append(f"enroll failed {status['enroll_failed']}")
        if status.get("push_link_connected") is False or status.get("push_link_down"):
            state = "DOWN" if status.get("push_link_connected") is False else "up"
            missed = f", {status['push_link_missed']} missed" if status.get("push_link_missed") else ""
            parts.append(f"push link {state} ({status['push_link_down']:.0f} s down{missed})")
        if status["rollout_devices"]:
            what = "rollout (DDM active)" if status.get("rollout_declarative") else "rollout"
            parts.append(f"{what} {100 * status['rollout_acked'] / status['rollout_devices']:5.1f}%")
        if status["server_cpu"] is not None:
            parts.append(f"server CPU {100 * status['server_cpu']:3.0f}% RSS {status['server_rss'] / 1e6:.0f} MB")
        return "  ".join(parts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def summary_table(report: dict[str, Any]) -> Table:
    """Per message type: count, errors, latency percentiles (ms); the all-requests line last."""
    table = Table(title=f"mdmsim load: {report['options']['devices']} devices, {report['elapsed']:.1f} s, "
                        f"{report['checkin']['rate']:.0f} check-ins/s", title_justify="left")
    table.add_column("message")
    for column in ("count", "errors", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    rows = [*report["messages"].items(), ("all requests", report["checkin"])]
    for name, stats in rows:
        latency = stats["latency"]
        table.add_row(name, str(stats["count"]), str(stats["errors"]),
                      *(_ms(latency[key]) for key in ("p50", "p90", "p95", "p99", "max")))
    return table


def detail_lines(report: dict[str, Any]) -> list[str]:
    """Enrollment, errors, rollout, server and fleet figures, one line each."""
    enrollment, errors = report["enrollment"], report["errors"]
    lines = [f"enrolled {enrollment['enrolled']}/{enrollment['devices']} (failed {enrollment['failed']}, "
             f"offline {enrollment['offline']}, unfinished "
             f"{(report.get('failures') or {}).get('unfinished_enrollments', 0)}); "
             f"sessions {report['sessions']}",
             f"errors {errors['total']}" + (f": {errors['by_kind']}" if errors["by_kind"] else ""),
             *failure_lines(report)]
    rollout = report.get("rollout")
    if rollout:
        t = rollout["time_to"]
        done, milestone = (("declaration active and valid", "DDM convergence (push→status report)")
                           if rollout.get("declarative") else ("acknowledged", "server's push→Acknowledged"))
        lines.append(
            f"rollout ({rollout['source']}, {rollout['method']}): {rollout['acknowledged']}/{rollout['devices']} "
            f"{done}; time to 50% {_s(t['p50'])}, 95% {_s(t['p95'])}, 99% {_s(t['p99'])}, "
            f"100% {_s(t['p100'])}; {milestone} p50 {_ms(rollout['push_to_ack']['p50'])} ms, "
            f"p99 {_ms(rollout['push_to_ack']['p99'])} ms")
    server = report.get("server") or {}
    if "cpu_avg" in server:
        lines.append(f"server: CPU avg {100 * server['cpu_avg']:.0f}% (max {100 * server['cpu_max']:.0f}%) of "
                     f"one core, RSS max {server['rss_max'] / 1e6:.0f} MB")
    fleet = report["fleet"]
    lines.append(f"fleet: {fleet['workers']} process(es), CPU {fleet['cpu_seconds']:.1f} s, RSS "
                 f"{fleet['rss'] / 1e6:.0f} MB")
    for verdict in report.get("thresholds", []):
        mark = "✓" if verdict["passed"] else "✗"
        lines.append(f"{mark} {verdict['threshold']} (actual {verdict['actual']})")
    return lines


def failure_lines(report: dict[str, Any]) -> list[str]:
    """Enrollment failures by kind and reason, the push link's health, missed pushes, stalled devices."""
    failures = report.get("failures") or {}
    lines = []
    if failures.get("enrollment"):
        reasons = report["enrollment"].get("failures", {})
        lines.append("enrollment failures by kind: " + _kinds(failures["enrollment"]) + "; e.g. "
                     + "; ".join(f"{reason} ({n})" for reason, n in list(reasons.items())[:3]))
    link = failures.get("push_link")
    if link:
        state = "connected" if link["connected"] else "DOWN at the end"
        lines.append(f"push link: {state}; down {link['down_seconds']:.1f} s in all, {link['disconnects']} "
                     f"drop(s), {link['connect_failures']} failed connect(s); pushes received "
                     f"{failures.get('pushes_received', 0)}, missed while unreachable "
                     f"{link.get('missed_while_down', 0)}")
    if failures.get("missed_pushes"):
        lines.append(f"missed pushes: {failures['missed_pushes']} delivered by the server's APNs, never received")
    if failures.get("stalled_devices"):
        lines.append(f"stalled: {failures['stalled_devices']} enrolled device(s) whose latest request failed "
                     "(they stopped checking in)")
    return lines


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"
