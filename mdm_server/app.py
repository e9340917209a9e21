"""Assembles the MDM server from its parts: data directory, CA and TLS, storage, APNs simulation, web tree.

Everything runs on the clock passed in (the reactor, or a virtual clock for scenarios).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.web import resource

from .admin_model import AdminModel
from .ca import CertificateAuthority
from .identity import IdentityVerifier
from .pki import server_tls_files
from .push.apns_sim import APNsSimulation
from .push.link import PushLinkFactory
from .service import MDMService
from .state import ServerState
from .storage.interface import Storage
from .storage.memory import MemoryStorage
from .storage.sqlite import SQLiteStorage
from .wakeups import Waker
from .web.admin_api import AdminAPI
from .web.device import DeviceEndpoint
from .web.device_channel import DeviceChannelFactory
from .web.enroll import EnrollResource
from .web.metrics import MetricsResource
from .web.site import DEFAULT_BODY_LIMIT, make_site
from .web.tls import listen_endpoint, server_options

DATABASE_FILE = "mdmsim.sqlite3"


@dataclass
class ServerConfig:
    data_dir: Path = Path("mdmsim-data")
    listen: str = "ssl:8443:interface=127.0.0.1:backlog=1024"
    push_link: str | None = "tcp:8444:interface=127.0.0.1:backlog=1024"
    server_names: tuple[str, ...] = ("localhost", "127.0.0.1")
    public_url: str | None = None  # what devices are told to use; default https://<first name>:<port>
    admin_user: str = "admin"
    admin_password: str | None = None  # default: the one generated into server.json on first start
    body_limit: int = DEFAULT_BODY_LIMIT
    in_memory: bool = False  # MemoryStorage instead of the SQLite file (tests, scenarios)
    key_type: str = "ec"  # CA and TLS keys: EC P-256 (default) or RSA-2048
    apns: dict[str, Any] = field(default_factory=dict)  # APNsSimulation options: delay, jitter, drop_rate
    lean_device_http: bool = True  # device check-ins on the lean channel; False: all through twisted.web

    def server_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        port = next((p for p in self.listen.split(":") if p.isdigit()), "443")
        scheme = "https" if self.listen.startswith("ssl:") else "http"
        return f"{scheme}://{self.server_names[0]}:{port}"


class MDMServer:
    """The whole server, built but not listening: `listen()` opens its ports, `root` serves in memory."""

    def __init__(self, config: ServerConfig, *, clock: Any, storage: Storage | None = None) -> None:
        self.config, self.clock = config, clock
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.state = ServerState.load_or_create(config.data_dir)
        # The CA first, so that its key type is the one asked for (it is kept from then on).
        self.ca = CertificateAuthority.load_or_create(config.data_dir, key_type=config.key_type, now=self.now())
        self.tls = server_tls_files(config.data_dir, config.server_names, now=self.now(), key_type=config.key_type)
        self.storage = storage or self._storage()
        self.apns = APNsSimulation(clock=clock, **config.apns)
        self.waker = Waker(self.storage, self.apns, clock=clock)
        self.service = MDMService(
            self.storage, topic=self.state.topic, now=clock.seconds, schedule_wake=self.waker.schedule
        )
        self.verifier = IdentityVerifier([self.ca.certificate], now=self.now)
        self.admin_password = config.admin_password or self.state.admin_password
        self.url = config.server_url()  # what devices are told; the real port once listening on port 0
        self.admin = AdminModel(self, data_dir=config.data_dir, in_memory=config.in_memory)
        self.admin.start()
        self.root = self._root()
        self.site = make_site(self.root, body_limit=config.body_limit, reactor=clock)
        self.http = self.site
        if config.lean_device_http:
            self.http = DeviceChannelFactory(self.site, self.device_endpoint, clock=clock,
                                             body_limit=config.body_limit)
        self.ports: list[Any] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    def _storage(self) -> Storage:
        if self.config.in_memory:
            return MemoryStorage()
        return SQLiteStorage(self.config.data_dir / DATABASE_FILE)

    def _root(self) -> resource.Resource:
        self.device_endpoint = endpoint = DeviceEndpoint(self.service, self.verifier)
        mdm = resource.Resource()
        mdm.putChild(b"checkin", endpoint)
        mdm.putChild(b"connect", endpoint)
        self.enroll = EnrollResource(
            self.ca, topic=self.state.topic, server_url=self.url, now=self.now,
            enroll_token=self.state.enroll_token, admin=(self.config.admin_user, self.admin_password),
        )
        mdm.putChild(b"enroll", self.enroll)
        root = resource.Resource()
        root.putChild(b"mdm", mdm)
        root.putChild(b"metrics", MetricsResource(self))  # unauthenticated counts only: keep it on loopback
        v1 = AdminAPI(self.storage, self.waker, username=self.config.admin_user, password=self.admin_password,
                      clock=self.clock)
        root.putChild(b"api", self.admin.api(v1, self))
        return root

    @defer.inlineCallbacks
    def listen(self, reactor: Any):
        tls = self.tls
        options = server_options(tls.certificate_pem, tls.private_key_pem, tls.ca_certificate_pem)
        port = yield listen_endpoint(reactor, self.config.listen, self.http, options,
                                     whole_writes=self.config.lean_device_http)
        self.ports.append(port)
        if not self.config.public_url:
            # With port 0 the system picks the port: profiles must carry the real one.
            scheme = "https" if self.config.listen.startswith("ssl:") else "http"
            self.url = f"{scheme}://{self.config.server_names[0]}:{port.getHost().port}"
            self.enroll.server_url = self.url
        if self.config.push_link:
            factory = PushLinkFactory(self.apns)
            self.ports.append((yield listen_endpoint(reactor, self.config.push_link, factory, options)))
        return self.ports

    @defer.inlineCallbacks
    def stop(self):
        for port in self.ports:
            yield port.stopListening()
        self.ports.clear()
        self.admin.stop()
        self.storage.close()
