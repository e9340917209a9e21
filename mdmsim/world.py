"""An in-memory world: the real MDM server, the APNs simulation and a fleet in one process, no sockets.

Time is a heap clock started at a fixed date; everything is seeded, so a run replays exactly.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from device_sim.clock import HeapClock
from device_sim.fleet import Fleet, FleetSpec
from device_sim.runner import DeviceRunner, InProcessPush
from device_sim.stats import FleetObserver
from device_sim.transport import MemoryTransport
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.enrollment import build_enrollment

EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()  # a Monday morning; virtual time starts here


@dataclass
class WorldOptions:
    seed: int = 1
    data_dir: Path | None = None  # default: a fresh temporary directory
    apns: dict[str, Any] = field(default_factory=dict)  # APNsSimulation options (delay, drop_rate, ...)
    server_chain: tuple[x509.Certificate, ...] | None = None  # what TLS presents; default: the real one


class World:
    def __init__(self, spec: FleetSpec, options: WorldOptions | None = None) -> None:
        self.options = options or WorldOptions(seed=spec.seed)
        self.clock = HeapClock(EPOCH)
        data_dir = self.options.data_dir or Path(tempfile.mkdtemp(prefix="mdmsim-world-"))
        config = ServerConfig(data_dir=data_dir, in_memory=True, push_link=None,
                              apns={"seed": self.options.seed, **self.options.apns})
        self.server = MDMServer(config, clock=self.clock)
        chain = self.options.server_chain or _server_chain(self.server)
        self.transport = MemoryTransport(self.server.site, self.clock, chain)
        self.observer = FleetObserver()
        self.fleet = Fleet(spec, clock=self.clock, transport=self.transport,
                           push=InProcessPush(self.server.apns), observer=self.observer,
                           reuse_signatures=True)

    def now(self) -> float:
        return self.clock.seconds()

    def enroll(self, indexes: range | None = None, *, spread: float = 60.0) -> list[DeviceRunner]:
        """Add devices and have each install a fresh enrollment profile, spread over `spread` seconds."""
        indexes = indexes if indexes is not None else range(self.fleet.spec.count)
        runners = []
        for position, index in enumerate(indexes):
            runner = self.fleet.add(index)
            profile = self._enrollment_profile(runner)
            delay = spread * position / max(1, len(indexes))
            self.clock.callLater(delay, runner.install_enrollment, profile)
            runners.append(runner)
        return runners

    def _enrollment_profile(self, runner: DeviceRunner) -> bytes:
        server = self.server
        return build_enrollment(
            server.ca, server_url=server.config.server_url(), topic=server.state.topic, now=server.now(),
            user_id=runner.machine.facts.user.user_id,
        ).profile

    def run_for(self, seconds: float) -> int:
        return self.clock.advance(seconds)


def _server_chain(server: MDMServer) -> tuple[x509.Certificate, ...]:
    leaf = x509.load_pem_x509_certificate(server.tls.certificate_pem)
    return (leaf, server.ca.certificate)
