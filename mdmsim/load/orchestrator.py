"""Runs a load test: our server (or any target), K fleet worker processes, the rollout, the server watch.

Blocking by design: it only reads child pipes (select with a timeout), samples /proc and makes a few API calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from device_sim.catalogue import release
from device_sim.fleet import DEFAULT_KINDS, DEFAULT_OS_MIX
from mdmsim.exit_codes import Exit

from . import summary
from .admin_http import AdminHTTP, AdminHTTPError
from .config import Realism, WorkerConfig
from .rollout import RolloutError, RolloutPlan, set_sync_interval, start_rollout
from .server_watch import ProcessWatch, parse_exposition, server_figures
from .stages import Stages

STARTUP_TIMEOUT = 90.0
FINAL_TIMEOUT = 60.0
INTERRUPTED_FINAL_TIMEOUT = 10.0  # after Ctrl-C the user is waiting: the workers' reports or none
NO_PUSH_LINK = "none"


class LoadError(Exception):
    """The run could not be carried out; the reason is for the user, `code` the exit code (setup error: 2;
    the target unreachable: 1)."""

    def __init__(self, message: str, code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LoadOptions:
    devices: int
    duration: float
    ramp: float = 10.0
    processes: int = 1
    seed: int = 1
    target: str | None = None  # an enrollment URL; None: start our own server
    push_link: str | None = None  # HOST:PORT, or "none"; our own server's is found by itself
    admin_user: str | None = None
    admin_password: str | None = None
    ca_file: str | None = None
    metrics: bool = True  # scrape GET /metrics on the target
    server_pid: int | None = None  # watch this local process's CPU and RSS (a --target on this machine)
    rollout: RolloutPlan | None = None
    sync_interval: float | None = None
    after_enrollment: float | None = None  # end this long after every device enrolled (--duration caps it)
    rollout_timeout: float = 120.0  # the run goes on past --duration until the rollout is done, this long at most
    realism: Realism = field(default_factory=Realism)
    apns: dict[str, float] = field(default_factory=dict)  # our own server's APNs simulation options
    in_memory: bool = False  # our own server's storage (default: a SQLite file, as `mdmsim serve`)
    apns_gateway: bool = False  # our own server pushes through an `mdmsim apns` process (HTTP/2), fleets attach there
    os_mix: tuple[tuple[str, int], ...] = DEFAULT_OS_MIX
    kinds: tuple[tuple[str, int], ...] = DEFAULT_KINDS
    tick: float = 1.0
    stages: tuple[tuple[float, int], ...] = ()  # --stages (devices and duration then follow from them)
    live: bool = False  # a live dashboard reads the progress: add latency per message type and per second

    def __post_init__(self) -> None:
        for version, _ in self.os_mix:
            release(version)  # an unknown iOS is refused here, not by every worker after the run has begun

    def public(self) -> dict[str, Any]:
        """The options as recorded in the report (no password, no profile bytes)."""
        return {
            "devices": self.devices, "duration": self.duration, "ramp": self.ramp, "processes": self.processes,
            "seed": self.seed, "target": self.target or "own server", "sync_interval": self.sync_interval,
            "after_enrollment": self.after_enrollment, "stages": [list(stage) for stage in self.stages] or None,
            "rollout": None if self.rollout is None else {"source": self.rollout.source, "at": self.rollout.at,
                                                          "timeout": self.rollout_timeout},
            "realism": vars(self.realism), "apns": self.apns, "in_memory": self.in_memory,
            "apns_gateway": self.apns_gateway,
        }


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    buffer: bytes = b""
    ready: dict[str, Any] | None = None
    latest: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    closed: bool = False

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass


Progress = Callable[[dict[str, Any]], None]


class LoadRun:
    def __init__(self, options: LoadOptions, workdir: Path, *, progress: Progress | None = None) -> None:
        self.options, self.workdir = options, workdir
        self.show = progress or (lambda status: None)
        self.run_id = uuid.uuid4().hex[:8]
        self.selector = selectors.DefaultSelector()
        self.server: Child | None = None
        self.gateway: Child | None = None  # `mdmsim apns`, with apns_gateway
        self.gateway_watch: ProcessWatch | None = None
        self.workers: list[Child] = []
        self.timeline: list[dict[str, Any]] = []
        self.enrolled_ids: list[str] = []
        self.rollout_start: dict[str, Any] | None = None
        self.watch: ProcessWatch | None = None
        self.fleet_watch: list[ProcessWatch] = []
        self.fleet_samples: list[dict[str, float]] = []
        self.enrolled_after: float | None = None  # seconds from the start until every device settled
        self.sync_policy: str | None = None
        self._gave_up_waiting: float | None = None  # when a rollout stops waiting for enrollment
        self.target: dict[str, Any] = {}  # url, enroll_url, push_link, admin credentials, ca_pem
        self.start_at = 0.0
        self.interrupted = False
        self._timeline_shown = 0  # timeline buckets already summarised for the live status
        self._latest_second: dict[str, Any] | None = None

    # The run ---------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """The report; on Ctrl-C once the workers run, the report of what was measured so far, marked
        `interrupted` (a KeyboardInterrupt before that, or during the final collection, propagates)."""
        before = None
        try:
            self.target = target = self._target()
            before = self._scrape()
            if self.options.sync_interval is not None:
                self.sync_policy = set_sync_interval(self._admin(), self.options.sync_interval, self.run_id)
            self._start_workers(target)
            self._until(self.start_at + self.options.duration)
            return self._finish(target, before)
        except KeyboardInterrupt:
            if not self.workers or self.start_at == 0.0:
                raise
            self.interrupted = True
            return self._finish(self.target, before)
        except (RolloutError, AdminHTTPError) as exc:
            # An admin API that does not answer, or a rollout with no device enrolled: the run failed (1); a
            # refused setting or an unreadable profile is the user's setup (2).
            unreachable = isinstance(exc, AdminHTTPError) and exc.status is None
            nothing_enrolled = bool(self.workers) and not self.enrolled_ids
            raise LoadError(exc.args[0], Exit.FAILED if unreachable or nothing_enrolled else Exit.USAGE) from None
        finally:
            self._cleanup()

    def _target(self) -> dict[str, Any]:
        options = self.options
        if options.target:
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(options.target))
            if options.server_pid:
                self.watch = ProcessWatch(options.server_pid)
            push_link = None if options.push_link == NO_PUSH_LINK else options.push_link
            return {"url": origin, "enroll_url": options.target, "push_link": push_link,
                    "admin_user": options.admin_user, "admin_password": options.admin_password,
                    "ca_pem": options.ca_file, "own_server": False}
        config: dict[str, Any] = {"data_dir": str(self.workdir / "server"), "in_memory": options.in_memory,
                                  "apns": options.apns}
        gateway = self._start_gateway() if options.apns_gateway else None
        if gateway is not None:
            config["apns_provider"] = {key: gateway[key] for key in ("url", "cert", "key", "ca")}
        self.server = self._spawn("server", "mdmsim.load.server_process", config)
        ready = self._wait_ready([self.server])[0]
        if ready.get("type") == "error":
            raise LoadError(f"our server could not start: {ready['reason']}")
        self.watch = ProcessWatch(ready["pid"])
        if gateway is not None:
            ready = {**ready, "push_link": gateway["push_link"]}
        if options.push_link == NO_PUSH_LINK:  # asked for: devices get no pushes from our server either
            ready = {**ready, "push_link": None}
        return {**ready, "own_server": True}

    def _start_gateway(self) -> dict[str, Any]:
        self.gateway = self._spawn("apns", "mdmsim.load.gateway_process", {"data_dir": str(self.workdir / "apns")})
        ready = self._wait_ready([self.gateway])[0]
        if ready.get("type") == "error":
            raise LoadError(f"the APNs gateway could not start: {ready['reason']}")
        self.gateway_watch = ProcessWatch(ready["pid"])
        return ready

    def _admin(self) -> AdminHTTP:
        target = self.target
        return AdminHTTP(target["url"], target.get("admin_user"), target.get("admin_password"),
                         target.get("ca_pem"))

    def _start_workers(self, target: dict[str, Any]) -> None:
        base = WorkerConfig(0, self.options.processes, self.options.devices, self.options.seed,
                            target["enroll_url"], target.get("push_link"), 0.0, self.options.ramp,
                            self.options.realism, self.options.os_mix, self.options.kinds, self.options.tick,
                            stages=self.options.stages, live_messages=self.options.live)
        for index in range(self.options.processes):
            self.workers.append(self._spawn(f"worker {index}", "mdmsim.load.worker",
                                            base.for_worker(index).to_json()))
        self.fleet_watch = [ProcessWatch(ready["pid"]) for ready in self._wait_ready(self.workers)]
        # The ramp starts once every worker has imported and connected, so no device starts late.
        self.start_at = time.time() + 0.2
        for worker in self.workers:
            worker.send({"cmd": "start", "at": self.start_at})

    def _until(self, deadline: float) -> None:
        """Run to the deadline, and on while a rollout is still being delivered (up to its timeout).

        With `after_enrollment`, the deadline moves to that long after every device enrolled (never later)."""
        next_tick = time.time() + self.options.tick
        while time.time() < deadline or self._rollout_pending():
            if self.options.after_enrollment is not None and self.enrolled_after is not None:
                deadline = min(deadline, self.start_at + self.enrolled_after + self.options.after_enrollment)
            wake = min(next_tick, deadline) if time.time() < deadline else next_tick
            self._read(max(0.0, wake - time.time()))
            if self._rollout_due(time.time() >= deadline):
                self._rollout()
            if time.time() >= next_tick:
                next_tick += self.options.tick
                self._tick()
            dead = [w for w in self.workers if w.closed and w.final is None]
            if dead:
                raise LoadError(f"{dead[0].name} died: {self._stderr_tail(dead[0])}")

    def _rollout_due(self, at_deadline: bool) -> bool:
        """At its time; by default once every device settled, waiting past the deadline (a slow machine)
        for up to the rollout timeout before rolling out to whoever enrolled."""
        plan = self.options.rollout
        if plan is None or self.rollout_start is not None:
            return False
        if plan.at is not None:
            return time.time() >= self.start_at + plan.at or at_deadline
        if self.enrolled_after is not None or self._settled() >= self.options.devices:
            return True
        if at_deadline and self._gave_up_waiting is None:
            self._gave_up_waiting = time.time() + self.options.rollout_timeout
        return self._gave_up_waiting is not None and time.time() >= self._gave_up_waiting

    def _settled(self) -> int:
        return sum(w.latest.get("enrolled", 0) + w.latest.get("enroll_failed", 0) for w in self.workers)

    def _rollout_pending(self) -> bool:
        if self.options.rollout is None:
            return False
        if self.rollout_start is None:
            return True  # due once enrollment settles, or a rollout timeout after the deadline
        acked = sum(w.latest.get("rollout_acked", 0) for w in self.workers)
        started = self.rollout_start["started_at"]
        return acked < self.rollout_start["devices"] and time.time() < started + self.options.rollout_timeout

    def _rollout(self) -> None:
        plan = self.options.rollout
        if plan.prepare is not None:
            plan.prepare(self._admin(), list(self.enrolled_ids))
        started = time.time()
        for worker in self.workers:  # before any push can arrive, so no device misses its start
            worker.send({"cmd": "rollout", "at": started, "declarative": plan.declarative})
        start = start_rollout(self._admin(), plan, list(self.enrolled_ids), self.run_id)
        start.started_at = started
        self.rollout_start = {"source": plan.source, **start.to_json(), "at": started - self.start_at,
                              "declarative": plan.declarative}

    def _tick(self) -> None:
        now = time.time()
        point = self.watch.sample(now, now - self.start_at) if self.watch else None
        if self.gateway_watch:
            self.gateway_watch.sample(now, now - self.start_at)
        self._sample_fleet(now)
        latest = [w.latest for w in self.workers]
        if self.enrolled_after is None and self._settled() >= self.options.devices:
            self.enrolled_after = now - self.start_at
        target = Stages(self.options.stages).target_at(now - self.start_at) if self.options.stages else None
        self.show({
            **(self._live_latency(latest) if self.options.live else {}),
            "stage_target": None if target is None else int(target),
            **summary.live_failures(latest),
            "elapsed": now - self.start_at, "duration": self.options.duration, "devices": self.options.devices,
            "enrolled": sum(p.get("enrolled", 0) for p in latest),
            "enroll_failed": sum(p.get("enroll_failed", 0) for p in latest),
            "requests": sum(p.get("requests", 0) for p in latest),
            "errors": sum(p.get("errors", 0) for p in latest),
            "rollout_acked": sum(p.get("rollout_acked", 0) for p in latest),
            "rollout_devices": self.rollout_start["devices"] if self.rollout_start else None,
            "rollout_declarative": bool(self.rollout_start and self.rollout_start.get("declarative")),
            "server_cpu": point["cpu"] if point else None, "server_rss": point["rss"] if point else None,
        })

    def _live_latency(self, latest: list[dict[str, Any]]) -> dict[str, Any]:
        """Per message type since the start, and the latest second the workers finished: what a dashboard
        shows beside the progress line's figures, merged from the same messages as the final report."""
        fresh = self.timeline[self._timeline_shown:]
        self._timeline_shown = len(self.timeline)
        point = summary.live_second(fresh)
        if point is not None:
            self._latest_second = point
        return {"messages": summary.live_messages(latest), "latest_second": self._latest_second}

    def _sample_fleet(self, now: float) -> None:
        points = [p for p in (w.sample(now, now - self.start_at) for w in self.fleet_watch) if p]
        if points:
            self.fleet_samples.append({"t": now - self.start_at, "cpu": sum(p["cpu"] for p in points),
                                       "rss": sum(p["rss"] for p in points)})

    def _finish(self, target: dict[str, Any], before: Any) -> dict[str, Any]:
        for worker in self.workers:
            worker.send({"cmd": "stop"})
        deadline = time.time() + (INTERRUPTED_FINAL_TIMEOUT if self.interrupted else FINAL_TIMEOUT)
        while any(w.final is None and not w.closed for w in self.workers) and time.time() < deadline:
            self._read(0.5)
        missing = [w.name for w in self.workers if w.final is None]
        if missing:
            raise LoadError(f"no final report from {', '.join(missing)}: {self._stderr_tail(self.workers[0])}")
        elapsed = time.time() - self.start_at
        for watch in (self.watch, self.gateway_watch):
            if watch:
                watch.sample(time.time(), elapsed)
        after = self._scrape()
        return self._report(target, before, after, elapsed)

    def _report(self, target: dict[str, Any], before: Any, after: Any, elapsed: float) -> dict[str, Any]:
        finals = [w.final for w in self.workers]
        report: dict[str, Any] = {
            "mdmsim_load": summary.REPORT_VERSION, "options": self.options.public(),
            "target": {"url": target["url"], "own_server": target["own_server"], "sync_policy": self.sync_policy},
            "started_at": self.start_at, "elapsed": elapsed, "interrupted": self.interrupted,
            **summary.merge_finals(finals), "timeline": summary.merge_timeline(self.timeline, self.start_at),
        }
        report["enrollment"]["devices"] = self.options.devices  # asked for, whether or not each one started
        report["target"]["push_link"] = target.get("push_link")
        summary.add_rates(report, elapsed)
        report["enrollment"]["completed_after"] = self.enrolled_after
        report["fleet"]["samples"] = self.fleet_samples
        if self.fleet_samples:  # CPU as a fraction of one core, summed over the workers
            report["fleet"]["cpu_avg"] = sum(w.summary().get("cpu_avg", 0.0) for w in self.fleet_watch)
            report["fleet"]["rss_max"] = max(s["rss"] for s in self.fleet_samples)
        report["rollout"] = (summary.rollout_figures(finals, self.rollout_start)
                             if self.rollout_start else None)
        report["histograms"]["timeline"] = summary.timeline_buckets(self.timeline)
        report["histograms"]["rollout"] = summary.rollout_raw(finals) if self.rollout_start else None
        server: dict[str, Any] = self.watch.summary() if self.watch else {}
        if after is not None:
            server["metrics"] = server_figures(before, after)
        report["server"] = server
        if self.gateway_watch:  # the APNs gateway's own CPU and RSS, beside the server's
            report["apns_gateway"] = self.gateway_watch.summary()
        report["failures"]["missed_pushes"] = self._missed_pushes(report)
        return report

    @staticmethod
    def _missed_pushes(report: dict[str, Any]) -> int | None:
        """Pushes the server's APNs delivered to the push link that no device here received; None when the
        server does not tell (no metrics) or there is no push link."""
        delivered = report["server"].get("metrics", {}).get("apns", {}).get("delivered")
        if delivered is None or report["failures"]["push_link"] is None:
            return None
        return max(0, round(delivered) - report["failures"]["pushes_received"])

    # Children --------------------------------------------------------------------------------------------

    def _spawn(self, name: str, module: str, config: dict[str, Any]) -> Child:
        stderr = open(self.workdir / f"{name.replace(' ', '-')}.log", "wb")  # noqa: SIM115 (child owns it)
        # A session of their own: Ctrl-C reaches only this process, which asks the workers for their reports.
        process = subprocess.Popen([sys.executable, "-m", module, json.dumps(config)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=stderr, cwd=os.getcwd(), start_new_session=True)
        stderr.close()
        child = Child(name, process)
        os.set_blocking(process.stdout.fileno(), False)
        self.selector.register(process.stdout, selectors.EVENT_READ, child)
        return child

    def _wait_ready(self, children: list[Child]) -> list[dict[str, Any]]:
        deadline = time.time() + STARTUP_TIMEOUT
        while any(c.ready is None for c in children):
            if time.time() > deadline:
                raise LoadError(f"children did not start within {STARTUP_TIMEOUT:g} s")
            self._read(0.5)
            for child in children:
                if child.closed and child.ready is None:
                    raise LoadError(f"{child.name} did not start: {self._stderr_tail(child)}")
        return [c.ready for c in children]

    def _read(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            try:
                data = os.read(key.fd, 1 << 20)
            except BlockingIOError:
                continue
            if not data:
                child.closed = True
                self.selector.unregister(key.fileobj)
                continue
            child.buffer += data
            *lines, child.buffer = child.buffer.split(b"\n")
            for line in lines:
                try:
                    message = json.loads(line) if line.strip() else None
                except ValueError:  # a stray print in a child: not ours to interpret
                    message = None
                if isinstance(message, dict):
                    self._message(child, message)

    def _message(self, child: Child, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("ready", "error"):
            child.ready = message
            return
        self.timeline += message.get("timeline", [])
        self.enrolled_ids += message.get("new_ids", [])
        if kind == "progress":
            child.latest = message
        elif kind == "final":
            child.latest = child.final = message

    def _stderr_tail(self, child: Child) -> str:
        path = self.workdir / f"{child.name.replace(' ', '-')}.log"
        text = path.read_text(errors="replace").strip() if path.exists() else ""
        return text[-600:] or f"exit code {child.process.poll()}"

    def _cleanup(self) -> None:
        children = [*self.workers, *([self.server] if self.server else []), *([self.gateway] if self.gateway else [])]
        for child in children:
            if child.process.poll() is None:
                with contextlib.suppress(OSError):
                    child.process.stdin.close()  # EOF tells the child to stop
        for child in children:
            try:
                child.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.process.stdout.close()
        self.selector.close()

    # The target's admin API and metrics ------------------------------------------------------------------

    def _scrape(self) -> Any:
        if not self.options.metrics:
            return None
        try:
            text = self._admin().metrics()
        except AdminHTTPError:
            return None
        return parse_exposition(text) if text else None
