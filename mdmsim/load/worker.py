"""A fleet worker process: runs its share of the devices on its own reactor and core, reports on stdout.

JSON lines out: `ready`, `progress` (each second), `final`; in (stdin): `start`, `rollout` (with times), `stop`.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
from dataclasses import replace
from typing import Any, cast

from twisted.internet import defer, stdio
from twisted.internet.interfaces import IReactorTime
from twisted.protocols.basic import LineReceiver

from device_sim.enroll_fetch import fetch_enrollment, with_user
from device_sim.fleet import FleetSpec
from device_sim.https_transport import HTTPSTransport, TLSSessionCache
from device_sim.machine import Behaviour, DeviceMachine
from device_sim.push_link_client import PushLinkClient
from mdm_protocol.clocks import Reactor

from .config import WorkerConfig
from .meter import LoadObserver, LoadRunner, MeteredTransport
from .profiling import run_profiled
from .stages import Stages


class FleetWorker:
    """Enrolls this worker's devices on the ramp and keeps them running until told to stop."""

    def __init__(self, config: WorkerConfig, reactor: Reactor, emit: Any) -> None:
        self.config, self.reactor, self.emit = config, reactor, emit
        realism = config.realism
        self.spec = FleetSpec(config.devices, seed=config.seed, os_mix=config.os_mix, kinds=config.kinds,
                              behaviour=Behaviour(not_now_rate=realism.not_now_rate))
        self.observer = LoadObserver(reactor, checkin_interval=realism.checkin_interval, seed=config.seed,
                                     live_messages=config.live_messages)
        # One TLS session cache per worker process: every transport it makes resumes the others' sessions.
        self.tls_sessions = TLSSessionCache()
        https = HTTPSTransport(reactor, connections=realism.connection_mode, timeout=realism.timeout,
                               tls_sessions=self.tls_sessions)
        self.https = https
        self.transport = MeteredTransport(https, self.observer.errors, error_rate=realism.network_error_rate,
                                          rng=random.Random(f"{config.seed}:{config.worker}:faults"))
        self.push = PushLinkClient(reactor, reconnect=True)
        self.runners: list[LoadRunner] = []
        self._by_index: dict[int, LoadRunner] = {}
        self._rng = random.Random(f"{config.seed}:{config.worker}:think")
        self._enrolling = defer.DeferredSemaphore(config.max_enrolling)
        self._link = None
        self.stopped = False

    def ready(self) -> None:
        """Imported and connected: tell the parent, which answers `start` once every worker is ready."""
        if self.config.push_link:
            host, _, port = self.config.push_link.rpartition(":")
            self._link = self.reactor.connectTCP(host, int(port), self.push)
        self.emit({"type": "ready", "worker": self.config.worker, "pid": os.getpid(),
                   "devices": len(self.config.indexes())})

    def start(self, at: float) -> None:
        """Enroll this worker's devices on the ramp that begins at wall-clock time `at`."""
        self.config = replace(self.config, start_at=at)
        now = self.reactor.seconds()
        if self.config.stages:
            self._stage(Stages(self.config.stages), at - now)
        else:
            for index in self.config.indexes():
                self.reactor.callLater(self.config.enroll_delay(index, now), self._enroll, index)
        self.reactor.callLater(self.config.progress_every, self._progress)

    def _stage(self, stages: Stages, offset: float) -> None:
        """Each device enrolls when the target first reaches it, leaves and comes back as the target moves."""
        for index in self.config.indexes():
            for number, (since, until) in enumerate(stages.intervals(index)):
                start = max(0.0, offset + since)
                if number == 0:
                    self.reactor.callLater(start, self._enroll, index)
                else:
                    self.reactor.callLater(start, self._online, index, True)
                if until is not None:
                    self.reactor.callLater(max(0.0, offset + until), self._online, index, False)

    def _online(self, index: int, online: bool) -> None:
        runner = self._by_index.get(index)
        if runner is not None:
            runner.left = not online
            runner.online = online and not self.config.offline(index)
            if online:
                self.observer.resume(runner)

    def _enroll(self, index: int) -> defer.Deferred:
        if self.stopped:
            return defer.succeed(None)
        return self._enrolling.run(self._download_and_install, index)

    def _download_and_install(self, index: int) -> defer.Deferred:
        try:
            facts = self.spec.facts(index)
        except ValueError as exc:  # e.g. an --os-mix version no hardware of that kind runs
            self.observer.cannot_simulate(str(exc))
            return defer.succeed(None)
        machine = DeviceMachine(facts, seed=self.spec.seed, behaviour=self.spec.behaviour)
        runner = LoadRunner(machine, clock=self.reactor, transport=self.transport, push=self.push,
                            observer=self.observer)
        runner.think, runner.rng = self.config.realism.think, self._rng
        runner.online = not self.config.offline(index)
        self.runners.append(runner)
        self._by_index[index] = runner
        started = self.reactor.seconds()
        d = fetch_enrollment(self.reactor, with_user(self.config.enroll_url, facts.user.user_id))
        # Twisted's API names its zope interface; the Reactor protocol is our structural view of the same object.
        d.addTimeout(self.config.realism.timeout, cast(IReactorTime, self.reactor))

        def installed(profile: bytes) -> None:
            self.observer.record("EnrollmentProfile", self.reactor.seconds() - started, True,
                                 self.reactor.seconds())
            runner.install_enrollment(profile)

        def failed(failure: Any) -> None:
            runner.download_failed = True  # counted here: the end-of-run tally leaves it alone
            self.observer.record("EnrollmentProfile", self.reactor.seconds() - started, False,
                                 self.reactor.seconds())
            reason = failure.getErrorMessage() or failure.type.__name__
            if failure.check(defer.TimeoutError):  # its own message is "(30, 'Deferred')"
                reason = f"no answer within {self.config.realism.timeout:g} s (timed out)"
            self.observer.enrollment_download_failed(reason[:120])

        return d.addCallbacks(installed, failed)

    def _progress(self) -> None:
        if self.stopped:
            return
        self.emit({**self.observer.progress(self.reactor.seconds()), **self._link_state()})
        self.reactor.callLater(self.config.progress_every, self._progress)

    def _link_state(self) -> dict[str, Any]:
        """The push link's health, when this worker has one (no --push-link: nothing to report)."""
        if not self.config.push_link:
            return {}
        return {"push_link": self.push.health().to_json(), "pushes_received": self.push.delivered}

    def rollout(self, at: float, declarative: bool = False) -> None:
        self.observer.start_rollout(at, declarative=declarative)

    def stop(self) -> None:
        """Report everything, then leave the reactor (open connections are abandoned with the process)."""
        if self.stopped:
            return
        self.stopped = True
        final = {**self.observer.final(self.reactor.seconds(), self.runners), **self._link_state()}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        final.update(worker=self.config.worker, devices=len(self.config.indexes()),
                     offline=sum(1 for r in self.runners if self.config.offline(r.machine.facts.index)),
                     cpu=usage.ru_utime + usage.ru_stime, rss=_rss_bytes(), peak_rss=usage.ru_maxrss * 1024)
        self.emit(final)
        self.push.stop_reconnecting()
        if self._link is not None:
            self._link.disconnect()
        self.finished()

    def finished(self) -> None:
        """Replaced by `main`: flush stdout, then stop the reactor."""


