"""What a fleet run observed: requests per message type, enrollments, command outcomes, readiness.

The observer is fed by every runner; reports and scenario expectations read from it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from mdm_protocol.report import Status

from . import effects as fx


@dataclass
class MessageStats:
    """Counts and a bounded latency histogram (1 µs to 1 h, 3 significant digits): long runs stay small."""

    count: int = 0
    errors: int = 0
    latencies: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 3_600_000_000, 3))

    def record(self, seconds: float) -> None:
        self.latencies.record_value(min(3_600_000_000, max(1, round(seconds * 1e6))))

    def percentile(self, fraction: float) -> float:
        """Seconds; 0 for a message type never timed."""
        if not self.latencies.get_total_count():
            return 0.0
        return self.latencies.get_value_at_percentile(fraction * 100) / 1e6


@dataclass
class DeviceRecord:
    enrolled_at: float | None = None
    enrollment_error: tuple[Any, ...] = ()
    enrollment_failure: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    readiness: dict[str, Any] = field(default_factory=dict)
    installs_acknowledged: int = 0
    last_request_ok: bool = True  # False: its latest request failed (a stalled device, once enrolled)


Listener = Callable[[Any, fx.Effect], None]  # (runner, effect): told of every effect after the observer counted it


class FleetObserver:
    def __init__(self, listeners: Sequence[Listener] = ()) -> None:
        self.listeners = tuple(listeners)  # e.g. fleet_state.StateKeeper.saw, checkin_loop.CheckinLoop.saw
        self.messages: dict[str, MessageStats] = defaultdict(MessageStats)
        self.devices: dict[int, DeviceRecord] = defaultdict(DeviceRecord)
        self.commands: Counter[tuple[str, Status]] = Counter()
        self.sessions = 0
        self.push_to_ack: list[float] = []

    def request_done(self, runner: Any, message: str, sent_at: float, status: int | None) -> None:
        stats = self.messages[message.split(":")[0] if ":" in message else message]
        stats.count += 1
        stats.record(runner.now() - sent_at)
        ok = status is not None and 200 <= status < 300
        self.devices[runner.machine.facts.index].last_request_ok = ok
        if not ok:
            stats.errors += 1

    def enrollment_download_failed(self, index: int, reason: str) -> None:
        """The enrollment profile never arrived: the device failed to enroll as surely as a refused Authenticate."""
        record = self.devices[index]
        record.enrolled_at, record.enrollment_failure = None, f"download: {reason}"

    def effect(self, runner: Any, effect: fx.Effect) -> None:
        record = self.devices[runner.machine.facts.index]
        # A device counts by its latest enrollment: enrolled after a failure is enrolled, and the other way round.
        if isinstance(effect, fx.Enrolled):
            record.enrolled_at = runner.now()
            record.enrollment_error, record.enrollment_failure = (), None
        elif isinstance(effect, fx.EnrollmentFailed):
            record.enrolled_at = None
            record.enrollment_error, record.enrollment_failure = effect.error_chain, effect.reason
        elif isinstance(effect, fx.CommandHandled):
            self._command(runner, record, effect)
        elif isinstance(effect, fx.ReadinessChanged):
            record.readiness[effect.account] = effect.readiness
        elif isinstance(effect, fx.SessionEnded):
            self.sessions += 1
        for listener in self.listeners:
            listener(runner, effect)

    def _command(self, runner: Any, record: DeviceRecord, effect: fx.CommandHandled) -> None:
        self.commands[(effect.request_type, effect.status)] += 1
        if effect.error_chain:
            record.errors.append({
                "request_type": effect.request_type, "command_uuid": effect.command_uuid,
                "status": effect.status.value, "error_chain": [item.to_plist() for item in effect.error_chain],
            })
        if effect.request_type == "InstallProfile" and effect.status is Status.ACKNOWLEDGED:
            record.installs_acknowledged += 1
            if runner.last_push_at is not None:
                self.push_to_ack.append(runner.now() - runner.last_push_at)

    @property
    def enrolled(self) -> int:
        return sum(1 for r in self.devices.values() if r.enrolled_at is not None)

    @property
    def enrollment_failures(self) -> int:
        return sum(1 for r in self.devices.values() if r.enrollment_failure is not None)

    def last_ok(self) -> dict[int, bool]:
        return {index: record.last_request_ok for index, record in self.devices.items()}


def enrollment_tally(runners: list[Any], last_ok: dict[int, bool]) -> dict[str, Any]:
    """At the end of a run: enrolled devices whose latest request failed are stalled (they stopped checking in).
    A device not enrolled by the end counts as failed (a device retries for minutes, a bounded number of times:
    a run must not call that success), unless the only failure it met was an injected fault (asked for): that
    one is unfinished. The failure's kind is the one the metered transport left on the runner
    (`last_error_kind`); runners whose enrollment download failed (`download_failed`) are counted already."""
    stalled, unfinished = 0, 0
    failed_reasons: Counter[str] = Counter()
    for runner in runners:
        phase = runner.machine.phase.value
        if phase == "enrolled":
            stalled += not last_ok.get(runner.machine.facts.index, True)
        elif phase in ("new", "authenticating", "token-updating") and not getattr(runner, "download_failed", False):
            kind = getattr(runner, "last_error_kind", None)
            if kind == "injected":
                unfinished += 1
            else:
                failed_reasons[not_enrolled_reason(kind)] += 1
    return {"stalled": stalled, "unfinished": unfinished, "failed_reasons": failed_reasons}


def not_enrolled_reason(kind: str | None) -> str:
    return "not enrolled by the end of the run" + (f", still retrying after {kind}" if kind else "")
