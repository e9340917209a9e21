"""Our MDM server as a load target: its own process (and core), ports picked by the system, one ready line.

`python -m mdmsim.load.server_process '<JSON>'`; serves until SIGTERM or stdin closes (its parent died).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import stdio
from twisted.internet.protocol import Protocol

from mdm_protocol.clocks import Reactor
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.push.apns_client import ProviderSettings

from .profiling import run_profiled


class _ParentWatch(Protocol):
    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor

    def connectionLost(self, reason: Any = None) -> None:
        if self.reactor.running:
            self.reactor.stop()


def main(argv: list[str]) -> int:
    from twisted.internet import reactor  # this process exists to run the server on the real reactor

    options = json.loads(argv[1])
    config = ServerConfig(
        data_dir=Path(options["data_dir"]), listen="ssl:0:interface=127.0.0.1:backlog=4096",
        push_link="tcp:0:interface=127.0.0.1", server_names=("127.0.0.1",),
        in_memory=bool(options.get("in_memory", False)), apns=dict(options.get("apns", {})),
    )
    provider = options.get("apns_provider")  # the gateway's URL and files: push through `mdmsim apns`
    if provider:
        config.apns_provider = ProviderSettings.from_files(
            provider["url"], Path(provider["cert"]), Path(provider["key"]), Path(provider["ca"]))
    server = MDMServer(config, clock=reactor, reactor=reactor)
    io = stdio.StandardIO(_ParentWatch(reactor), reactor=reactor)

    def started(ports: list[Any]) -> None:
        ready = {
            "type": "ready", "pid": os.getpid(), "url": server.url,
            # With a provider the fleet attaches to the gateway's link, not ours (we open none).
            "push_link": f"127.0.0.1:{ports[1].getHost().port}" if len(ports) > 1 else None,
            "enroll_url": f"{server.url}/mdm/enroll?token={server.state.enroll_token}",
            "admin_user": config.admin_user, "admin_password": server.admin_password,
            "ca_pem": str(config.data_dir / "ca.pem"),
        }
        io.write(json.dumps(ready).encode() + b"\n")

    def failed(failure: Any) -> None:
        io.write(json.dumps({"type": "error", "reason": failure.getErrorMessage()}).encode() + b"\n")
        reactor.stop()

    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    def start() -> None:
        server.startService()
        server.listening().addCallbacks(started, failed)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    run_profiled(lambda: reactor.run(installSignalHandlers=False), "server")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
