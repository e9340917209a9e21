"""How a simulated device behaves beyond the protocol: its realism switches (NotNow, duplicates, retries).

One frozen `Behaviour` per device (a fleet may pick one per device for faults); the machine only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Behaviour:
    """Realism switches; the defaults are a well-behaved, unlocked iPhone."""

    first_unlocked: bool = True
    not_now_rate: float = 0.0  # answer NotNow to commands that allow it, at this rate
    duplicate_rate: float = 0.0  # send a command result twice, as real devices sometimes do
    retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)  # after a non-2xx or a dropped connection
    not_now_repoll: float = 60.0  # the device re-polls by itself when NotNow ended the session
