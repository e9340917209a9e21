"""Our server pushing through the simulated APNs with its HTTP/2 provider client, over real TLS on loopback:
200 recorded as accepted, 410 stops pushing the token until the next TokenUpdate, 429 and 503 retried with
backoff (on a fake clock), a gateway restart survived by reconnecting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest_twisted
from apns_kit import NOW, TOPIC, WatchedClock, gateway, until
from server_kit import SignedDevice, make_server
from twisted.internet import defer

from apns_sim.provider_api import Reason
from mdm_server.push.apns_client import APNsProviderClient, ProviderSettings
from mdm_server.push.interface import PushRequest
from mdm_server.storage.interface import PushOutcome
from mdm_server.wakeups import SENT

UDID = "00008110-000A1B2C3D4E5F60"


def _provider(tmp_path, reactor, gateway_server, clock, **options) -> tuple:
    """Our server (in memory) whose pushes go through the gateway; one enrolled device registered there."""
    server = make_server(tmp_path)
    topic = server.state.topic
    push = gateway_server.pki.issue_push_certificate(topic, now=datetime.fromtimestamp(NOW, UTC))
    settings = ProviderSettings(f"https://localhost:{gateway_server.provider_port}", push.certificate_pem,
                                push.private_key_pem, gateway_server.pki.tls.ca_certificate_pem, **options)
    client = APNsProviderClient(reactor, settings, clock=clock)
    server.waker.pusher = client  # what ServerConfig.apns_provider builds, but on the test's clock
    device = SignedDevice(server, UDID)
    device.enroll()
    inbox: list = []
    gateway_server.gateway.register(device.token, topic)
    gateway_server.gateway.attach(device.token, lambda token, payload, sent_at: inbox.append(payload))
    return server, client, device, inbox


@defer.inlineCallbacks
def _push(server):
    (outcome,) = server.waker.push_now([UDID]).values()
    assert outcome == SENT
    yield defer.gatherResults(list(server.waker.in_flight))
    return server.storage.get_push(UDID)


@pytest_twisted.inlineCallbacks
def test_accepted_push_reaches_the_device_and_410_stops_pushing_until_token_update(tmp_path):
    from twisted.internet import reactor

    apns, _ = gateway(tmp_path / "apns")
    yield apns.listen(reactor)
    server, client, device, inbox = _provider(tmp_path, reactor, apns, WatchedClock())
    try:
        first = yield _push(server)
        apns.gateway.unregister(device.token)
        gone = yield _push(server)
        skipped = server.waker.push_now([UDID])[UDID]
        asked = sum(apns.gateway.stats.refused.values()) + apns.gateway.stats.accepted
        assert device.token_update().status == 200  # a new TokenUpdate: the server may push again
        apns.gateway.register(device.token, server.state.topic)
        again = yield _push(server)
    finally:
        client.close()
        yield apns.stop()
    assert (first.outcome, inbox[0]) == (PushOutcome.ACCEPTED, {"mdm": device.push_magic})
    assert (gone.outcome, gone.reason, gone.token_invalid) == (PushOutcome.REJECTED, "Unregistered", True)
    assert skipped.startswith("push token invalid") and asked == 2  # the provider was not asked again
    assert again.outcome == PushOutcome.ACCEPTED and client.connections == 1


@pytest_twisted.inlineCallbacks
def test_429_is_retried_with_backoff_and_then_accepted(tmp_path):
    from twisted.internet import reactor

    apns, gateway_clock = gateway(tmp_path / "apns")
    yield apns.listen(reactor)
    clock = WatchedClock()
    server, client, _, inbox = _provider(tmp_path, reactor, apns, clock)
    apns.gateway.faults.start_burst(Reason.TOO_MANY_REQUESTS, gateway_clock.seconds(), 10.0)
    try:
        retry = clock.next_call()
        (outcome,) = server.waker.push_now([UDID]).values()
        call = yield retry  # the 429 arrived and a retry is scheduled
        assert 0.125 <= call.getTime() - clock.seconds() <= 0.25  # the first backoff, jittered
        gateway_clock.advance(10.0)  # the burst is over
        clock.advance(0.25)
        yield defer.gatherResults(list(server.waker.in_flight))
    finally:
        client.close()
        yield apns.stop()
    assert server.storage.get_push(UDID).outcome == PushOutcome.ACCEPTED and len(inbox) == 1
    assert (client.retries, apns.gateway.stats.refused["TooManyRequests"]) == (1, 1)


@pytest_twisted.inlineCallbacks
def test_503_is_retried_until_the_attempts_run_out_then_recorded_as_failed(tmp_path):
    from twisted.internet import reactor

    apns, gateway_clock = gateway(tmp_path / "apns")
    yield apns.listen(reactor)
    clock = WatchedClock()
    server, client, _, inbox = _provider(tmp_path, reactor, apns, clock, max_attempts=3)
    apns.gateway.faults.start_burst(Reason.SERVICE_UNAVAILABLE, gateway_clock.seconds(), 3600.0)
    try:
        retry = clock.next_call()
        server.waker.push_now([UDID])
        for _ in range(2):
            yield retry
            retry = clock.next_call()
            clock.advance(30.0)
        yield defer.gatherResults(list(server.waker.in_flight))
    finally:
        client.close()
        yield apns.stop()
    record = server.storage.get_push(UDID)
    assert (record.outcome, record.reason, record.token_invalid) == (PushOutcome.FAILED, "ServiceUnavailable", False)
    assert apns.gateway.stats.refused["ServiceUnavailable"] == 3 and inbox == []


@pytest_twisted.inlineCallbacks
def test_the_client_reconnects_after_the_gateway_restarts(tmp_path):
    from twisted.internet import reactor

    apns, gateway_clock = gateway(tmp_path / "apns")
    yield apns.listen(reactor)
    port = apns.provider_port
    server, client, device, _ = _provider(tmp_path, reactor, apns, WatchedClock())
    try:
        first = yield _push(server)
        yield apns.stop()  # GOAWAY; the registry is saved
        yield until(reactor, lambda: client._link is None)
        apns, _ = gateway(tmp_path / "apns", clock=gateway_clock, listen=f"ssl:{port}:interface=127.0.0.1")
        yield apns.listen(reactor)
        inbox: list = []
        apns.gateway.attach(device.token, lambda token, payload, sent_at: inbox.append(payload))
        second = yield _push(server)
    finally:
        client.close()
        yield apns.stop()
    assert (first.outcome, second.outcome, client.connections) == (PushOutcome.ACCEPTED, PushOutcome.ACCEPTED, 2)
    assert inbox == [{"mdm": device.push_magic}]  # the restarted gateway still knew the token


@pytest_twisted.inlineCallbacks
def test_a_burst_larger_than_the_flow_control_window_waits_for_window_updates(tmp_path):
    from twisted.internet import reactor

    apns, _ = gateway(tmp_path / "apns")
    yield apns.listen(reactor)
    token = b"\x33" * 32
    push = apns.pki.issue_push_certificate(TOPIC, now=datetime.fromtimestamp(NOW, UTC))
    settings = ProviderSettings(f"https://localhost:{apns.provider_port}", push.certificate_pem,
                                push.private_key_pem, apns.pki.tls.ca_certificate_pem)
    client = APNsProviderClient(reactor, settings, clock=WatchedClock())
    apns.gateway.register(token, TOPIC)
    magic = "m" * 1000  # 100 pushes of ~1 KB: half again the 64 KB connection window
    try:
        answers = yield defer.gatherResults([client.push(PushRequest(token, magic, TOPIC)) for _ in range(100)])
    finally:
        client.close()
        yield apns.stop()
    assert [a.status for a in answers] == [200] * 100 and client.retries == 0


@pytest_twisted.inlineCallbacks
def test_pushes_queued_while_connecting_respect_the_gateways_stream_limit(tmp_path):
    from twisted.internet import reactor

    apns, _ = gateway(tmp_path / "apns", max_streams=10)
    yield apns.listen(reactor)
    token = b"\x34" * 32
    push = apns.pki.issue_push_certificate(TOPIC, now=datetime.fromtimestamp(NOW, UTC))
    settings = ProviderSettings(f"https://localhost:{apns.provider_port}", push.certificate_pem,
                                push.private_key_pem, apns.pki.tls.ca_certificate_pem)
    client = APNsProviderClient(reactor, settings, clock=WatchedClock())
    apns.gateway.register(token, TOPIC)
    try:  # all 150 are queued before the connection exists; h2 assumes 100 streams until SETTINGS arrive
        answers = yield defer.gatherResults([client.push(PushRequest(token, "m", TOPIC)) for _ in range(150)])
    finally:
        client.close()
        yield apns.stop()
    assert [a.status for a in answers] == [200] * 150 and (client.retries, client.connections) == (0, 1)
