"""An in-memory world: the real MDM server, the APNs simulation and a fleet in one process, no sockets.

Time is a heap clock started at a fixed date; everything is seeded, so a run replays exactly.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from device_sim.behaviour import Behaviour
from device_sim.clock import HeapClock
from device_sim.facts import DeviceFacts
from device_sim.fleet import Fleet, FleetSpec
from device_sim.runner import DeviceRunner, InProcessPush
from device_sim.stats import FleetObserver
from device_sim.transport import MemoryTransport
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import build_enrollment
from mdm_server.enrollment_tokens import DEFAULT_TOKEN_ID
from mdm_server.pki import ServerTlsFiles, private_key_pem

EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()  # a Monday morning; virtual time starts here


@dataclass
class WorldOptions:
    seed: int = 1
    data_dir: Path | None = None  # default: a fresh temporary directory
    apns: dict[str, Any] = field(default_factory=dict)  # APNsSimulation options (delay, drop_rate, ...)
    # The server presents a TLS certificate from a CA the enrollment profile does not carry.
    untrusted_server: bool = False

    def server_config(self, **overrides: Any) -> ServerConfig:
        data_dir = self.data_dir or Path(tempfile.mkdtemp(prefix="mdmsim-world-"))
        return ServerConfig(data_dir=data_dir, in_memory=True, apns={"seed": self.seed, **self.apns}, **overrides)

    def server_tls(self, config: ServerConfig, now: float) -> ServerTlsFiles | None:
        """The TLS files to serve instead of the server's own: a foreign CA's, for an untrusted server."""
        if not self.untrusted_server:
            return None
        return foreign_tls(config.server_names, datetime.fromtimestamp(now, UTC))


BehaviourFor = Callable[[DeviceFacts], Behaviour]  # per-device faults, from the device's facts


class EnrollingWorld:
    """What both worlds share: a server, a fleet, and enrolling devices with fresh enrollment profiles."""

    server: MDMServer
    fleet: Fleet
    clock: Any

    def now(self) -> float:
        return self.clock.seconds()

    def enroll(self, indexes: range | None = None, *, spread: float = 60.0) -> list[DeviceRunner]:
        """Add devices and have each install a fresh enrollment profile, spread over `spread` seconds."""
        indexes = indexes if indexes is not None else range(self.fleet.spec.count)
        runners = []
        for position, index in enumerate(indexes):
            runner = self.fleet.add(index)
            profile = self.enrollment_profile(runner)
            delay = spread * position / max(1, len(indexes))
            self.clock.callLater(delay, runner.install_enrollment, profile)
            runners.append(runner)
        return runners

    def enrollment_profile(self, runner: DeviceRunner) -> bytes:
        """A fresh enrollment profile for the runner's user, as GET /mdm/enroll would serve it."""
        server = self.server
        return build_enrollment(
            server.ca, server_url=server.url, topic=server.state.topic, now=server.now(),
            user_id=runner.machine.facts.user.user_id, token_id=DEFAULT_TOKEN_ID,  # the fleet's token, as mdmsim fleet
        ).profile


class World(EnrollingWorld):
    """Everything in one process on a heap clock: the server (started), a fleet over in-memory HTTP."""

    def __init__(self, spec: FleetSpec, options: WorldOptions | None = None, *,
                 behaviour_for: BehaviourFor | None = None) -> None:
        self.options = options or WorldOptions(seed=spec.seed)
        self.clock = HeapClock(EPOCH)
        config = self.options.server_config(push_link=None)
        self.server = MDMServer(config, clock=self.clock, tls=self.options.server_tls(config, EPOCH))
        self.server.startService()
        self.transport = MemoryTransport(self.server.http, self.clock, presented_chain(self.server.tls))
        self.admin_http = self.transport.http
        self.observer = FleetObserver()
        self.fleet = Fleet(spec, clock=self.clock, transport=self.transport,
                           push=InProcessPush(self.server.apns), observer=self.observer,
                           behaviour_for=behaviour_for, reuse_signatures=True)

    def run_for(self, seconds: float) -> int:
        return self.clock.advance(seconds)


def presented_chain(tls: ServerTlsFiles) -> tuple[x509.Certificate, ...]:
    """What the server sends in its TLS handshake: the leaf, then its CA."""
    return (x509.load_pem_x509_certificate(tls.certificate_pem),
            x509.load_pem_x509_certificate(tls.ca_certificate_pem))


def foreign_tls(names: tuple[str, ...], now: datetime) -> ServerTlsFiles:
    """A server certificate from a CA nobody installed: what an untrusted MDM server presents."""
    authority = CertificateAuthority.create("Foreign CA (not in any profile)", now=now)
    certificate, key = authority.issue_server_certificate(list(names), now)
    return ServerTlsFiles(certificate.public_bytes(serialization.Encoding.PEM), private_key_pem(key),
                          authority.certificate_pem)
