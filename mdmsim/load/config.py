"""What a load run is asked to do, and the slice of it each fleet worker process gets (sent as JSON).

Device `i` of the fleet belongs to worker `i % workers`, so a ramp spreads evenly over the workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from device_sim.connection_policy import ConnectionMode
from device_sim.fleet import DEFAULT_KINDS, DEFAULT_OS_MIX


@dataclass(frozen=True)
class Realism:
    """Switches that make devices and the network behave less ideally (all off by default)."""

    connections: str = "per-session"  # a ConnectionMode value: as iOS by default; the others for comparison
    think: float = 0.0  # seconds a device works before each request (uniform 0.5x to 1.5x)
    not_now_rate: float = 0.0  # commands that allow it are answered NotNow at this rate
    network_error_rate: float = 0.0  # requests that fail as a dropped connection (the device retries)
    offline_fraction: float = 0.0  # devices that ignore pushes (phone off, no signal)
    timeout: float = 30.0  # a request with no answer by then is a timeout
    checkin_interval: float | None = None  # devices also check in by themselves this often (None: push only)

    def __post_init__(self) -> None:
        ConnectionMode.parse(self.connections)  # a ConnectionModeError naming the modes, before any worker starts

    @property
    def connection_mode(self) -> ConnectionMode:
        return ConnectionMode(self.connections)


@dataclass(frozen=True)
class WorkerConfig:
    worker: int
    workers: int
    devices: int  # the whole fleet; this worker runs indexes worker, worker + workers, ...
    seed: int
    enroll_url: str
    push_link: str | None  # HOST:PORT of the server's push link
    start_at: float  # wall-clock time of the first enrollment
    ramp: float
    realism: Realism = field(default_factory=Realism)
    os_mix: tuple[tuple[str, int], ...] = DEFAULT_OS_MIX
    kinds: tuple[tuple[str, int], ...] = DEFAULT_KINDS
    progress_every: float = 1.0
    max_enrolling: int = 64  # enrollment downloads in flight per worker
    stages: tuple[tuple[float, int], ...] = ()  # --stages: replaces the ramp (see stages.py)
    live_messages: bool = False  # progress carries per-message statistics too (--web's latency per type)

    def indexes(self) -> range:
        return range(self.worker, self.devices, self.workers)

    def enroll_delay(self, index: int, now: float) -> float:
        return max(0.0, self.start_at + self.ramp * index / max(1, self.devices) - now)

    def offline(self, index: int) -> bool:
        if not self.realism.offline_fraction:
            return False
        digest = hashlib.sha256(f"{self.seed}:{index}:offline".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.realism.offline_fraction

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> WorkerConfig:
        try:
            realism = Realism(**body.pop("realism"))
            mixes = {key: tuple((str(n), int(w)) for n, w in body.pop(key)) for key in ("os_mix", "kinds")}
            stages = tuple((float(s), int(n)) for s, n in body.pop("stages", ()))
            return cls(realism=realism, **mixes, stages=stages, **body)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad worker configuration: {exc}") from None

    def for_worker(self, worker: int) -> WorkerConfig:
        return replace(self, worker=worker)
