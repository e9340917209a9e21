"""Devices that check in by themselves every so often, for servers that cannot push them (`--checkin-interval`).

A device's first poll comes at a phase within the interval fixed by the seed and its index, so a fleet's polls
spread out instead of arriving together; the next one an interval after each session ends.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mdm_protocol.clocks import Clock

from . import effects as fx


def poll_phase(seed: int, index: int, interval: float) -> float:
    """Seconds into the interval of device `index`'s first poll: the same for the same seed, spread uniformly."""
    digest = hashlib.sha256(f"{seed}:{index}:phase".encode()).digest()
    return interval * int.from_bytes(digest[:4], "big") / 2**32


class CheckinLoop:
    """Schedules each runner's next self-initiated check-in (`runner.check_in()`), at most one at a time."""

    def __init__(self, clock: Clock, interval: float, *, seed: int) -> None:
        self.clock, self.interval, self.seed = clock, interval, seed

    def saw(self, runner: Any, effect: fx.Effect) -> None:
        """As a FleetObserver listener: polls start once a device is enrolled (or resumed)."""
        if isinstance(effect, fx.Enrolled):
            self.enrolled(runner)
        elif isinstance(effect, fx.SessionEnded):
            self.session_ended(runner)

    def enrolled(self, runner: Any) -> None:
        """First poll at the device's phase (also when a device comes back, --stages' ramp-down)."""
        self.schedule(runner, poll_phase(self.seed, runner.machine.facts.index, self.interval))

    def session_ended(self, runner: Any) -> None:
        self.schedule(runner, self.interval)

    def schedule(self, runner: Any, delay: float) -> None:
        if not runner.loop_pending:
            runner.loop_pending = True
            self.clock.callLater(delay, runner.check_in)
