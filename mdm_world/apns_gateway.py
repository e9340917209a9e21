"""Assembles `mdmsim apns`: the gateway's PKI (its own CA, from the project's CA code), registry and core, its
provider port (HTTP/2 over TLS), the push link fleets attach to, and optionally the CONNECT proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, ssl

from apns_sim.connect_proxy import ConnectProxyFactory
from apns_sim.device_link import PushLinkFactory
from apns_sim.faults import FaultPlan
from apns_sim.gateway import Gateway
from apns_sim.h2_connection import MAX_CONCURRENT_STREAMS
from apns_sim.h2_server import ProviderFactory, gateway_tls_options
from apns_sim.provider_api import Environment
from apns_sim.push_certificate import GATEWAY_NAMES
from apns_sim.registry import REGISTRY_FILE, TokenRegistry
from mdm_server.ca import PUSH_VALIDITY, CertificateAuthority, private_key_pem
from mdm_server.pki import ServerTlsFiles, server_tls_files
from mdm_server.web.tls import listen_endpoint

CA_NAME = "mdmsim APNs CA"


@dataclass(frozen=True, slots=True)
class PushCertificate:
    topic: str
    certificate_pem: bytes
    private_key_pem: bytes


@dataclass(frozen=True, slots=True)
class GatewayPKI:
    """The gateway's CA (created in its data dir on first use, kept afterwards) and TLS certificate, which
    also names Apple's push hosts for the CONNECT proxy mode."""

    authority: CertificateAuthority
    tls: ServerTlsFiles

    @classmethod
    def load_or_create(cls, data_dir: Path, *, now: datetime,
                       names: tuple[str, ...] = GATEWAY_NAMES) -> GatewayPKI:
        authority = CertificateAuthority.load_or_create(data_dir, CA_NAME, now=now)
        return cls(authority, server_tls_files(data_dir, names, now=now))

    def issue_push_certificate(self, topic: str, *, now: datetime, production: bool = True,
                               validity: timedelta = PUSH_VALIDITY) -> PushCertificate:
        certificate, key = self.authority.issue_push_certificate(
            topic, now, production=production, validity=validity)
        return PushCertificate(topic, certificate.public_bytes(serialization.Encoding.PEM), private_key_pem(key))

    def server_options(self) -> ssl.CertificateOptions:
        return gateway_tls_options(self.tls.certificate_pem, self.tls.private_key_pem, self.tls.ca_certificate_pem)


@dataclass
class GatewayConfig:
    data_dir: Path = Path("mdmsim-apns")
    listen: str = "ssl:2197:interface=127.0.0.1"  # 2197: Apple's alternative provider port
    push_link: str | None = "tcp:2198:interface=127.0.0.1"
    proxy: str | None = None  # a CONNECT proxy endpoint, e.g. tcp:3128:interface=127.0.0.1
    environment: Environment = Environment.PRODUCTION
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 0
    in_memory: bool = False  # no registry file (tests)
    max_streams: int = MAX_CONCURRENT_STREAMS  # per provider connection (SETTINGS_MAX_CONCURRENT_STREAMS)


class APNsGatewayServer:
    """Built but not listening: `listen()` opens the ports, `stop()` sends GOAWAY and saves the registry."""

    def __init__(self, config: GatewayConfig, *, clock: Any) -> None:
        self.config, self.clock = config, clock
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.pki = GatewayPKI.load_or_create(config.data_dir, now=datetime.fromtimestamp(clock.seconds(), UTC))
        registry = TokenRegistry(None if config.in_memory else config.data_dir / REGISTRY_FILE)
        self.gateway = Gateway(clock, registry, config.faults, environment=config.environment, seed=config.seed)
        self.provider = ProviderFactory(self.gateway, self.pki.authority.certificate, max_streams=config.max_streams)
        self.link = PushLinkFactory(self.gateway)
        self.ports: list[Any] = []

    @defer.inlineCallbacks
    def listen(self, reactor: Any):
        self.ports.append((yield listen_endpoint(reactor, self.config.listen, self.provider,
                                                 self.pki.server_options())))
        if self.config.push_link:
            self.ports.append((yield listen_endpoint(reactor, self.config.push_link, self.link,
                                                     self.pki.server_options())))
        if self.config.proxy:
            proxy = ConnectProxyFactory(self.provider, self.pki.server_options(), clock=reactor)
            self.ports.append((yield listen_endpoint(reactor, self.config.proxy, proxy, None)))
        return self.ports

    @property
    def provider_port(self) -> int:
        return self.ports[0].getHost().port

    @property
    def link_port(self) -> int:
        return self.ports[1].getHost().port

    @defer.inlineCallbacks
    def stop(self):
        self.gateway.stop()  # pushes still arriving get 503 Shutdown; held ones are on disk
        self.provider.goaway()
        self.link.disconnect_all()
        for port in self.ports:
            yield port.stopListening()
        self.ports.clear()
