"""`mdmsim fleet --state-dir`: a second run resumes the devices the first enrolled (SCEP identity, push token,
profiles, keychain) over real TLS against our server, sends no Authenticate or TokenUpdate, and answers the
commands queued meanwhile; broken or foreign state files are refused by name. Also `--checkin-interval`.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import rsa
from kits.profile_kit import profile_bytes
from test_fleet_e2e_tls import Until
from twisted.internet import defer, task

from device_sim.enroll_fetch import fetch_enrollment
from device_sim.fleet import Fleet, FleetSpec, parse_mix
from device_sim.fleet_ramp import EnrollmentRamp
from device_sim.fleet_state import FleetStateDir, FleetStateError, StateKeeper
from device_sim.https_transport import HTTPSTransport
from device_sim.machine import DeviceMachine
from device_sim.memory_http import MemoryHTTP
from device_sim.push_link_client import PushLinkClient
from device_sim.scep_agent import RSAKeyPool, ScepAgent, WebScepHttp
from mdm_protocol.payloads import pkcs12_payload
from mdm_server.app import MDMServer, ServerConfig
from mdm_world.admin_client import AdminClient
from mdmsim.cli import build_parser

DEVICES = 4
SEED = 7


class FleetRun:
    """One `mdmsim fleet` run's assembly (as cli_fleet builds it) against `server`, keeping `state`."""

    def __init__(self, reactor, server: MDMServer, state: FleetStateDir, *, keys=None, push: bool = True,
                 checkin_interval: float | None = None) -> None:
        from device_sim.checkin_loop import CheckinLoop

        self.reactor, self.state = reactor, state
        self.saved = state.load(DEVICES)
        self.keeper = StateKeeper(state)
        self.observer = Until()
        self.observer.listeners = (self.keeper.saw,) + (
            (CheckinLoop(reactor, checkin_interval, seed=SEED).saw,) if checkin_interval else ())
        self.push = PushLinkClient()
        self.link = reactor.connectTCP("127.0.0.1", server.ports[1].getHost().port, self.push) if push else None
        self.transport, self.http = HTTPSTransport(reactor), WebScepHttp(reactor)
        self.fleet = Fleet(FleetSpec(DEVICES, seed=SEED, os_mix=parse_mix("17.5:1,26.1:1")), clock=reactor,
                           transport=self.transport, push=self.push, observer=self.observer,
                           scep=ScepAgent(self.http, reactor, keys))
        url = f"{server.url}/mdm/enroll?token={server.state.enroll_token}"
        self.ramp = EnrollmentRamp(self.fleet, self.observer, clock=reactor, saved=self.saved,
                                   fetch_profile=lambda runner: fetch_enrollment(reactor, url))

    def start(self) -> None:
        self.ramp.start(0.0)

    def wait(self, condition) -> defer.Deferred:
        return self.observer.wait(condition).addTimeout(60, self.reactor)

    def stop(self) -> None:
        self.keeper.flush(self.fleet.runners)
        if self.link is not None:
            self.link.disconnect()
        self.transport.close()


@pytest.fixture
def server(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's reactor: these tests really use sockets

    config = ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1",
                          push_link="tcp:0:interface=127.0.0.1", server_names=("127.0.0.1",),
                          enrollment_identity="scep")
    server = MDMServer(config, clock=reactor, reactor=reactor)
    server.startService()
    pytest_twisted.blockon(server.listening())
    yield server
    pytest_twisted.blockon(server.stopService())


def queue_device_information(server: MDMServer, ids: list[str]) -> None:
    admin = AdminClient(MemoryHTTP(server.site), "admin", server.admin_password)
    admin.post("/api/v1/commands", {"deviceIds": ids, "command": {"RequestType": "DeviceInformation",
                                                                  "Queries": ["UDID", "DeviceName"]}})


def until(reactor, condition, timeout: float = 30.0) -> defer.Deferred:
    @defer.inlineCallbacks
    def wait():
        waited = 0.0
        while not condition():
            assert waited < timeout, "condition not reached"
            yield task.deferLater(reactor, 0.05, lambda: None)
            waited += 0.05
    return wait()


def keys(count: int) -> RSAKeyPool:
    return RSAKeyPool(rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(count))


