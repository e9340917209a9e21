"""`mdmsim serve --workers 2` on one PostgreSQL, end to end over real TLS: a fleet rollout (InstallProfile to every
device), the leading worker killed with SIGKILL mid-rollout: none lost (every device acknowledges the command)
and none doubled (each device runs the rollout once; one command per device, acknowledged once).

Waits poll the reactor clock against deadlines; nothing sleeps.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import pytest_twisted
from kits.postgres import SERVER
from twisted.internet import defer

from device_sim import effects as fx
from device_sim.behaviour import Behaviour
from device_sim.enroll_fetch import fetch_enrollment
from device_sim.fleet import Fleet, FleetSpec
from device_sim.https_transport import HTTPSTransport
from device_sim.push_link_client import PushLinkClient
from device_sim.stats import FleetObserver
from mdm_protocol.payloads import configuration_profile, root_certificate_payload
from mdm_protocol.profile import encode_profile

DEVICES = 24
DEADLINE = 120.0  # seconds for any one wait below; a run takes 15 to 30 s on a loaded 2-core machine
REPO = Path(__file__).resolve().parents[1]
ROLLOUT = "com.example.rollout"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Runs(FleetObserver):
    """Counts, per device, every InstallProfile it ran and how."""

    def __init__(self) -> None:
        super().__init__()
        self.installs: Counter[int] = Counter()

    def effect(self, runner, effect) -> None:
        super().effect(runner, effect)
        if isinstance(effect, fx.CommandHandled) and effect.request_type == "InstallProfile":
            self.installs[runner.machine.facts.index] += 1


class Supervised:
    """The `serve --workers 2` process; its output lines (the supervisor's and the workers') kept in order."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log,
                                        stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.decode(errors="replace"))

    def seen(self, pattern: str) -> list[re.Match]:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return [m for line in self.lines if (m := re.search(pattern, line))]

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        return self.process.returncode


def until(reactor, condition, what: str, deadline: float = DEADLINE) -> defer.Deferred:
    """Fires once `condition()` holds, checked every 50 ms on the reactor's clock; fails after `deadline`."""
    done: defer.Deferred = defer.Deferred()
    give_up = reactor.seconds() + deadline

    def check() -> None:
        if condition():
            done.callback(None)
        elif reactor.seconds() > give_up:
            done.errback(AssertionError(f"timed out waiting for {what}"))
        else:
            reactor.callLater(0.05, check)

    check()
    return done


def admin_post(port: int, data_dir: Path, path: str, value) -> dict:
    state = json.loads((data_dir / "server.json").read_text())
    auth = base64.b64encode(f"admin:{state['admin_password']}".encode()).decode()
    context = ssl.create_default_context(cafile=str(data_dir / "ca.pem"))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    try:
        connection.request("POST", path, json.dumps(value), {"Authorization": f"Basic {auth}",
                                                             "Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 201, body[:500]
        return json.loads(body)
    finally:
        connection.close()


@pytest.fixture
def database():
    url, schema = SERVER.ensure(), SERVER.new_schema()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    return url, schema


@pytest_twisted.inlineCallbacks
def test_a_rollout_survives_its_leading_worker_killed_with_sigkill(tmp_path, database):
    from twisted.internet import reactor  # pytest-twisted's: this test really uses sockets and processes

    url, schema = database
    data_dir, port, push_port = tmp_path / "data", free_port(), free_port()
    command = [sys.executable, "-u", "-m", "mdmsim.cli", "serve", "--data-dir", str(data_dir), "--workers", "2",
               "--database", f"{url}?options=-csearch_path%3D{schema}",
               "--listen", f"ssl:{port}:interface=127.0.0.1", "--push-link", f"tcp:{push_port}:interface=127.0.0.1",
               "--public-url", f"https://127.0.0.1:{port}", "--apns-jitter", "2s"]  # fmt: skip
    server = Supervised(command, tmp_path / "serve.log")
    push = PushLinkClient(reactor, reconnect=True)
    transport = HTTPSTransport(reactor)
    runs = Runs()
    # Quick retries: a device whose connection died with the worker tries again a second later, as iOS would soon.
    spec = FleetSpec(DEVICES, seed=18, behaviour=Behaviour(retry_delays=(1.0, 2.0, 5.0, 10.0)))
    fleet = Fleet(spec, clock=reactor, transport=transport, push=push, observer=runs)
    link = None
    try:
        yield until(reactor, lambda: len(server.seen(r"worker \d \(pid \d+\) serving")) == 2
                    and server.seen(r"leads"), "two workers serving, one leading")
        link = reactor.connectTCP("127.0.0.1", push_port, push)
        token = json.loads((data_dir / "server.json").read_text())["enroll_token"]
        for index in range(DEVICES):
            runner = fleet.add(index)
            profile = yield fetch_enrollment(reactor, f"https://127.0.0.1:{port}/mdm/enroll?token={token}")
            runner.install_enrollment(profile)
        yield until(reactor, lambda: runs.enrolled == DEVICES, "every device enrolled")

        ca_der = (data_dir / "ca.pem").read_bytes()
        root = root_certificate_payload(ssl.PEM_cert_to_DER_cert(ca_der.decode()), identifier=f"{ROLLOUT}.root")
        profile = encode_profile(configuration_profile([root], identifier=ROLLOUT))
        ids = [r.machine.facts.device_id for r in fleet.runners]
        answer = admin_post(port, data_dir, "/api/v1/commands", {
            "deviceIds": ids, "push": True,
            "command": {"RequestType": "InstallProfile", "Payload": {"$data": base64.b64encode(profile).decode()}}})
        assert len(answer["results"]) == DEVICES
        # Mid-rollout: some devices have run it, most wait for pushes the leader holds (APNs jitter of 2 s).
        yield until(reactor, lambda: sum(runs.installs.values()) >= 2, "the rollout under way")
        (leader,) = [int(m.group(1)) for m in server.seen(r"worker \d \(pid (\d+)\) leads")]
        os.kill(leader, signal.SIGKILL)
        installed_at_kill = sum(runs.installs.values())
        assert installed_at_kill < DEVICES, "the rollout finished before the kill: the test would prove nothing"

        yield until(reactor, lambda: runs.commands[("InstallProfile", "Acknowledged")] >= DEVICES,
                    "every device to acknowledge the rollout")
        yield until(reactor, lambda: len(server.seen(r"leads")) >= 2 and server.seen(r"restarting it"),
                    "a new leader and the killed worker restarted")
    finally:
        if link is not None:
            push.stop_reconnecting()
            link.disconnect()
        transport.close()
        code = server.stop()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]

    # 0 lost, 0 doubled: each device ran the rollout once, and the server holds one command per device, acknowledged.
    assert runs.installs == Counter(dict.fromkeys(range(DEVICES), 1))
    assert all(ROLLOUT in runner.machine.profiles for runner in fleet.runners)
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"SET search_path TO {schema}")
        rows = db.execute("SELECT device_id, count(*), min(status), max(status) FROM commands "
                          "WHERE request_type = 'InstallProfile' GROUP BY device_id").fetchall()
    assert len(rows) == DEVICES and all(row[1:] == (1, "Acknowledged", "Acknowledged") for row in rows)
    (restart,) = server.seen(r"worker \d \(pid (\d+)\) was killed by SIGKILL; restarting it.* \(restart 1 ")
    assert int(restart.group(1)) == leader
    print(f"installed before the kill: {installed_at_kill} of {DEVICES}")
