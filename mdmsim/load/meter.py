"""What a fleet worker measures: requests per message type, errors by kind, throughput, rollout milestones.

`LoadRunner` is a DeviceRunner with think time and push timestamps; `MeteredTransport` classifies failures.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

from twisted.internet import defer

from device_sim import effects as fx
from device_sim.checkin_loop import CheckinLoop
from device_sim.ddm_state import ACCOUNT_TYPES
from device_sim.runner import DeviceRunner
from device_sim.stats import enrollment_tally
from device_sim.transport import Reply, Transport, TransportError
from mdm_protocol.clocks import Clock
from mdm_protocol.ddm import DeclarationKind

from . import histograms as h

ACKNOWLEDGED_INSTALL = "InstallProfile:Acknowledged"
DDM_STATUS = "DeclarativeManagement:status"  # a declared rollout: the status report that shows it active
# Per-device rollout latencies: from the server's push (push_*) and from its arrival at the device (delivery_*).
ROLLOUT_SERIES = ("push_to_checkin", "push_to_ack", "delivery_to_checkin", "delivery_to_ack")


class LoadRunner(DeviceRunner):
    """A device runner that thinks before each request and remembers its rollout milestones."""

    think: float = 0.0
    rng: random.Random | None = None
    rollout_push: float | None = None  # when the first push after the rollout started reached the device
    rollout_push_sent: float | None = None  # when the server sent that push (its link's time), if known
    rollout_checkin: float | None = None
    rollout_ack: float | None = None
    left = False  # --stages took the device out: it neither checks in by itself nor answers pushes

    def _send(self, request: fx.SendRequest) -> None:
        if self.think > 0:
            self.clock.callLater(self.think * (0.5 + self.rng.random()), super()._send, request)
        else:
            super()._send(request)

    def on_push(self, token: bytes, payload: dict[str, Any], sent_at: float | None = None) -> None:
        if self.observer is not None:
            self.observer.pushed(self, sent_at)
        super().on_push(token, payload, sent_at)

    def check_in(self) -> None:
        """Start a session without a push (closed-loop load, or a device polling by itself)."""
        if self.left:
            self.loop_pending = False
        else:
            super().check_in()


def declared_active(runner: DeviceRunner) -> bool:
    """The device's status report just sent says an account declaration is active and valid (the device holds
    what it reports: device_sim.ddm_state)."""
    return any(held.active and held.verdict.valid and held.declaration_type in ACCOUNT_TYPES
               for held in runner.machine.ddm.store.of_kind(DeclarationKind.CONFIGURATION))


_HTTP_STATUS = re.compile(r"\bhttp (\d{3})\b")


def error_kind(reason: str) -> str:
    """A transport failure's reason (TransportError text, an enrollment failure) → a short kind for counting."""
    text = reason.lower()
    status = _HTTP_STATUS.search(text)
    if status:
        return f"http_{status[1]}"
    for needle, kind in (("injected", "injected"), ("timed out", "timeout"), ("timeout", "timeout"),
                         ("refused", "refused"), ("trust", "tls"), ("certificate", "tls"), ("ssl", "tls"),
                         ("tls", "tls"), ("reset", "reset"), ("closed", "connection_lost"),
                         ("lost", "connection_lost"), ("dns", "dns")):
        if needle in text:
            return kind
    return "other"


def reason_kind(reason: str) -> str:
    """An enrollment failure's reason → its kind: refused, tls, timeout, http_NNN, not_enrolled, cannot_simulate."""
    if reason.startswith("cannot simulate"):
        return "cannot_simulate"
    if reason.startswith("not enrolled by the end"):
        return reason.rsplit("after ", 1)[-1] if "retrying after" in reason else "not_enrolled"  # a kind already
    return error_kind(reason)