@pytest_twisted.inlineCallbacks
def test_a_second_run_resumes_without_enrolling_and_answers_queued_commands(server, tmp_path):
    from twisted.internet import reactor

    state = FleetStateDir.open(tmp_path / "state", SEED)
    first = FleetRun(reactor, server, state, keys=keys(DEVICES))
    first.start()
    yield first.wait(lambda o: o.enrolled == DEVICES)
    ids = [runner.machine.facts.device_id for runner in first.fleet.runners]
    identities = {runner.machine.facts.index: runner.machine.profiles.keychain.identity(
        runner.machine.enrollment.identity_uuid).certificate for runner in first.fleet.runners}
    first.stop()
    assert first.keeper.saved == DEVICES and not first.keeper.write_errors
    files = sorted((tmp_path / "state" / "devices").iterdir())
    assert len(files) == DEVICES and all(path.stat().st_mode & 0o777 == 0o600 for path in files)
    assert not list((tmp_path / "state" / "devices").glob(".*"))  # no temporary file left behind
    # The fleet is gone (its link closed): the server queues a command and APNs holds the push for each device.
    yield until(reactor, lambda: not server.apns.gateway._online)
    queue_device_information(server, ids)
    checkins_before = server.scep.outcomes["issued"]

    second = FleetRun(reactor, server, FleetStateDir.open(tmp_path / "state", SEED), keys=RSAKeyPool())
    assert sorted(second.saved) == list(range(DEVICES))
    second.start()
    yield second.wait(lambda o: o.commands[("DeviceInformation", "Acknowledged")] == DEVICES
                      and o.sessions == DEVICES)
    second.stop()
    # Nothing enrolled again: no profile download, no SCEP, no Authenticate, no TokenUpdate; the same identities.
    assert set(second.observer.messages) == {"Idle", "DeviceInformation"}
    assert server.scep.outcomes["issued"] == checkins_before == DEVICES
    assert second.observer.enrolled == DEVICES and not second.ramp.failures
    for runner in second.fleet.runners:
        machine = runner.machine
        assert machine.profiles.keychain.identity(machine.enrollment.identity_uuid).certificate == \
            identities[machine.facts.index]
        assert machine.profiles.get("com.mdmsim.enrollment") is not None


@pytest_twisted.inlineCallbacks
def test_resumed_devices_poll_with_the_checkin_interval_when_nothing_pushes(server, tmp_path):
    from twisted.internet import reactor

    state = FleetStateDir.open(tmp_path / "state", SEED)
    first = FleetRun(reactor, server, state, keys=keys(DEVICES))
    first.start()
    yield first.wait(lambda o: o.enrolled == DEVICES)
    first.stop()
    queue_device_information(server, [runner.machine.facts.device_id for runner in first.fleet.runners])
    second = FleetRun(reactor, server, state, push=False, checkin_interval=0.3)
    second.start()
    yield second.wait(lambda o: o.commands[("DeviceInformation", "Acknowledged")] == DEVICES)
    yield second.wait(lambda o: o.sessions >= 2 * DEVICES)  # and they go on polling
    second.stop()
    # No push link at all: every session was a poll, and none of them enrolled again.
    assert "Authenticate" not in second.observer.messages and "TokenUpdate" not in second.observer.messages


# Broken and foreign state ----------------------------------------------------------------------------------------


def enrolled_machine() -> DeviceMachine:
    """Device 1 of the fleet, enrolled in memory, then given a profile with a root and an S/MIME identity."""
    from test_profile_tracking import T0, enrollment_profile, identity, install, root_profile

    machine = DeviceMachine(FleetSpec(DEVICES, seed=SEED).facts(1), seed=SEED)
    machine.install_enrollment(enrollment_profile(), T0)
    machine.response(1, 200, b"", T0)
    machine.response(2, 200, b"", T0)
    data = root_profile("com.example.roots", "root-a")
    assert install(machine, data)["Status"] == "Acknowledged"
    mail = profile_bytes(pkcs12_payload(identity("alice"), identifier="com.example.mail.id", password="secret"),
                         identifier="com.example.mail")
    assert install(machine, mail)["Status"] == "Acknowledged"
    assert len(machine.profiles.keychain.identities()) == 2
    return machine


