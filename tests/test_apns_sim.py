"""The APNs simulation: provider answers, coalescing, delay, drops and offline store-and-forward."""

from __future__ import annotations

from twisted.internet.task import Clock

from mdm_server.push import APNsSimulation, PushRequest

TOPIC = "com.apple.mgmt.External.5e6c0c3e-2f07-4d8e-9b5a-0c1b2d3e4f50"
TOKEN = bytes(range(32))


def _sim(**kwargs):
    clock = Clock()
    sim = APNsSimulation(clock=clock, **kwargs)
    sim.register(TOKEN, TOPIC)
    inbox: list[dict] = []
    sim.attach(TOKEN, lambda token, payload: inbox.append(payload))
    return clock, sim, inbox


def test_push_is_delivered_after_the_configured_delay():
    clock, sim, inbox = _sim(delay=0.5)
    assert sim.push(PushRequest(TOKEN, "magic-1", TOPIC)).status == 200
    clock.advance(0.4)
    assert inbox == []
    clock.advance(0.1)
    assert inbox == [{"mdm": "magic-1"}]


def test_pending_pushes_coalesce_to_the_last_one():
    clock, sim, inbox = _sim(delay=1.0)
    sim.push(PushRequest(TOKEN, "first", TOPIC))
    sim.push(PushRequest(TOKEN, "second", TOPIC))
    clock.advance(1.0)
    assert inbox == [{"mdm": "second"}]
    assert sim.stats.coalesced == 1 and sim.stats.delivered == 1


def test_offline_device_gets_only_the_last_push_when_it_returns():
    clock, sim, inbox = _sim()
    sim.detach(TOKEN)
    sim.push(PushRequest(TOKEN, "a", TOPIC))
    sim.push(PushRequest(TOKEN, "b", TOPIC))
    clock.advance(10)
    assert inbox == []
    sim.attach(TOKEN, lambda token, payload: inbox.append(payload))
    clock.advance(0)
    assert inbox == [{"mdm": "b"}]


def test_provider_errors_match_apns():
    _, sim, _ = _sim()
    assert sim.push(PushRequest(b"\x01" * 32, "m", TOPIC)).reason == "BadDeviceToken"
    assert sim.push(PushRequest(TOKEN, "m", "com.apple.mgmt.other")).reason == "DeviceTokenNotForTopic"
    sim.invalidate(TOKEN)
    response = sim.push(PushRequest(TOKEN, "m", TOPIC))
    assert response.status == 410 and response.token_invalid


def test_drop_rate_is_seeded_and_roughly_honoured():
    def delivered(seed):
        clock, sim, inbox = _sim(drop_rate=0.2, seed=seed)
        for _ in range(1000):
            sim.push(PushRequest(TOKEN, "m", TOPIC))
            clock.advance(0)
        return len(inbox)

    assert delivered(7) == delivered(7)
    assert 750 <= delivered(7) <= 850
