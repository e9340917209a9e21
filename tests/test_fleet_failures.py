"""A fleet counts a device whose enrollment check-ins never succeed as failed, and by its latest enrollment.

The server is a twisted.web resource answering every PUT with the status it is told, reached through the real
MemoryTransport (with its TLS trust check) on a heap clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from twisted.web.resource import Resource
from twisted.web.server import Site

from device_sim.behaviour import Behaviour
from device_sim.clock import HeapClock
from device_sim.fleet import Fleet, FleetSpec
from device_sim.report import fleet_json
from device_sim.stats import FleetObserver
from device_sim.transport import MemoryTransport
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import build_enrollment

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOPIC = "com.apple.mgmt.External.0c4f3f0e-9a7e-4f43-8d2b-3b0a4f1e2d3c"


class CheckInServer(Resource):
    """Answers every check-in with `status` and an empty body (what Authenticate and TokenUpdate get)."""

    isLeaf = True

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.requests = 0

    def render_PUT(self, request) -> bytes:
        self.requests += 1
        request.setResponseCode(self.status)
        return b""


class Pushes:
    def __init__(self) -> None:
        self.registered: list[bytes] = []

    def register(self, token, topic, on_push) -> None:
        self.registered.append(token)


@pytest.fixture(scope="module")
def authority():
    return CertificateAuthority.create("fleet failures CA", now=NOW)


def _fleet(authority, server: CheckInServer):
    clock = HeapClock(NOW.timestamp())
    chain = (authority.issue_server_certificate(["mdm.example.com"], NOW)[0], authority.certificate)
    observer = FleetObserver()
    spec = FleetSpec(1, seed=3, behaviour=Behaviour(retry_delays=(5.0, 30.0)))
    fleet = Fleet(spec, clock=clock, transport=MemoryTransport(Site(server), clock, chain), push=Pushes(),
                  observer=observer)
    return fleet, clock, observer


def _profile(authority) -> bytes:
    return build_enrollment(authority, server_url="https://mdm.example.com", topic=TOPIC, now=NOW).profile


def test_authenticate_that_never_succeeds_counts_the_device_as_failed(authority):
    server = CheckInServer(500)
    fleet, clock, observer = _fleet(authority, server)
    runner = fleet.add(0)
    runner.install_enrollment(_profile(authority))
    clock.advance(60)
    assert server.requests == 3  # the first try and two retries
    assert (observer.enrolled, observer.enrollment_failures) == (0, 1)
    report = fleet_json(fleet.runners, observer)
    assert (report["enrolled"], report["enrollment_failures"]) == (0, 1)
    [device] = report["devices"]
    assert device["phase"] == "failed" and device["profiles"] == []
    assert device["enrollment_failure"] == "Authenticate gave up after HTTP 500"
    assert report["messages"]["Authenticate"]["errors"] == 3


def test_a_device_counts_by_its_latest_enrollment(authority):
    server = CheckInServer(503)
    fleet, clock, observer = _fleet(authority, server)
    runner = fleet.add(0)
    runner.install_enrollment(_profile(authority))
    clock.advance(60)
    assert (observer.enrolled, observer.enrollment_failures) == (0, 1)
    server.status = 200  # the server is back: the user installs a new enrollment profile
    runner.install_enrollment(_profile(authority))
    clock.advance(1)
    assert (observer.enrolled, observer.enrollment_failures) == (1, 0)
    [device] = fleet_json(fleet.runners, observer)["devices"]
    assert device["phase"] == "enrolled" and device["enrollment_failure"] is None
    assert server.requests == 5  # three failed Authenticates, then Authenticate and TokenUpdate
