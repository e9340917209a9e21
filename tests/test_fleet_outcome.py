"""`mdmsim fleet`'s verdict from what happened, on a heap clock: a wrong enrollment URL is a counted failure
(exit 1), a refused Authenticate still being retried at the end is a failed enrollment, a device whose requests
fail after it enrolled is stalled, and the push link's time down is measured and it reconnects."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import UTC, datetime

import pytest
from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Site

from device_sim.behaviour import Behaviour
from device_sim.clock import HeapClock
from device_sim.fleet import Fleet, FleetSpec
from device_sim.fleet_ramp import EnrollmentRamp
from device_sim.push_link_client import PushLinkClient
from device_sim.stats import FleetObserver
from device_sim.transport import MemoryTransport
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import build_enrollment
from mdm_world.world import World
from mdmsim.exit_codes import Exit
from mdmsim.fleet_outcome import fleet_document, fleet_verdict
from mdmsim.load.meter import MeteredTransport

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOPIC = "com.apple.mgmt.External.0c4f3f0e-9a7e-4f43-8d2b-3b0a4f1e2d3c"


def _document(fleet, observer, errors, ramp=None, link=None) -> dict:
    return fleet_document(fleet, observer, errors, ramp, link)


def test_a_wrong_enrollment_url_is_counted_and_fails_the_run():
    world = World(FleetSpec(3, seed=2))
    ramp = EnrollmentRamp(world.fleet, world.observer, clock=world.clock, fetch_profile=lambda runner: defer.fail(
        RuntimeError("enrollment download answered HTTP 404: no such token")))
    ramp.start(0.0)
    world.run_for(10.0)
    document = _document(world.fleet, world.observer, Counter(), ramp)
    assert document["enrollment_failures"] == 3  # it said 0: download failures were kept aside
    assert document["failures"]["enrollment"] == {"http_404": 3}
    verdict = fleet_verdict(document, 3, max_error_rate=0.0)
    assert verdict.code is Exit.FAILED and "3 of 3 device(s) failed to enroll" in verdict.reasons


class CheckIns(Resource):
    isLeaf = True

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def render_PUT(self, request) -> bytes:
        request.setResponseCode(self.status)
        return b""


@pytest.fixture(scope="module")
def authority():
    return CertificateAuthority.create("fleet outcome CA", now=NOW)


def _fleet(authority, server: CheckIns, count: int = 1):
    clock = HeapClock(NOW.timestamp())
    chain = (authority.issue_server_certificate(["mdm.example.com"], NOW)[0], authority.certificate)
    observer, errors = FleetObserver(), Counter()
    transport = MeteredTransport(MemoryTransport(Site(server), clock, chain), errors)
    fleet = Fleet(FleetSpec(count, seed=3, behaviour=Behaviour()), clock=clock, transport=transport,
                  push=PushLinkClient(), observer=observer)
    profile = build_enrollment(authority, server_url="https://mdm.example.com", topic=TOPIC, now=NOW).profile
    return fleet, clock, observer, errors, profile


def test_a_refused_authenticate_still_retrying_at_the_end_is_a_failed_enrollment(authority):
    fleet, clock, observer, errors, profile = _fleet(authority, CheckIns(403))
    fleet.add(0).install_enrollment(profile)
    clock.advance(60)  # the device retries for minutes (5 s, 30 s, 120 s, 600 s): the run ends before
    assert observer.enrollment_failures == 0  # what the fleet said: "failed 0"
    document = _document(fleet, observer, errors)
    assert document["enrollment_failures"] == 1
    assert document["failures"]["enrollment"] == {"http_403": 1}
    assert document["failures"]["requests"] == {"http_403": 3}
    assert fleet_verdict(document, 1, max_error_rate=1.0).code is Exit.FAILED


def test_devices_whose_requests_fail_after_enrolling_are_stalled(authority):
    server = CheckIns(200)
    fleet, clock, observer, errors, profile = _fleet(authority, server, count=2)
    for index in range(2):
        fleet.add(index).install_enrollment(profile)
    clock.advance(5)
    assert observer.enrolled == 2
    server.status = 503  # the server restarted badly: every device's next session fails
    for runner in fleet.runners:
        runner.on_push(b"", {})
    clock.advance(1)
    document = _document(fleet, observer, errors)
    assert document["failures"]["stalled_devices"] == 2
    verdict = fleet_verdict(document, 2, max_error_rate=0.0)
    assert verdict.code is Exit.FAILED and any("requests failed" in r for r in verdict.reasons)


class Connector:
    def __init__(self) -> None:
        self.attempts = 0

    def connect(self) -> None:
        self.attempts += 1


def test_the_push_link_counts_its_time_down_and_reconnects_with_backoff():
    clock = HeapClock(1000.0)
    client, connector = PushLinkClient(clock, reconnect=True), Connector()
    clock.advance(3)
    client.clientConnectionFailed(connector, _Reason("Connection refused"))
    clock.advance(1)
    assert connector.attempts == 1  # first retry after 1 s
    link = client.buildProtocol(None)
    link.makeConnection(StringTransport())
    assert client.health().connected and client.health().down_seconds == 4.0
    clock.advance(10)
    link.connectionLost(None)
    client.clientConnectionLost(connector, _Reason("server restarted"))
    clock.advance(6)
    health = client.health()
    assert (health.connected, health.disconnects, health.connect_failures) == (False, 1, 1)
    assert health.down_seconds == 10.0 and connector.attempts == 2  # 2 s backoff, then waiting for the next
    document_link = health.to_json()
    assert document_link["down_seconds"] == 10.0


class _Reason:
    def __init__(self, text: str) -> None:
        self.text = text

    def getErrorMessage(self) -> str:
        return self.text


class StoppingReactor:
    """Runs what was scheduled for its start, then Ctrl-C arrives (through the handler the fleet installed)."""

    def __init__(self, handlers: dict) -> None:
        self.handlers, self.at_start, self.stopped = handlers, [], False

    def callWhenRunning(self, function, *args) -> None:
        self.at_start.append((function, args))

    def callFromThread(self, function) -> None:
        function()

    def stop(self) -> None:
        self.stopped = True

    def run(self) -> None:
        for function, args in self.at_start:
            function(*args)
        self.handlers[signal.SIGINT](signal.SIGINT, None)


def test_ctrl_c_stops_the_fleet_and_is_reported_as_interrupted(monkeypatch):
    from mdmsim import cli_fleet

    handlers: dict = {}
    monkeypatch.setattr(signal, "signal", lambda signum, handler: handlers.__setitem__(signum, handler))
    reactor = StoppingReactor(handlers)
    assert cli_fleet._run_until_stopped(reactor) is True and reactor.stopped
    document = {"messages": {"Idle": {"count": 4, "errors": 0}}, "enrolled": 2, "enrollment_failures": 0,
                "downloads": 2, "download_failures": 0,
                "failures": {"requests": {}, "enrollment": {}, "push_link": None, "unfinished": 0}}
    assert fleet_verdict(document, 2, max_error_rate=0.0, interrupted=True).code is Exit.INTERRUPTED


def test_failed_state_saves_fail_the_run_and_say_so():
    from mdmsim.exit_codes import Verdict
    from mdmsim.fleet_outcome import with_failed_saves

    ok = Verdict(Exit.OK, ())
    assert with_failed_saves(ok, 0, "/state") is ok
    failed = with_failed_saves(ok, 3, "/state")
    assert failed.code is Exit.FAILED and "3 save(s) to --state-dir /state failed" in failed.reasons[0]
    interrupted = with_failed_saves(Verdict(Exit.INTERRUPTED, ("interrupted",)), 1, "/state")
    assert interrupted.code is Exit.INTERRUPTED and len(interrupted.reasons) == 2
