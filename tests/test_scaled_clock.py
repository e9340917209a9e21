"""The scaled clock: virtual time runs `factor` times faster than the reactor it wraps."""

from __future__ import annotations

from twisted.internet.task import Clock

from mdm_world.scaled_clock import ScaledClock


def test_virtual_time_and_calls_are_scaled():
    reactor = Clock()
    reactor.advance(100)
    clock = ScaledClock(reactor, 60.0, start=1_000_000.0)
    fired = []
    call = clock.callLater(600, fired.append, "ten virtual minutes")
    assert call.getTime() == 1_000_600.0
    reactor.advance(9.9)
    assert fired == [] and abs(clock.seconds() - 1_000_594.0) < 1e-6
    reactor.advance(0.1)
    assert fired == ["ten virtual minutes"] and not call.active()
    later = clock.callLater(60, fired.append, "moved")
    later.reset(120)
    reactor.advance(1.5)
    assert fired == ["ten virtual minutes"]
    reactor.advance(0.5)
    assert fired[-1] == "moved"
