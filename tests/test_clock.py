"""The heap clock: IReactorTime semantics (order, cancel, reset, delay) matching Twisted's own Clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock

from device_sim.clock import HeapClock


def test_provides_ireactortime():
    assert IReactorTime.providedBy(HeapClock())


def test_fires_in_time_then_insertion_order():
    clock, fired = HeapClock(), []
    clock.callLater(2, fired.append, "b")
    clock.callLater(1, fired.append, "a")
    clock.callLater(2, fired.append, "c")
    assert clock.advance(1.5) == 1 and fired == ["a"]
    clock.advance(0.5)
    assert fired == ["a", "b", "c"] and clock.seconds() == 2


def test_cancel_reset_and_delay():
    clock, fired = HeapClock(), []
    cancelled = clock.callLater(1, fired.append, "x")
    moved = clock.callLater(1, fired.append, "moved")
    delayed = clock.callLater(1, fired.append, "delayed")
    cancelled.cancel()
    moved.reset(5)
    delayed.delay(2)
    clock.advance(2.9)
    assert fired == [] and clock.pending() == 2
    clock.advance(0.1)
    assert fired == ["delayed"]
    clock.advance(2)
    assert fired == ["delayed", "moved"]
    with pytest.raises(AlreadyCancelled):
        cancelled.cancel()
    with pytest.raises(AlreadyCalled):
        moved.reset(1)
    assert clock.getDelayedCalls() == [] and clock.pending() == 0


def test_calls_scheduled_while_running_fire_in_the_same_advance():
    clock, fired = HeapClock(), []
    clock.callLater(1, lambda: clock.callLater(1, fired.append, "chained"))
    clock.advance(2)
    assert fired == ["chained"]


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=40), st.integers(0, 60))
def test_agrees_with_twisted_clock(schedule, horizon):
    ours, theirs = HeapClock(), Clock()
    log_ours, log_theirs = [], []
    for index, (delay, cancel) in enumerate(schedule):
        a = ours.callLater(delay, log_ours.append, index)
        b = theirs.callLater(delay, log_theirs.append, index)
        if cancel:
            a.cancel()
            b.cancel()
    ours.advance(horizon)
    theirs.advance(horizon)
    assert log_ours == log_theirs
    assert len(ours.getDelayedCalls()) == len(theirs.getDelayedCalls())
