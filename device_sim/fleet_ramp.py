"""Enrolling a fleet over a ramp: each device is added at its slot, fetches its enrollment profile, installs it.

`mdmsim fleet` runs it on the reactor against a real server; the fetch is passed in, so any clock will do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet import defer
from twisted.python.failure import Failure

from mdm_protocol.clocks import Clock

from .device_snapshot import SavedDevice
from .fleet import Fleet
from .runner import DeviceRunner
from .stats import FleetObserver

FetchProfile = Callable[[DeviceRunner], "defer.Deferred[bytes]"]  # the device's enrollment profile, downloaded


class EnrollmentRamp:
    """Spreads the fleet's enrollments over `ramp` seconds and keeps the downloads that failed."""

    def __init__(self, fleet: Fleet, observer: FleetObserver, *, clock: Clock, fetch_profile: FetchProfile,
                 saved: Mapping[int, SavedDevice] | None = None) -> None:
        self.fleet, self.observer, self.clock, self.fetch_profile = fleet, observer, clock, fetch_profile
        self.saved = saved or {}  # devices kept by an earlier run (fleet_state): resumed at their slot
        self.failures: list[str] = []  # "index: reason" per failed download

    @property
    def count(self) -> int:
        return self.fleet.spec.count

    def start(self, ramp: float) -> None:
        for index in range(self.count):
            self.clock.callLater(ramp * index / max(1, self.count), self._enroll, index)

    def _enroll(self, index: int) -> None:
        saved = self.saved.get(index)
        runner = self.fleet.add(index, None if saved is None else saved.facts)
        if saved is not None:
            runner.resume(saved)
            return
        self.fetch_profile(runner).addCallbacks(runner.install_enrollment, self._failed,
                                                errbackArgs=(index, runner))

    def _failed(self, failure: Failure, index: int, runner: DeviceRunner) -> None:
        runner.download_failed = True  # counted here: the end-of-run tally leaves it alone
        reason = failure.getErrorMessage() or failure.type.__name__
        self.failures.append(f"{index}: {reason}")
        self.observer.enrollment_download_failed(index, reason)

    def progress(self, elapsed: float) -> str:
        """One line for humans: enrolled, failed (enrollment or download), sessions and commands so far."""
        seen = self.observer
        return (f"[{elapsed:6.1f}s] enrolled {seen.enrolled}/{self.count}  "
                f"failed {seen.enrollment_failures}  sessions {seen.sessions}  "
                f"commands {sum(seen.commands.values())}")

    def all_enrolled(self) -> bool:
        return self.observer.enrolled == self.count and not self.failures
