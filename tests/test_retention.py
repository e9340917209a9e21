"""Retention on a fake clock: finished commands leave after the window, in batches with the reactor free between
them, on either backend; pending ones stay whatever their age. `mdmsim serve --retain` and the data-dir lock.
"""

from __future__ import annotations

import pytest
from server_kit import BACKENDS, SignedDevice, make_server
from storage_conformance import T0, command, deliver, enroll

from device_sim.clock import HeapClock
from mdm_server.data_lock import DataDirLock, DataDirLockedError
from mdm_server.retention import DEFAULT_RETAIN, Retention, sweep_interval
from mdm_server.storage import CommandStatus, MemoryStorage
from mdmsim.cli import build_parser, main

UDID = "00008110-000A1B2C3D4E5F61"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_server_removes_finished_commands_after_the_window(tmp_path, backend):
    server = make_server(tmp_path, backend=backend, retain=60.0)
    device = SignedDevice(server, UDID)
    device.enroll()
    now = server.clock.seconds()
    for uuid in ("a", "b"):
        server.storage.enqueue([UDID], command(uuid), now=now)
    assert device.session() == ["ProfileList", "ProfileList"]
    server.storage.enqueue([UDID], command("later"), now=now)  # queued, never answered: it stays
    server.clock.advance(59)
    assert len(server.storage.list_commands(UDID)) == 3
    server.clock.advance(sweep_interval(60.0) + 1)
    assert [c.command_uuid for c in server.storage.list_commands(UDID)] == ["later"]
    assert server.retention.removed == 2
    server.clock.advance(3600)
    assert server.storage.get_command(UDID, "later").status is CommandStatus.QUEUED
    server.stopService()


def test_a_sweep_runs_in_batches_each_on_its_own_reactor_turn():
    clock, storage = HeapClock(T0), MemoryStorage()
    enroll(storage, "d1")
    for n in range(12):
        storage.enqueue(["d1"], command(f"c{n}"), now=T0)
        deliver(storage, "d1", now=T0)
    batches = []

    class Counting:
        def purge_finished(self, *, before, limit):
            batches.append(storage.purge_finished(before=before, limit=limit))
            return batches[-1]

    retention = Retention(Counting(), clock=clock, retain=100.0, batch=5)
    clock.advance(101)
    retention.startService()  # TimerService sweeps once at start: the first batch, synchronously
    assert batches == [5] and [call.getTime() for call in clock.getDelayedCalls()] == [T0 + 101, T0 + 111]
    clock.advance(0)  # the next batches, each from its own call of the clock
    assert batches == [5, 5, 2] and retention.removed == 12 and storage.list_commands("d1") == ()
    retention.stopService()
    assert not [call for call in clock.getDelayedCalls() if call.active()]


def test_retention_is_positive_and_the_sweep_keeps_to_a_tenth_of_the_window():
    with pytest.raises(ValueError):
        Retention(MemoryStorage(), clock=HeapClock(T0), retain=0)
    assert (sweep_interval(60), sweep_interval(DEFAULT_RETAIN), sweep_interval(2)) == (6, 3600, 1)


def test_serve_takes_retain_as_a_duration_and_zero_as_forever():
    parse = build_parser().parse_args
    assert parse(["serve"]).retain == DEFAULT_RETAIN == 7 * 86400
    assert parse(["serve", "--retain", "12h"]).retain == 12 * 3600
    assert parse(["serve", "--retain", "0"]).retain is None


def test_a_second_server_on_a_locked_data_dir_refuses_with_exit_2(tmp_path, capsys):
    data = tmp_path / "data"
    with DataDirLock(data):
        assert main(["serve", "--data-dir", str(data)]) == 2
        error = capsys.readouterr().err
        assert "in use by another mdmsim serve" in error and "--data-dir" in error
        with pytest.raises(DataDirLockedError, match=r"pid \d+"):
            DataDirLock(data).acquire()
    with DataDirLock(data):  # released: the next one may take it
        pass