class MeteredTransport:
    """Counts failures by kind and non-2xx answers by status; injects network errors at a given rate."""

    def __init__(self, inner: Transport, errors: Counter[str], *, error_rate: float = 0.0,
                 rng: random.Random | None = None) -> None:
        self.inner, self.errors, self.error_rate = inner, errors, error_rate
        self.rng = rng or random.Random(0)

    def send(self, request: fx.SendRequest, roots: tuple, session: object | None = None) -> defer.Deferred[Reply]:
        if self.error_rate and self.rng.random() < self.error_rate:
            self._count(session, "injected")
            return defer.fail(TransportError("injected network error: connection reset"))
        return self.inner.send(request, roots, session).addCallbacks(
            self._replied, self._failed, callbackArgs=(session,), errbackArgs=(session,))

    def _replied(self, reply: Reply, session: object | None) -> Reply:
        if not 200 <= reply.status < 300:
            self._count(session, f"http_{reply.status}")
        return reply

    def _failed(self, failure: Any, session: object | None) -> Any:
        error = failure.value
        self._count(session, error_kind(error.reason if isinstance(error, TransportError) else str(error)))
        return failure

    def _count(self, session: object | None, kind: str) -> None:
        self.errors[kind] += 1
        if session is not None:  # the runner: its latest failure's kind, for the end-of-run tally
            session.last_error_kind = kind  # type: ignore[attr-defined]


