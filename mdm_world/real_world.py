"""The world on real sockets: the server listening on loopback ports, the fleet over HTTPS with the push
link, time sped up by a scaled clock. Scenarios run here with `--real-network`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from device_sim.fleet import Fleet, FleetSpec
from device_sim.https_transport import HTTPSTransport
from device_sim.memory_http import MemoryHTTP
from device_sim.push_link_client import PushLinkClient
from device_sim.stats import FleetObserver
from mdm_protocol.clocks import Reactor
from mdm_server.app import MDMServer

from .scaled_clock import ScaledClock
from .world import EPOCH, BehaviourFor, EnrollingWorld, WorldOptions

LOOPBACK = "127.0.0.1"


class RealWorld(EnrollingWorld):
    def __init__(self, spec: FleetSpec, options: WorldOptions, reactor: Reactor, *, factor: float,
                 behaviour_for: BehaviourFor | None = None) -> None:
        self.options, self.reactor = options, reactor
        self.clock = ScaledClock(reactor, factor, start=EPOCH)
        config = options.server_config(listen=f"ssl:0:interface={LOOPBACK}", push_link=f"tcp:0:interface={LOOPBACK}",
                                       server_names=(LOOPBACK,))
        self.server = MDMServer(config, clock=self.clock, tls=options.server_tls(config, EPOCH), reactor=reactor)
        self.admin_http = MemoryHTTP(self.server.site)  # the admin side stays in process; devices use sockets
        self.observer = FleetObserver()
        self.push = PushLinkClient()
        self.transport = HTTPSTransport(reactor)
        self.fleet = Fleet(spec, clock=self.clock, transport=self.transport, push=self.push, observer=self.observer,
                           behaviour_for=behaviour_for)
        self._link: Any = None

    @defer.inlineCallbacks
    def start(self):
        self.server.startService()
        ports = yield self.server.listening()
        self._link = self.reactor.connectTCP(LOOPBACK, ports[1].getHost().port, self.push)

    @defer.inlineCallbacks
    def stop(self):
        if self._link is not None:
            self._link.disconnect()
        self.transport.close()
        yield self.server.stopService()
