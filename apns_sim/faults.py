"""Fault injection for the simulated APNs: delivery delay, drops, offline devices, 429/503/500 bursts.

Every draw comes from one seeded `random.Random`, and whether a device is offline from its token and the seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from .provider_api import Reason


@dataclass(frozen=True, slots=True)
class Burst:
    """From `start` for `duration` seconds (gateway clock, epoch seconds) every push is refused with `reason`."""

    reason: Reason
    start: float
    duration: float

    def covers(self, now: float) -> bool:
        return self.start <= now < self.start + self.duration


@dataclass
class FaultPlan:
    delay: float = 0.0  # seconds before a push reaches an online device
    jitter: float = 0.0  # plus a random delay: log-normal with this median, or uniform from 0 to this
    jitter_shape: str = "lognormal"  # or "uniform" (the in-process simulation's, kept for its seeded runs)
    drop_rate: float = 0.0  # accepted (200) but never delivered
    offline_fraction: float = 0.0  # devices that never come online: pushes are held until they expire
    error_rate: float = 0.0  # 500 InternalServerError
    bursts: list[Burst] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._offline_cut = int(self.offline_fraction * 2**64)

    def refusal(self, now: float) -> Reason | None:
        """A burst (429/503) covering `now`, else a random 500 at `error_rate`."""
        for burst in self.bursts:
            if burst.covers(now):
                return burst.reason
        if self.error_rate and self._rng.random() < self.error_rate:
            return Reason.INTERNAL_SERVER_ERROR
        return None

    def start_burst(self, reason: Reason, now: float, duration: float) -> None:
        self.bursts.append(Burst(reason, now, duration))

    def drops(self) -> bool:
        return bool(self.drop_rate) and self._rng.random() < self.drop_rate

    def delivery_delay(self) -> float:
        if not self.jitter:
            return self.delay
        if self.jitter_shape == "uniform":
            return self.delay + self._rng.random() * self.jitter
        # Log-normal: most pushes arrive near the median, a few much later, as measured for real APNs.
        return self.delay + self._rng.lognormvariate(0.0, 1.0) * self.jitter

    def offline(self, token: bytes) -> bool:
        if not self._offline_cut:
            return False
        digest = hashlib.blake2b(token, key=str(self.seed).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self._offline_cut


def parse_burst(text: str, *, now: float) -> Burst:
    """`429@30+5`: TooManyRequests from 30 s after `now` for 5 s; `503@0+60`: ServiceUnavailable for a minute."""
    try:
        status, _, window = text.partition("@")
        start, _, duration = window.partition("+")
        reason = {"429": Reason.TOO_MANY_REQUESTS, "503": Reason.SERVICE_UNAVAILABLE,
                  "500": Reason.INTERNAL_SERVER_ERROR}[status]
        return Burst(reason, now + float(start), float(duration))
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not STATUS@START+DURATION with STATUS 429, 503 or 500 (seconds)") from None