class LoadObserver:
    """The worker's statistics: fed by every LoadRunner (as its Observer) and by the enrollment downloads."""

    def __init__(self, clock: Clock, *, checkin_interval: float | None = None, seed: int = 0,
                 live_messages: bool = False) -> None:
        self.clock, self.live_messages = clock, live_messages
        self.messages: dict[str, h.MessageStats] = {}
        self.errors: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.enroll_failures: Counter[str] = Counter()
        self.enrolled = 0
        self.sessions = 0
        self.last_ok: dict[int, bool] = {}  # device index → did its latest request succeed (stalls)
        self.new_ids: list[str] = []  # enrolled device ids not yet reported to the parent
        self.timeline: dict[int, h.MessageStats] = {}  # wall-clock second → every request answered in it
        self.checkin_interval = checkin_interval
        self.loop = None if checkin_interval is None else CheckinLoop(clock, checkin_interval, seed=seed)
        self.rollout_started: float | None = None
        self.rollout_declarative = False  # a device has it once its status report shows the declaration active
        self.status_reports = 0  # DDM status reports the server accepted since the rollout started
        # push_to_*: from the server's push (APNs' delay included); delivery_to_*: from its arrival here.
        self.push_to_checkin, self.push_to_ack = h.new_histogram(), h.new_histogram()
        self.delivery_to_checkin, self.delivery_to_ack = h.new_histogram(), h.new_histogram()
        self.acked_at: list[float] = []  # seconds since the rollout started, one per device

    # Observer protocol (device_sim.runner.Observer) ----------------------------------------------------

    def request_done(self, runner: LoadRunner, message: str, sent_at: float, status: int | None) -> None:
        now = runner.now()
        ok = status is not None and 200 <= status < 300
        self.last_ok[runner.machine.facts.index] = ok
        self.record(message.split(":", 1)[0], now - sent_at, ok, now)
        if ok and self.rollout_started is not None:
            self._rollout_progress(runner, message, now)

    def effect(self, runner: LoadRunner, effect: fx.Effect) -> None:
        if isinstance(effect, fx.Enrolled):
            self.enrolled += 1
            self.new_ids.append(effect.device_id)
            if self.loop is not None:
                self.loop.enrolled(runner)
        elif isinstance(effect, fx.EnrollmentFailed):
            self.enroll_failures[effect.reason] += 1
        elif isinstance(effect, fx.CommandHandled):
            self.commands[f"{effect.request_type}:{effect.status}"] += 1
        elif isinstance(effect, fx.SessionEnded):
            self.sessions += 1
            if self.loop is not None:
                self.loop.session_ended(runner)

    def pushed(self, runner: LoadRunner, sent_at: float | None = None) -> None:
        if self.rollout_started is not None and runner.rollout_push is None:
            runner.rollout_push, runner.rollout_push_sent = runner.now(), sent_at

    # Fed by the worker ---------------------------------------------------------------------------------

    def record(self, message: str, seconds: float, ok: bool, now: float) -> None:
        stats = self.messages.get(message)
        if stats is None:
            stats = self.messages[message] = h.MessageStats()
        stats.record(seconds, ok)
        second = int(now)
        bucket = self.timeline.get(second)
        if bucket is None:
            bucket = self.timeline[second] = h.MessageStats()
        bucket.record(seconds, ok)

    def enrollment_download_failed(self, reason: str) -> None:
        self.enroll_failures[f"download: {reason}"] += 1

    def cannot_simulate(self, reason: str) -> None:
        self.enroll_failures[f"cannot simulate: {reason}"] += 1

    def end_of_run(self, runners: list[LoadRunner]) -> dict[str, Any]:
        """Devices the run left half-way, judged once at the end (see `enrollment_tally`)."""
        tally = enrollment_tally(runners, self.last_ok)
        self.enroll_failures.update(tally["failed_reasons"])
        return {"stalled": tally["stalled"], "unfinished": tally["unfinished"]}

    def start_rollout(self, at: float, *, declarative: bool = False) -> None:
        self.rollout_started, self.rollout_declarative = at, declarative

    # Internals -----------------------------------------------------------------------------------------

    def _rollout_progress(self, runner: LoadRunner, message: str, now: float) -> None:
        self.status_reports += message == DDM_STATUS
        if message == "Idle" and runner.rollout_push is not None and runner.rollout_checkin is None:
            runner.rollout_checkin = now
            self._since_push(runner, now, self.push_to_checkin, self.delivery_to_checkin)
        elif runner.rollout_ack is None and (
                declared_active(runner) if self.rollout_declarative and message == DDM_STATUS
                else not self.rollout_declarative and message == ACKNOWLEDGED_INSTALL):
            runner.rollout_ack = now
            self.acked_at.append(now - self.rollout_started)
            if runner.rollout_push is not None:
                self._since_push(runner, now, self.push_to_ack, self.delivery_to_ack)

    def _since_push(self, runner: LoadRunner, now: float, from_sent: Any, from_arrival: Any) -> None:
        h.record(from_arrival, now - runner.rollout_push)
        if runner.rollout_push_sent is not None:  # a server without the send time on its link: arrival only
            h.record(from_sent, now - runner.rollout_push_sent)

    def resume(self, runner: LoadRunner) -> None:
        """A device back from --stages' ramp-down picks its self-initiated check-ins up again."""
        if self.loop is not None:
            self.loop.enrolled(runner)

    # Shipping to the parent ----------------------------------------------------------------------------

    def take_timeline(self, before: float) -> list[dict[str, Any]]:
        """Completed seconds (those before `before`), encoded, and forgotten here."""
        done = sorted(second for second in self.timeline if second < before)
        return [{"second": second, **self.timeline.pop(second).to_wire()} for second in done]

    def progress(self, now: float) -> dict[str, Any]:
        ids, self.new_ids = self.new_ids, []
        total = sum(stats.count for stats in self.messages.values())
        errors = sum(stats.errors for stats in self.messages.values())
        body = {"type": "progress", "at": now, "enrolled": self.enrolled,
                "enroll_failed": sum(self.enroll_failures.values()), "requests": total, "errors": errors,
                "error_kinds": dict(self.errors),
                "rollout_acked": len(self.acked_at), "new_ids": ids, "timeline": self.take_timeline(int(now))}
        if self.live_messages:  # asked for by a live dashboard only: a few encoded histograms a second
            body["messages"] = {name: stats.to_wire() for name, stats in self.messages.items()}
        return body

    def final(self, now: float, runners: list[LoadRunner] = ()) -> dict[str, Any]:
        body = {**self.progress(now), **self.end_of_run(list(runners))}
        body["enroll_failed"] = sum(self.enroll_failures.values())
        body.update(
            type="final", timeline=body["timeline"] + self.take_timeline(float("inf")),
            messages={name: stats.to_wire() for name, stats in self.messages.items()},
            error_kinds=dict(self.errors), commands=dict(self.commands),
            enroll_failures=dict(self.enroll_failures), sessions=self.sessions,
            rollout={**{name: h.encode(getattr(self, name)) for name in ROLLOUT_SERIES}, "acked_at": self.acked_at,
                     "status_reports": self.status_reports},
        )
        return body
