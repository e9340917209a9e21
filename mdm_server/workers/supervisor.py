"""`mdmsim serve --workers N`'s parent: starts N worker processes, restarts any that dies, stops them all.

Workers get the listening sockets as inherited fds and a pipe on stdin: they end when it closes, so a
supervisor killed with -9 leaves no orphan serving on. A worker that dies is counted, logged and started
again (at once, then with a growing delay while it keeps dying within seconds of starting).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from mdm_protocol.clocks import Clock, DelayedCall

log = logging.getLogger(__name__)
RESTART_DELAYS = (0.0, 0.5, 1.0, 2.0, 5.0)  # after the 1st, 2nd... quick death in a row; then 5 s each
QUICK_DEATH = 10.0  # seconds: a worker that dies sooner after starting counts towards the backoff
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL at shutdown


@dataclass
class Worker:
    number: int
    pid: int | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0
    process: Any = None
    ended: defer.Deferred[None] = field(default_factory=defer.Deferred)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, on_end: Callable[[Failure], None]) -> None:
        self._on_end = on_end

    def processEnded(self, reason: Failure) -> None:
        self._on_end(reason)


class Supervisor:
    """`start()` spawns the workers on `reactor`; `stop()` ends them (SIGTERM, then SIGKILL) and fires when
    all are gone. `command(number)` is a worker's argv; `fds` maps a child fd to the parent's socket fd."""

    def __init__(self, reactor: Any, command: Callable[[int], Sequence[str]], count: int, fds: Mapping[int, int],
                 *, clock: Clock, say: Callable[[str], Any] = print) -> None:
        self.reactor, self.command, self.fds, self.clock, self.say = reactor, command, dict(fds), clock, say
        self.workers = [Worker(number) for number in range(1, count + 1)]
        self.restarts = 0  # every worker restarted, whatever the cause (GET nothing: it is printed and logged)
        self.stopping = False
        self._pending: dict[int, DelayedCall] = {}

    def start(self) -> None:
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: Worker) -> None:
        self._pending.pop(worker.number, None)
        if self.stopping:
            return
        argv = list(self.command(worker.number))
        worker.ended = defer.Deferred()
        protocol = _WorkerProtocol(lambda reason: self._ended(worker, reason))
        child_fds: dict[int, Any] = {0: "w", 1: 1, 2: 2, **self.fds}
        worker.process = self.reactor.spawnProcess(protocol, argv[0], argv, env=dict(os.environ),
                                                   childFDs=child_fds)
        worker.pid, worker.started_at = worker.process.pid, self.clock.seconds()
        self.say(f"mdmsim: worker {worker.number} started (pid {worker.pid})")

    def _ended(self, worker: Worker, reason: Failure) -> None:
        pid, worker.pid, worker.process = worker.pid, None, None
        ended, worker.ended = worker.ended, defer.Deferred()
        how = _how(reason)
        if self.stopping:
            ended.callback(None)
            return
        worker.restarts += 1
        self.restarts += 1
        quick = self.clock.seconds() - worker.started_at < QUICK_DEATH
        worker.quick_deaths = worker.quick_deaths + 1 if quick else 0
        delay = RESTART_DELAYS[min(worker.quick_deaths, len(RESTART_DELAYS) - 1)]
        message = (f"mdmsim: worker {worker.number} (pid {pid}) {how}; restarting it"
                   f"{f' in {delay:g} s' if delay else ''} (restart {worker.restarts} of this worker, "
                   f"{self.restarts} in all)")
        log.warning(message)
        self.say(message)
        self._pending[worker.number] = self.clock.callLater(delay, self._spawn, worker)
        ended.callback(None)

    def stop(self) -> defer.Deferred[None]:
        """SIGTERM every worker; SIGKILL whoever is left after STOP_GRACE; fires once all have ended."""
        self.stopping = True
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        running = [worker for worker in self.workers if worker.process is not None]
        for worker in running:
            _signal(worker, signal.SIGTERM)
        killer = self.clock.callLater(STOP_GRACE, self._kill_all)
        done = defer.DeferredList([worker.ended for worker in running])

        def finished(_: object) -> None:
            if killer.active():
                killer.cancel()

        return done.addCallback(finished)

    def _kill_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                log.warning("worker %d (pid %s) did not stop within %g s: SIGKILL", worker.number, worker.pid,
                            STOP_GRACE)
                _signal(worker, signal.SIGKILL)


def _signal(worker: Worker, number: int) -> None:
    with contextlib.suppress(error.ProcessExitedAlready, OSError):
        worker.process.signalProcess(number)


def _how(reason: Failure) -> str:
    value = reason.value
    if getattr(value, "signal", None):
        name = signal.Signals(value.signal).name
        return f"was killed by {name}"
    return f"exited with {getattr(value, 'exitCode', '?')}"
