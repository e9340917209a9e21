"""`mdmsim serve --workers N`: the supervisor process (binds, prints, supervises) and a worker's side of it.

The supervisor prepares the data directory and the database once (so workers never race to create a CA), binds
the listening sockets and passes them to N workers (mdm_server/workers/sockets.py says why not SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import replace
from typing import Any, cast

from twisted.internet import main
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from mdm_server.app import MDMServer, ServerConfig
from mdm_server.storage import StorageError
from mdm_server.workers.sockets import ListenError, bind, parse_listen, with_port
from mdm_server.workers.supervisor import Supervisor

from .exit_codes import Exit

DEVICES_FD, PUSH_FD = 3, 4  # where a worker finds the sockets
# A new leading worker holds pushes this long: fleets re-attach to its push link first (after 1 s, then 2 s),
# else the in-process APNs simulation would refuse their tokens as unknown. None needed with --apns-url.
PUSH_GRACE = 4.0


def supervise(args: argparse.Namespace, config: ServerConfig) -> int:
    from twisted.internet import reactor

    from .cli_serve import check_config, print_banner

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    usage = check_config(args, config)
    if usage is not None:
        return usage
    try:
        sockets = _bind(config)
    except (ListenError, OSError) as exc:
        print(f"mdmsim: cannot listen: {exc}", file=sys.stderr)
        return Exit.USAGE
    try:  # the data directory and the schema, once, before any worker starts
        prepared = MDMServer(replace(config, listen=with_port(config.listen, sockets[DEVICES_FD].getsockname()[1])),
                             clock=cast(Any, reactor))
    except StorageError as exc:
        print(f"mdmsim: cannot open storage: {exc.reason}", file=sys.stderr)
        return Exit.FAILED
    prepared.stopService()  # closes its connections; the workers open their own
    fds = {child: sock.fileno() for child, sock in sockets.items()}

    def command(number: int) -> list[str]:
        return [sys.executable, "-m", "mdmsim.cli", *args.argv, "--worker-fds",
                ",".join(f"{'devices' if child == DEVICES_FD else 'push'}={child}" for child in fds),
                "--worker-number", str(number)]

    supervisor = Supervisor(reactor, command, args.workers, fds, clock=cast(Any, reactor),
                            say=lambda line: print(line, flush=True))
    outcome = {"code": Exit.OK}

    def on_sigint(signum: int, frame: Any) -> None:
        outcome["code"] = Exit.INTERRUPTED
        cast(Any, reactor).callFromThread(reactor.stop)

    def start() -> None:
        print_banner(prepared, config, args, prepared.url)
        if PUSH_FD in sockets:
            print(f"  push link: port {sockets[PUSH_FD].getsockname()[1]} (served by the leading worker)")
        print(f"  {args.workers} workers on one listening socket; a worker that dies is restarted", flush=True)
        supervisor.start()

    reactor.callWhenRunning(start)
    reactor.callWhenRunning(signal.signal, signal.SIGINT, on_sigint)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    reactor.run()
    for sock in sockets.values():
        sock.close()
    return outcome["code"]


def _bind(config: ServerConfig) -> dict[int, Any]:
    sockets = {DEVICES_FD: bind(parse_listen(config.listen))}
    if config.push_link and config.apns_provider is None:
        try:
            sockets[PUSH_FD] = bind(parse_listen(config.push_link))
        except (ListenError, OSError):
            sockets[DEVICES_FD].close()
            raise
    return sockets


class WorkerSide:
    """A worker's part: adopt the inherited sockets, end with the supervisor, say when it leads."""

    def __init__(self, args: argparse.Namespace, reactor: Any) -> None:
        self.reactor, self.number = reactor, args.worker_number
        self.fds = {name: int(fd) for name, _, fd in (item.partition("=") for item in args.worker_fds.split(","))}
        self.push_link = args.push_link
        self._stopping = False
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's: it stops us with SIGTERM
        # After Twisted's own handler: SIGTERM and the supervisor's pipe closing both end us, once.
        reactor.callWhenRunning(signal.signal, signal.SIGTERM, lambda signum, frame: self.stop())

    def stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.reactor.callFromThread(self.reactor.stop)

    def configure(self, config: ServerConfig) -> None:
        config.inherited_fds = {"devices": self.fds["devices"]}
        config.push_link = None  # the leader adopts the push-link socket (it alone pushes)

    def attach(self, server: MDMServer) -> None:
        self.reactor.addReader(_ParentWatch(self.stop))
        coordination = server.coordination
        if coordination is None:
            raise RuntimeError("a worker needs PostgreSQL coordination")
        if server.config.apns_provider is None:
            coordination.push_grace = PUSH_GRACE

        def elected() -> None:
            fd = self.fds.get("push")
            if fd is not None:  # on the next turn: election may happen while the server starts its children
                link = server.inherited_push_link(self.reactor, fd, self.push_link)
                self.reactor.callLater(0, link.setServiceParent, server)
            print(f"mdmsim: worker {self.number} (pid {os.getpid()}) leads: pushes and sync wake-ups", flush=True)

        coordination.on_elected.append(elected)

    def started(self, server: MDMServer) -> None:
        print(f"mdmsim: worker {self.number} (pid {os.getpid()}) serving {server.url}", flush=True)


@implementer(IReadDescriptor)
class _ParentWatch:
    """Stdin is a pipe from the supervisor: its end means the supervisor is gone, so this worker goes too."""

    def __init__(self, stop: Any) -> None:
        self.stop = stop

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Any:
        return None if os.read(0, 4096) else main.CONNECTION_DONE  # readable and empty: the pipe closed

    def connectionLost(self, reason: Any = None) -> None:
        self.stop()

    def logPrefix(self) -> str:
        return "supervisor pipe"
