"""The simulated APNs core on a fake clock: one pending push per token (the newest), held for an unreachable
device until apns-expiration (0: now or never), faults, missed-push counts, and a restart that forgets nothing."""

from __future__ import annotations

import json

from twisted.internet.task import Clock

from apns_sim.faults import FaultPlan, parse_burst
from apns_sim.gateway import Gateway
from apns_sim.provider_api import Environment, ProviderIdentity, ProviderRequest, Reason
from apns_sim.registry import REGISTRY_FILE, TokenRegistry

TOPIC = "com.apple.mgmt.External.test"
TOKEN = b"\x01" * 32
IDENTITY = ProviderIdentity(TOPIC, Environment.PRODUCTION, 0.0, 4e9, True)
START = 1_700_000_000.0


def _clock() -> Clock:
    clock = Clock()
    clock.advance(START)
    return clock


def _push(gateway: Gateway, magic: str, *, expiration: int = 0, token: bytes = TOKEN):
    headers = {"apns-expiration": str(expiration)}
    body = json.dumps({"mdm": magic}).encode()
    return gateway.answer(ProviderRequest("POST", "/3/device/" + token.hex(), headers, body, IDENTITY))


def _online(gateway: Gateway, token: bytes = TOKEN) -> list:
    got: list = []
    gateway.register(token, TOPIC)
    gateway.attach(token, lambda t, payload, sent_at: got.append((payload["mdm"], sent_at)))
    return got


def test_an_online_device_gets_each_push_at_once_with_its_send_time():
    clock = _clock()
    gateway = Gateway(clock)
    got = _online(gateway)
    assert _push(gateway, "a").status == 200
    clock.advance(5)
    assert _push(gateway, "b").status == 200
    assert got == [("a", START), ("b", START + 5)]


def test_pushes_during_the_delivery_delay_coalesce_into_the_last():
    clock = _clock()
    gateway = Gateway(clock, faults=FaultPlan(delay=2.0))
    got = _online(gateway)
    for magic in "abc":
        _push(gateway, magic)
        clock.advance(0.5)
    assert got == []
    clock.advance(0.5)
    assert got == [("c", START + 1.0)] and gateway.stats.coalesced == 2


def test_an_unreachable_device_gets_only_the_newest_push_when_it_returns_and_learns_what_it_missed():
    clock = _clock()
    gateway = Gateway(clock)
    got = _online(gateway)
    gateway.detach(TOKEN)
    for magic in "abc":
        _push(gateway, magic, expiration=int(START) + 3600)
    missed = gateway.attach(TOKEN, lambda t, payload, sent_at: got.append((payload["mdm"], sent_at)))
    clock.advance(0)
    assert (got, missed, gateway.stats.held) == ([("c", START)], 2, 3)


def test_expiration_zero_is_now_or_never_and_a_held_push_expires():
    clock = _clock()
    gateway = Gateway(clock)
    got = _online(gateway)
    gateway.detach(TOKEN)
    _push(gateway, "never", expiration=0)
    _push(gateway, "later", expiration=int(START) + 60)
    clock.advance(61)
    missed = gateway.attach(TOKEN, lambda t, payload, sent_at: got.append(payload["mdm"]))
    clock.advance(0)
    assert got == [] and gateway.stats.expired == 2
    assert missed == 2  # "never" was discarded at once; "later" is found expired when the device attaches


def test_dropped_and_offline_faults_answer_200_but_never_deliver():
    clock = _clock()
    dropping = Gateway(clock, faults=FaultPlan(drop_rate=1.0))
    got = _online(dropping)
    assert _push(dropping, "x").status == 200 and got == [] and dropping.stats.dropped == 1
    offline = Gateway(clock, faults=FaultPlan(offline_fraction=1.0))
    got = _online(offline)
    assert _push(offline, "x", expiration=int(START) + 60).status == 200
    clock.advance(1)
    assert got == [] and offline.registry.pending[TOKEN].payload == {"mdm": "x"}


def test_bursts_refuse_within_their_window_only():
    clock = _clock()
    gateway = Gateway(clock, faults=FaultPlan(bursts=[parse_burst("429@10+5", now=START)]))
    _online(gateway)
    answers = []
    for _ in range(4):
        answers.append(_push(gateway, "x").status)
        clock.advance(5)
    assert answers == [200, 200, 429, 200]


def test_a_certificate_that_expires_is_refused_from_then_on():
    clock = _clock()
    gateway = Gateway(clock)
    _online(gateway)
    identity = ProviderIdentity(TOPIC, Environment.PRODUCTION, START - 10, START + 60, True)
    request = ProviderRequest("POST", "/3/device/" + TOKEN.hex(), {}, b'{"mdm":"x"}', identity)
    before = gateway.answer(request).status
    clock.advance(60)
    after = gateway.answer(request)
    assert (before, after.status, after.reason) == (200, 403, Reason.BAD_CERTIFICATE)


def test_a_restart_keeps_registrations_unregistrations_and_held_pushes(tmp_path):
    clock = _clock()
    gateway = Gateway(clock, TokenRegistry(tmp_path / REGISTRY_FILE))
    gone = b"\x02" * 32
    _online(gateway)
    gateway.register(gone, TOPIC)
    clock.advance(1)
    gateway.unregister(gone)
    gateway.detach(TOKEN)
    _push(gateway, "held", expiration=int(START) + 3600)
    gateway.stop()

    again = Gateway(clock, TokenRegistry(tmp_path / REGISTRY_FILE))
    assert set(again.registry.tokens) == {TOKEN, gone}
    refused = _push(again, "x", token=gone)
    assert (refused.status, refused.timestamp_ms) == (410, int((START + 1) * 1000))
    got = []
    again.attach(TOKEN, lambda t, payload, sent_at: got.append((payload["mdm"], sent_at)))
    clock.advance(0)
    assert got == [("held", START + 1)]


def test_registry_changes_reach_the_file_on_the_flush_timer_not_per_push(tmp_path):
    clock = _clock()
    gateway = Gateway(clock, TokenRegistry(tmp_path / REGISTRY_FILE), flush_interval=0.5)
    _online(gateway)
    for n in range(100):
        _push(gateway, str(n))  # delivered at once: nothing to write
    assert gateway.registry.dirty  # the registration is not yet written...
    clock.advance(0.5)
    assert not gateway.registry.dirty  # ...and now it is, in one batch
    assert set(TokenRegistry(tmp_path / REGISTRY_FILE).tokens) == {TOKEN}


def test_a_token_registered_again_is_valid_again():
    gateway = Gateway(_clock())
    _online(gateway)
    gateway.unregister(TOKEN)
    assert _push(gateway, "x").status == 410
    _online(gateway)
    assert _push(gateway, "x").status == 200
