"""Fleets attach to the simulated APNs over the push link: a push reaches the device; after a gateway restart
the fleet reconnects with backoff (fake clock), re-registers, gets the newest held push, and counts the outage
and the pushes it missed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest_twisted
from apns_kit import NOW, TOPIC, WatchedClock, connect, gateway, until
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from apns_sim.device_link import PushLinkFactory
from apns_sim.gateway import Gateway
from apns_sim.provider_api import Notification
from device_sim.push_link_client import PushLinkClient
from mdm_protocol.push_link import Attach, Delivery, Missed, Unregister, decode_link, encode_link
from mdmsim.load.progress import failure_lines
from mdmsim.load.reports import failure_rows
from mdmsim.load.thresholds import flat_metrics

TOKEN = b"\x0a" * 32


def _body(magic: str) -> bytes:
    return json.dumps({"mdm": magic}).encode()


@pytest_twisted.inlineCallbacks
def test_fleet_reconnects_after_a_gateway_restart_and_gets_the_newest_held_push(tmp_path):
    from twisted.internet import reactor

    apns, gateway_clock = gateway(tmp_path, push_link=True)
    yield apns.listen(reactor)
    provider_port, link_port = apns.provider_port, apns.link_port
    push = apns.pki.issue_push_certificate(TOPIC, now=datetime.fromtimestamp(NOW, UTC))
    ca = apns.pki.tls.ca_certificate_pem
    fleet_clock, inbox = WatchedClock(), []
    fleet = PushLinkClient(fleet_clock, reconnect=True)
    fleet.register(TOKEN, TOPIC, lambda token, payload, sent_at=None: inbox.append(payload["mdm"]))
    connector = reactor.connectTCP("127.0.0.1", link_port, fleet)
    provider = None
    try:
        yield until(reactor, lambda: TOKEN in apns.gateway._online)
        provider = yield connect(reactor, provider_port, ca, push)
        yield provider.request("/3/device/" + TOKEN.hex(), {}, _body("first"))
        yield until(reactor, lambda: inbox == ["first"])

        retry = fleet_clock.next_call()
        provider.transport.loseConnection()
        yield apns.stop()
        yield retry  # the fleet saw the link go and scheduled a reconnect
        apns, _ = gateway(tmp_path, clock=gateway_clock, listen=f"ssl:{provider_port}:interface=127.0.0.1",
                          push_link=f"tcp:{link_port}:interface=127.0.0.1")
        yield apns.listen(reactor)
        provider = yield connect(reactor, provider_port, ca, push)
        expiration = {"apns-expiration": str(int(NOW) + 3600)}
        for magic in ("second", "third"):
            reply = yield provider.request("/3/device/" + TOKEN.hex(), expiration, _body(magic))
            assert reply.status == 200  # held: the device is not attached yet
        fleet_clock.advance(30.0)  # the backoff's ceiling: the reconnect has fired
        yield until(reactor, lambda: inbox == ["first", "third"] and fleet.missed == 1)
    finally:
        fleet.stop_reconnecting()
        connector.disconnect()
        if provider is not None:
            provider.transport.loseConnection()
        yield apns.stop()
    health = fleet.health()
    assert (health.connects, health.down_seconds) == (2, 30.0)  # one outage of 30 s (fake clock)
    # What the outage cost, as `mdmsim fleet` and `mdmsim load` report it (JSON; CSV and HTML rows).
    assert health.missed_while_down == 1
    report = {"failures": {"push_link": health.to_json(), "missed_pushes": 0}}
    assert report["failures"]["push_link"]["missed_while_down"] == 1
    assert ("push_link.missed_while_down", 1) in failure_rows(report)
    assert ("push_link.down_seconds", 30.0) in failure_rows(report)
    assert any("missed while unreachable 1" in line for line in failure_lines(report))
    assert flat_metrics(report)["failures.push_link.missed_while_down"] == 1.0


def test_unregister_and_missed_round_trip_on_the_wire():
    for message in (Unregister((TOKEN,)), Missed(((TOKEN, 3),))):
        assert decode_link(encode_link(message)[:-1]) == message


def test_gateway_end_reports_missed_pushes_when_a_device_attaches():
    apns_clock = Clock()
    apns_clock.advance(NOW)
    core = Gateway(apns_clock)
    core.register(TOKEN, TOPIC)
    for n in range(3):  # the device is away: the first two are replaced by the third
        core.accept(Notification(TOKEN, TOPIC, {"mdm": str(n)}, "id", int(NOW) + 60, 10), NOW)
    link = PushLinkFactory(core).buildProtocol(None)
    transport = StringTransport()
    link.makeConnection(transport)
    link.dataReceived(encode_link(Attach(TOPIC, (TOKEN,))))
    lines = [decode_link(line) for line in transport.value().splitlines()]
    assert lines == [Delivery(TOKEN, {"mdm": "2"}, NOW), Missed(((TOKEN, 2),))]


def test_a_token_unregistered_while_the_link_is_down_is_unregistered_once_it_is_up():
    fleet = PushLinkClient()
    fleet.register(TOKEN, TOPIC, lambda *_: None)
    fleet.unregister(TOKEN)  # a CheckOut while the gateway is away
    link = fleet.buildProtocol(None)
    transport = StringTransport()
    link.makeConnection(transport)
    assert [decode_link(line) for line in transport.value().splitlines()] == [Unregister((TOKEN,))]


def test_the_live_line_of_a_load_run_shows_the_pushes_missed_while_the_link_was_down():
    from mdmsim.load.progress import LiveProgress
    from mdmsim.load.summary import live_failures

    link = {"connected": True, "down_seconds": 12.0, "missed_while_down": 3}
    status = {"elapsed": 5.0, "duration": 60, "enrolled": 1, "devices": 1, "requests": 2, "errors": 0,
              "enroll_failed": 0, "rollout_devices": 0, "server_cpu": None, **live_failures([{"push_link": link}])}
    assert "push link up (12 s down, 3 missed)" in LiveProgress.line(status, None)
