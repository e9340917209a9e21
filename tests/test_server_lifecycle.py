"""The server as a Twisted MultiService: the admin model's timers run on the clock passed in between
startService and stopService; given a reactor, its ports open at start, report the real port, and close."""

from __future__ import annotations

import pytest_twisted

from device_sim.clock import HeapClock
from mdm_server.admin_model import KEY_PURGE_INTERVAL
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.retention import DEFAULT_RETAIN, sweep_interval

START = 1_780_000_000.0


def _in_memory(tmp_path) -> tuple[MDMServer, HeapClock]:
    clock = HeapClock(START)
    return MDMServer(ServerConfig(data_dir=tmp_path / "data", in_memory=True), clock=clock), clock


def test_nothing_runs_before_start_and_nothing_is_left_after_stop(tmp_path):
    server, clock = _in_memory(tmp_path)
    assert clock.getDelayedCalls() == [] and not server.running
    server.startService()
    assert server.running and server.admin.running
    # The key purge and the retention sweep are TimerServices on the server's clock: they ran at start and
    # are due again in an hour (the sweep: a tenth of the 7-day window, capped at an hour).
    sweep = sweep_interval(DEFAULT_RETAIN)
    assert sorted(call.getTime() for call in clock.getDelayedCalls()) == sorted([START + KEY_PURGE_INTERVAL,
                                                                                 START + sweep])
    clock.advance(KEY_PURGE_INTERVAL)
    assert sorted(call.getTime() for call in clock.getDelayedCalls()) == sorted([START + 2 * KEY_PURGE_INTERVAL,
                                                                                 START + 2 * sweep])
    stopped = server.stopService()
    assert stopped.called and not server.running
    assert [call for call in clock.getDelayedCalls() if call.active()] == []
    assert server.ports == []


def test_a_server_stopped_without_starting_still_closes(tmp_path):
    server, clock = _in_memory(tmp_path)
    assert server.stopService().called
    assert clock.getDelayedCalls() == []


@pytest_twisted.inlineCallbacks
def test_ports_open_at_start_with_the_real_port_in_the_url_and_close_at_stop(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really listens

    config = ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1",
                          push_link="tcp:0:interface=127.0.0.1", server_names=("127.0.0.1",), in_memory=True)
    server = MDMServer(config, clock=reactor, reactor=reactor)
    assert server.ports == []
    server.startService()
    ports = yield server.listening()
    assert len(ports) == 2 and server.ports == ports
    assert server.url == f"https://127.0.0.1:{ports[0].getHost().port}"
    assert server.enroll.server_url == server.url  # enrollment profiles carry the port devices can reach
    yield server.stopService()
    assert server.ports == []


@pytest_twisted.inlineCallbacks
def test_a_port_that_cannot_open_fails_listening_and_the_server_still_stops(tmp_path):
    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError

    first = MDMServer(ServerConfig(data_dir=tmp_path / "a", listen="ssl:0:interface=127.0.0.1", push_link=None,
                                   server_names=("127.0.0.1",), in_memory=True), clock=reactor, reactor=reactor)
    first.startService()
    (port,) = yield first.listening()
    taken = f"ssl:{port.getHost().port}:interface=127.0.0.1"
    second = MDMServer(ServerConfig(data_dir=tmp_path / "b", listen=taken, push_link=None,
                                    server_names=("127.0.0.1",), in_memory=True), clock=reactor, reactor=reactor)
    second.startService()
    try:
        yield second.listening()
        raise AssertionError("the second server listened on a port already taken")
    except CannotListenError:
        pass
    assert second.ports == []
    yield second.stopService()
    yield first.stopService()
