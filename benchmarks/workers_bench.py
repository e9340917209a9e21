"""Issue 18's "done when": `mdmsim serve --workers N` on one PostgreSQL, a rollout (InstallProfile) to every device
of a fleet over real TLS, the leading worker killed with SIGKILL mid-rollout; counts lost and duplicated.

Run: `.venv/bin/python benchmarks/workers_bench.py --database postgresql://... [--devices 10000] [--workers 2]`.
0 lost: every device acknowledged; 0 duplicated: each ran the profile once and the server holds one command per
device, acknowledged. Exit 0 only then. The fleet runs in this process (one core); the server in its own.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
from twisted.internet import defer, task

from device_sim import effects as fx
from device_sim.behaviour import Behaviour
from device_sim.enroll_fetch import fetch_enrollment
from device_sim.fleet import Fleet, FleetSpec
from device_sim.https_transport import HTTPSTransport
from device_sim.push_link_client import PushLinkClient
from device_sim.stats import FleetObserver
from mdm_protocol.payloads import configuration_profile, root_certificate_payload
from mdm_protocol.profile import encode_profile

ROLLOUT = "com.example.rollout"
_SCHEMAS = itertools.count()


class Runs(FleetObserver):
    def __init__(self) -> None:
        super().__init__()
        self.installs: Counter[int] = Counter()

    def effect(self, runner, effect) -> None:
        super().effect(runner, effect)
        if isinstance(effect, fx.CommandHandled) and effect.request_type == "InstallProfile":
            self.installs[runner.machine.facts.index] += 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def until(reactor, condition, deadline: float) -> defer.Deferred:
    """Fires once `condition()` holds (checked every 0.1 s on the reactor clock); fails after `deadline` s."""
    give_up = reactor.seconds() + deadline

    def check():
        if condition():
            return True
        if reactor.seconds() > give_up:
            raise TimeoutError("deadline passed")
        return task.deferLater(reactor, 0.1, check)

    return defer.maybeDeferred(check)


def start_server(args, data_dir: Path, database: str, port: int, push_port: int):
    command = [sys.executable, "-m", "mdmsim.cli", "serve", "--data-dir", str(data_dir), "--database", database,
               "--workers", str(args.workers), "--listen", f"ssl:{port}:interface=127.0.0.1:backlog=4096",
               "--push-link", f"tcp:{push_port}:interface=127.0.0.1", "--public-url", f"https://127.0.0.1:{port}",
               "--apns-jitter", args.apns_jitter, "--open-enrollment"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return process, lines


@defer.inlineCallbacks
def rollout(reactor, args, figures: dict):
    url = args.database
    schema = f"workers_bench_{os.getpid()}_{next(_SCHEMAS)}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    database = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    tmp = Path(tempfile.mkdtemp(prefix="workers-bench-"))
    port, push_port = free_port(), free_port()
    process, lines = start_server(args, tmp / "data", database, port, push_port)
    seen = lambda pattern: [m for line in list(lines) if (m := re.search(pattern, line))]  # noqa: E731
    try:
        yield until(reactor, lambda: len(seen(r"serving")) == args.workers and seen("leads"), 180)
        push = PushLinkClient(reactor, reconnect=True)
        reactor.connectTCP("127.0.0.1", push_port, push)
        transport, runs = HTTPSTransport(reactor), Runs()
        spec = FleetSpec(args.devices, seed=18, behaviour=Behaviour(retry_delays=(1.0, 2.0, 5.0, 10.0, 30.0)))
        fleet = Fleet(spec, clock=reactor, transport=transport, push=push, observer=runs)
        started = time.monotonic()
        enroll_url = f"https://127.0.0.1:{port}/mdm/enroll"
        for first in range(0, args.devices, 50):  # a profile each (each carries its own identity), 50 at a time
            batch = range(first, min(first + 50, args.devices))
            profiles = yield defer.gatherResults([fetch_enrollment(reactor, enroll_url) for _ in batch])
            for index, profile in zip(batch, profiles, strict=True):
                fleet.add(index).install_enrollment(profile)
        yield until(reactor, lambda: runs.enrolled == args.devices, args.deadline)
        figures["enrolled_s"] = time.monotonic() - started
        ca = ssl.PEM_cert_to_DER_cert((tmp / "data" / "ca.pem").read_text())
        body = encode_profile(configuration_profile([root_certificate_payload(ca, identifier=f"{ROLLOUT}.root")],
                                                    identifier=ROLLOUT))
        ids = [runner.machine.facts.device_id for runner in fleet.runners]
        started = time.monotonic()
        admin_post(port, tmp / "data", {"deviceIds": ids, "push": True, "command": {
            "RequestType": "InstallProfile", "Payload": {"$data": base64.b64encode(body).decode()}}})
        figures["enqueue_s"] = time.monotonic() - started
        yield until(reactor, lambda: sum(runs.installs.values()) >= args.devices * args.kill_at, args.deadline)
        (leader,) = [int(m.group(1)) for m in seen(r"worker \d+ \(pid (\d+)\) leads")]
        os.kill(leader, signal.SIGKILL)
        figures["installed_at_kill"] = sum(runs.installs.values())
        yield until(reactor, lambda: runs.commands[("InstallProfile", "Acknowledged")] >= args.devices,
                    args.deadline)
        figures["rollout_s"] = time.monotonic() - started
        # A device counts its run when it runs the command; its Acknowledged report may still be on its way.
        yield until(reactor, lambda: acknowledged(database) >= args.devices, 60)
        push.stop_reconnecting()
        transport.close()
        figures["lost"] = args.devices - len(runs.installs)
        figures["device_duplicates"] = sum(n - 1 for n in runs.installs.values() if n > 1)
        with psycopg.connect(database, autocommit=True) as db:
            rows = db.execute("SELECT count(*), count(*) FILTER (WHERE status = 'Acknowledged') FROM commands "
                              "WHERE request_type = 'InstallProfile' GROUP BY device_id").fetchall()
        figures["server_duplicates"] = sum(total - 1 for total, _ in rows if total > 1)
        figures["server_unacknowledged"] = args.devices - sum(1 for total, acked in rows if acked == total == 1)
        figures["restarts"] = len(seen("restarting it"))
    finally:
        process.terminate()
        process.wait(timeout=60)


def acknowledged(database: str) -> int:
    with psycopg.connect(database, autocommit=True) as db:
        row = db.execute("SELECT count(*) FROM commands WHERE request_type = 'InstallProfile' "
                         "AND status = 'Acknowledged'").fetchone()
    return row[0] if row else 0


def admin_post(port: int, data_dir: Path, value) -> None:
    import http.client

    state = json.loads((data_dir / "server.json").read_text())
    auth = base64.b64encode(f"admin:{state['admin_password']}".encode()).decode()
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=600,
                                             context=ssl.create_default_context(cafile=str(data_dir / "ca.pem")))
    connection.request("POST", "/api/v1/commands", json.dumps(value), {"Authorization": f"Basic {auth}",
                                                                        "Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 201:
        raise SystemExit(f"enqueue refused: {response.status} {response.read()[:300]!r}")
    response.read()
    connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, metavar="postgresql://...", help="a PostgreSQL server")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-at", type=float, default=0.1, help="kill the leader once this share has run it")
    parser.add_argument("--apns-jitter", default="10s", help="spread of the pushes (so the kill lands mid-rollout)")
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds for each phase")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    from twisted.internet import reactor

    figures: dict = {}
    outcome: dict = {}

    def run():
        d = rollout(reactor, args, figures)
        d.addErrback(lambda failure: outcome.setdefault("error", failure.getErrorMessage()))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    print(f"serve --workers {args.workers}, {args.devices} devices, leader SIGKILLed at "
          f"{figures.get('installed_at_kill')} installs; load average {os.getloadavg()[0]:.1f}")
    print(json.dumps(figures, indent=1))
    if "error" in outcome:
        print(f"FAILED: {outcome['error']}")
        return 1
    bad = [key for key in ("lost", "device_duplicates", "server_duplicates", "server_unacknowledged") if figures[key]]
    print("PASS: 0 lost, 0 duplicated" if not bad else f"FAIL: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