def saved_dir(tmp_path: Path, machine: DeviceMachine | None = None) -> FleetStateDir:
    """A state directory with one enrolled device, saved as a run would."""
    state = FleetStateDir.open(tmp_path / "state", SEED)
    state.save(machine or enrolled_machine())
    return state


def test_a_snapshot_reads_back_to_the_same_device(tmp_path):
    machine = enrolled_machine()
    state = saved_dir(tmp_path, machine)
    (device,) = state.load(DEVICES).values()
    assert device.facts == machine.facts and device.enrollment == machine.enrollment
    assert (device.push_token, device.push_magic) == (machine.push_token, machine.push_magic)
    assert device.profiles.profile_list_items() == machine.profiles.profile_list_items()
    assert device.profiles.certificate_list_items() == machine.profiles.certificate_list_items()
    assert [i.private_key.private_numbers() for i in device.profiles.keychain.identities()] == \
        [i.private_key.private_numbers() for i in machine.profiles.keychain.identities()]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda path: path.write_bytes(b"\x00garbage"), "is not a plist"),
    (lambda path: path.write_bytes(plistlib.dumps(["a", "list"])), "not a dictionary plist"),
    (lambda path: _edit(path, Format="someone else"), "is not an mdmsim fleet device file"),
    (lambda path: _edit(path, Version=99), "format version 99"),
    (lambda path: _edit(path, UDID="00008030-000000000000002E"), "saved by another fleet"),
    (lambda path: _edit(path, Identities=[]), "not in the saved keychain"),
    (lambda path: _edit(path, Certificates=[{"DER": b"junk", "Profile": "x", "TrustedRoot": True}]),
     "not a saved device"),
    (lambda path: _edit(path, PushToken=b"short"), "push token"),
])
def test_a_corrupt_or_foreign_device_file_is_an_error_naming_it(tmp_path, damage, reason):
    state = saved_dir(tmp_path)
    (path,) = state.devices.iterdir()
    damage(path)
    with pytest.raises(FleetStateError, match=reason) as caught:
        state.load(DEVICES)
    assert caught.value.path == path and str(path) in str(caught.value)


def _edit(path: Path, **changes) -> None:
    path.write_bytes(plistlib.dumps({**plistlib.loads(path.read_bytes()), **changes}))


def test_another_fleets_directory_is_refused(tmp_path):
    saved_dir(tmp_path)
    with pytest.raises(FleetStateError, match="--seed 7, not 8"):
        FleetStateDir.open(tmp_path / "state", 8)
    (tmp_path / "state" / "fleet.plist").unlink()
    with pytest.raises(FleetStateError, match="fleet.plist: is missing beside saved devices"):
        FleetStateDir.open(tmp_path / "state", SEED)


def test_the_fleet_command_reports_a_broken_state_file_without_a_traceback(tmp_path, capsys):
    state = saved_dir(tmp_path)
    (path,) = state.devices.iterdir()
    path.write_bytes(b"not a plist at all")
    args = build_parser().parse_args(["fleet", "--enroll-url", "https://127.0.0.1:1/mdm/enroll", "--state-dir",
                                      str(state.root), "--seed", str(SEED), "--checkin-interval", "5m"])
    assert args.checkin_interval == 300.0
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert f"mdmsim fleet: state file {path}: is not a plist" in err.replace("\n", "") and "Traceback" not in err


def test_the_key_pool_is_made_once_and_kept_in_the_state_dir(tmp_path):
    from mdmsim.cli_fleet import _open_state

    args = build_parser().parse_args(["fleet", "--enroll-url", "https://127.0.0.1:1/", "--state-dir",
                                      str(tmp_path / "state"), "--key-pool", "2"])
    state, saved, keys = _open_state(args)
    assert saved == {} and len(keys) == 2 and keys.made == 0
    assert state.key_pool.stat().st_mode & 0o777 == 0o600
    _, _, again = _open_state(args)
    assert len(again) == 2 and {k.private_numbers().d for k in again._keys[2048]} == \
        {k.private_numbers().d for k in keys._keys[2048]}  # read back, not made anew
    state.key_pool.write_text("not a key")
    with pytest.raises(FleetStateError, match="key-pool.pem: is not a PEM file of RSA keys"):
        _open_state(args)