class ParentLink(LineReceiver):
    """Commands from the parent on stdin; EOF (the parent died) stops the worker too."""

    delimiter = b"\n"

    def __init__(self, worker_ref: list[FleetWorker]) -> None:
        self.worker_ref = worker_ref

    def lineReceived(self, line: bytes) -> None:
        try:
            command = json.loads(line)
        except ValueError:
            return
        worker = self.worker_ref[0]
        if command.get("cmd") == "start":
            worker.start(float(command["at"]))
        elif command.get("cmd") == "rollout":
            worker.rollout(float(command["at"]), bool(command.get("declarative")))
        elif command.get("cmd") == "stop":
            worker.stop()

    def connectionLost(self, reason: Any = None) -> None:
        # stdin closed (the parent died), or stdout flushed and closed after the final report.
        worker = self.worker_ref[0]
        if not worker.stopped:
            worker.stop()
        if worker.reactor.running:
            worker.reactor.stop()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0



def main(argv: list[str]) -> int:
    from twisted.internet import reactor  # a worker owns its process: the real reactor is the point

    config = WorkerConfig.from_json(json.loads(argv[1]))
    worker_ref: list[FleetWorker] = []
    link = ParentLink(worker_ref)
    io = stdio.StandardIO(link, reactor=reactor)

    def emit(message: dict[str, Any]) -> None:
        io.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    worker = FleetWorker(config, reactor, emit)
    worker.finished = io.loseConnection  # flushes what is written, then connectionLost stops the reactor
    worker_ref.append(worker)
    reactor.callWhenRunning(worker.ready)
    run_profiled(reactor.run, f"worker-{config.worker}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
