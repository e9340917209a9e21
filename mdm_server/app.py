"""Assembles the MDM server from its parts: data directory, CA and TLS, storage, APNs simulation, web tree.

Each part is given its collaborators when built; the server is a MultiService whose children are the admin
model and, given a reactor, its listening ports. Everything runs on the clock passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.web import resource

from apns_sim.device_link import PushLinkFactory
from mdm_protocol.clocks import Clock, Reactor

from .admin_model import AdminModel
from .ca import CertificateAuthority, private_directory
from .client_cert import ClientCertSource
from .console.mount import admin_console, user_portal
from .declarative import DeclarativeService
from .enrollment_tokens import TokenRegistry, Verdict, new_identity_policy
from .identity import IdentityVerifier
from .listening import PortService
from .metrics import ServerMetrics
from .pki import ServerTlsFiles, server_tls_files
from .profile_signer import ProfileSigner
from .push.apns_client import APNsProviderClient, ProviderSettings
from .push.apns_sim import APNsSimulation
from .push.interface import Pusher
from .retention import DEFAULT_RETAIN, Retention
from .scep_challenges import MemoryChallengeStore, SQLiteChallengeStore
from .scep_service import RegistrationAuthority, ScepService
from .service import MDMService
from .state import ServerState
from .storage.interface import CommandStatus, EnrollmentState, Storage
from .storage.memory import MemoryStorage
from .storage.sqlite import SQLiteStorage
from .wakeups import Waker

if TYPE_CHECKING:
    from .workers.coordination import Coordination
from .web.admin_api import AdminAPI
from .web.admin_tokens_api import EnrollmentTokensAPI
from .web.client_limits import ClientLimits
from .web.ddm_assets import AssetResource
from .web.device import DeviceEndpoint
from .web.device_channel import DeviceChannelFactory
from .web.enroll import EnrollResource
from .web.json_api import JsonAPI, basic_auth
from .web.login_throttle import LoginThrottle
from .web.metrics import MetricsResource
from .web.openapi import openapi_route
from .web.scep import ScepResource
from .web.site import DEFAULT_BODY_LIMIT, make_site
from .web.tls import adopt_port, listen_endpoint, server_options

DATABASE_FILE = "mdmsim.sqlite3"
SCEP_DATABASE_FILE = "scep.sqlite3"
ENROLLMENT_IDENTITIES = ("pkcs12", "scep")


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
    database: str | None = None  # a postgresql:// URL: PostgreSQL instead of the SQLite file in data_dir
    key_type: str = "ec"  # CA and TLS keys: EC P-256 (default) or RSA-2048
    apns: dict[str, Any] = field(default_factory=dict)  # APNsSimulation options: delay, jitter, drop_rate
    lean_device_http: bool = True  # device check-ins on the lean channel; False: all through twisted.web
    enrollment_identity: str = "pkcs12"  # or "scep": profiles carry a SCEP payload, /scep issues identities
    allow_sha1_signatures: bool = False  # Mdm-Signature and SCEP requests with SHA-1 digests (mdmb's default)
    retain: float | None = DEFAULT_RETAIN  # seconds finished commands and results are kept; None: forever
    client_limits: ClientLimits = field(default_factory=ClientLimits)  # request deadlines, connections per client
    # Push through an HTTP/2 provider API (Apple's or `mdmsim apns`) instead of the in-process simulation.
    apns_provider: ProviderSettings | None = None
    open_enrollment: bool = False  # anyone may fetch a profile (for any user) and re-enroll any device: load tests
    sign_profiles: bool = True  # enrollment profiles and InstallProfile payloads as CMS SignedData (SPEC 8)
    sign_message: bool = True  # the enrollment profile's SignMessage; False: devices identify by mutual TLS
    client_cert_header: str | None = None  # where a TLS proxy puts the client certificate (Client-Cert, ...)
    trusted_proxies: tuple[str, ...] = ()  # the addresses whose client_cert_header is believed
    # Listening sockets given by `mdmsim serve --workers`' supervisor, by port name ("devices", "push link").
    inherited_fds: Mapping[str, int] = field(default_factory=dict)

    def server_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        port = next((p for p in self.listen.split(":") if p.isdigit()), "443")
        scheme = "https" if self.listen.startswith("ssl:") else "http"
        return f"{scheme}://{self.server_names[0]}:{port}"


def datetime_clock(clock: Clock) -> Callable[[], datetime]:
    """`now()` as an aware datetime on `clock`: what certificates are issued and judged against."""
    return lambda: datetime.fromtimestamp(clock.seconds(), UTC)


def open_storage(config: ServerConfig) -> Storage:
    if config.in_memory:
        return MemoryStorage()
    if config.database is not None:
        from .storage.postgres import PostgresStorage  # psycopg loads only for a server that uses it

        return PostgresStorage(config.database)
    return SQLiteStorage(config.data_dir / DATABASE_FILE)


class MDMServer(MultiService):
    """The whole server as a service: built by the constructor, running once `startService()` is called.

    Given a `reactor`, its ports (devices; the push link) are child services opened at start and closed at
    stop; without one it serves in memory only, through `http` (devices) and `site` (everything).
    `tls` replaces the server's own certificate files (e.g. a certificate from a CA no profile carries).
    """

    def __init__(self, config: ServerConfig, *, clock: Clock, storage: Storage | None = None,
                 tls: ServerTlsFiles | None = None, reactor: Reactor | None = None) -> None:
        super().__init__()
        if config.enrollment_identity not in ENROLLMENT_IDENTITIES:
            raise ValueError(f"enrollment identity {config.enrollment_identity!r} is not one of "
                             f"{', '.join(ENROLLMENT_IDENTITIES)}")
        self.config, self.clock = config, clock
        self.now = datetime_clock(clock)
        private_directory(config.data_dir)
        self.state = ServerState.load_or_create(config.data_dir)
        provider = config.apns_provider
        if provider is not None and provider.certificate_topic:
            # A real server's topic is its push certificate's: devices must register under it.
            self.state = replace(self.state, topic=provider.certificate_topic)
        # The CA first, so that its key type is the one asked for (it is kept from then on).
        self.ca = CertificateAuthority.load_or_create(config.data_dir, key_type=config.key_type, now=self.now())
        self.profile_signer = ProfileSigner.load_or_create(
            config.data_dir, self.ca, now=self.now(), key_type=config.key_type) if config.sign_profiles else None
        sign = None if self.profile_signer is None else self.profile_signer.sign
        self.tls = tls or server_tls_files(config.data_dir, config.server_names, now=self.now(),
                                           key_type=config.key_type)
        self.storage = storage or open_storage(config)
        self.apns = APNsSimulation(clock=clock, **config.apns)
        # The in-process simulation stays for in-memory worlds and GET /metrics; pushes take one path or the other.
        self.pusher: Pusher = self.apns
        if provider is not None:
            self.pusher = APNsProviderClient(reactor if reactor is not None else clock, provider, clock=clock)
        self.waker = Waker(self.storage, self.pusher, clock=clock)
        self.admin = AdminModel(self.storage, self.waker, clock=clock, now=self.now,
                                ca_certificate=self.ca.certificate, data_dir=config.data_dir,
                                in_memory=config.in_memory, database=config.database, sign_profile=sign,
                                server_url=lambda: self.url)
        self.admin.setServiceParent(self)
        self.retention: Retention | None = None
        if config.retain is not None:
            self.retention = Retention(self.storage, clock=clock, retain=config.retain)
            self.retention.setServiceParent(self)
        self.tokens = TokenRegistry(self.admin.docs, default_secret=self.state.enroll_token)
        policy = None if config.open_enrollment else new_identity_policy(self.tokens, clock.seconds)
        self.declarative = DeclarativeService(self.admin.declarations, self.admin.ddm_status, self.storage,
                                              now=clock.seconds, assets=self.admin.assets)
        self.service = MDMService(self.storage, topic=self.state.topic, now=clock.seconds,
                                  schedule_wake=self.waker.schedule,
                                  on_device_changed=self.admin.labels.on_device_changed, new_identity_policy=policy,
                                  open_payload=self.admin.command_seal.open, declarative=self.declarative)
        self.verifier = IdentityVerifier([self.ca.certificate], now=self.now,
                                         allow_sha1=config.allow_sha1_signatures)
        self.admin_password = config.admin_password or self.state.admin_password
        self.url = config.server_url()  # what devices are told; the real port once listening on port 0
        client_certs = ClientCertSource(config.client_cert_header, frozenset(config.trusted_proxies))
        self.device_endpoint = DeviceEndpoint(self.service, self.verifier, client_certs)
        self.scep = self._scep() if config.enrollment_identity == "scep" else None
        self.enroll = EnrollResource(
            self.ca, topic=self.state.topic, server_url=self.url, now=self.now,
            tokens=self.tokens, admin=(config.admin_user, self.admin_password), scep=self.scep,
            open_enrollment=config.open_enrollment, sign=sign, sign_message=config.sign_message,
        )
        self.root = self._root()
        self.site = make_site(self.root, body_limit=config.body_limit, reactor=clock, limits=config.client_limits)
        self.http = self.site
        if config.lean_device_http:
            self.http = DeviceChannelFactory(self.site, self.device_endpoint, clock=clock,
                                             body_limit=config.body_limit)
        self._ports: list[PortService] = [] if reactor is None else self._port_services(reactor)
        for port in self._ports:
            port.setServiceParent(self)
        self.coordination: Coordination | None = None
        if config.database is not None:  # other server processes may share it: lead or follow, stay coherent
            from .workers.coordination import Coordination

            self.coordination = Coordination(self, config.database, clock=clock, reactor=reactor)
            self.coordination.setServiceParent(self)

    def _scep(self) -> ScepService:
        ra = RegistrationAuthority.load_or_create(self.config.data_dir, self.ca, now=self.now())
        store = MemoryChallengeStore() if self.config.in_memory else SQLiteChallengeStore(
            self.config.data_dir / SCEP_DATABASE_FILE)
        return ScepService(self.ca, ra, store, now=self.clock.seconds, allow_sha1=self.config.allow_sha1_signatures,
                           token_refusal=self._token_refusal)

    def _token_refusal(self, token_id: str) -> str | None:
        """Why an enrollment token may no longer issue an identity (SCEP, after its profile was fetched)."""
        verdict, _ = self.tokens.still_valid(token_id, self.clock.seconds())
        return None if verdict is Verdict.VALID else verdict.value

    def _root(self) -> resource.Resource:
        mdm = resource.Resource()
        mdm.putChild(b"checkin", self.device_endpoint)
        mdm.putChild(b"connect", self.device_endpoint)
        mdm.putChild(b"enroll", self.enroll)
        ddm = resource.Resource()
        ddm.putChild(b"asset", AssetResource(self.declarative, self.device_endpoint))
        mdm.putChild(b"ddm", ddm)
        root = resource.Resource()
        root.putChild(b"mdm", mdm)
        if self.scep is not None:
            root.putChild(b"scep", ScepResource(self.scep))
        counters = ServerCounters(self.service.metrics, self.storage, self.waker.outcomes, self.apns.stats)
        root.putChild(b"metrics", MetricsResource(counters))  # unauthenticated counts only: keep it on loopback
        sign = None if self.profile_signer is None else self.profile_signer.sign
        v1 = AdminAPI(self.storage, self.waker, clock=self.clock, sign_profile=sign,
                      seal=self.admin.command_seal.seal)
        # One table: /api/v1 (devices, queues, pushes), /api/v2 settings/users and labels/policies.
        throttle = LoginThrottle(self.clock)  # one count per address for the API, the console and the portal
        authorise = basic_auth(self.config.admin_user, self.admin_password, throttle=throttle)
        routes = [*v1.routes, *self.admin.routes(), *EnrollmentTokensAPI(self.tokens, clock=self.clock).routes]
        routes.append(openapi_route())  # public: the API's shape, no data (see docs/api.md)
        root.putChild(b"api", JsonAPI(routes, authorise=authorise))
        root.putChild(b"user", user_portal(self.admin, self.clock, throttle))
        root.putChild(b"admin", admin_console(self.admin, self.waker, self.tokens, self.clock, throttle,
                                              credentials=(self.config.admin_user, self.admin_password)))
        return root

    def _port_services(self, reactor: Reactor) -> list[PortService]:
        tls = self.tls
        options = server_options(tls.certificate_pem, tls.private_key_pem, tls.ca_certificate_pem,
                                 client_ca=self.ca.certificate)
        config, whole = self.config, self.config.lean_device_http
        fd = config.inherited_fds.get("devices")
        if fd is None:
            def listen() -> Any:
                return listen_endpoint(reactor, config.listen, self.http, options, whole_writes=whole)
        else:
            def listen() -> Any:
                return adopt_port(reactor, fd, config.listen, self.http, options, whole_writes=whole)
        ports = [PortService("devices", listen, on_open=self._device_port_open)]
        if config.push_link and config.apns_provider is None:  # else fleets attach to the external APNs
            factory = PushLinkFactory(self.apns)
            ports.append(PortService("push link",
                                     lambda: listen_endpoint(reactor, config.push_link, factory, options)))
        return ports

    def inherited_push_link(self, reactor: Reactor, fd: int, description: str) -> PortService:
        """The push link on a socket the supervisor bound: a worker serves it while it leads (it alone pushes)."""
        tls = self.tls
        options = server_options(tls.certificate_pem, tls.private_key_pem, tls.ca_certificate_pem)
        factory = PushLinkFactory(self.apns)
        return PortService("push link", lambda: adopt_port(reactor, fd, description, factory, options))

    def _device_port_open(self, port: IListeningPort) -> None:
        if not self.config.public_url:
            # With port 0 the system picks the port: profiles must carry the real one.
            scheme = "https" if self.config.listen.startswith("ssl:") else "http"
            self.url = f"{scheme}://{self.config.server_names[0]}:{port.getHost().port}"
            self.enroll.server_url = self.url

    @property
    def ports(self) -> list[IListeningPort]:
        """The open ports, the device port first."""
        return [service.port for service in self._ports if service.port is not None]

    @defer.inlineCallbacks
    def listening(self):
        """Fires with the ports once the started server listens on all of them, or with the first failure."""
        ports = []
        for service in self._ports:
            ports.append((yield service.opened()))
        return ports

    def stopService(self) -> defer.Deferred[None]:
        """Close the ports, stop the admin model, then close the storage."""
        stopped = defer.maybeDeferred(super().stopService) if self.running else self.admin.stopService()
        if isinstance(self.pusher, APNsProviderClient):
            self.pusher.close()
        return stopped.addCallback(lambda _: self._close_stores())

    def _close_stores(self) -> None:
        if self.coordination is not None:
            self.coordination.link.close()  # idempotent: a running server's was closed with its service
        self.storage.close()
        if self.scep is not None:
            self.scep.challenges.close()


@dataclass(frozen=True)
class ServerCounters:
    """The server's counters as GET /metrics reads them (its MetricsSource)."""

    requests: ServerMetrics
    storage: Storage
    outcomes: Mapping[str, int]
    deliveries: Any

    def request_metrics(self) -> ServerMetrics:
        return self.requests

    def command_counts(self) -> Mapping[CommandStatus, int]:
        return self.storage.command_counts()

    def device_counts(self) -> Mapping[EnrollmentState, int]:
        return self.storage.device_counts()

    def push_outcomes(self) -> Mapping[str, int]:
        return self.outcomes

    def push_deliveries(self) -> Any:
        return self.deliveries
