"""`mdmsim apns` as a load target's APNs: the gateway in its own process, a push certificate issued for the
server, ports picked by the system, one ready line. `python -m mdmsim.load.gateway_process '<JSON>'`.

Serves until SIGTERM or stdin closes (its parent died); our server then pushes through it with its HTTP/2
provider client and the fleet attaches to its push link, the path a real APNs takes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import stdio

from mdm_server.ca import write_private_file
from mdm_world.apns_gateway import APNsGatewayServer, GatewayConfig

from .server_process import _ParentWatch


def main(argv: list[str]) -> int:
    from twisted.internet import reactor  # this process exists to run the gateway on the real reactor

    options = json.loads(argv[1])
    data_dir = Path(options["data_dir"])
    config = GatewayConfig(data_dir=data_dir, listen="ssl:0:interface=127.0.0.1:backlog=1024",
                           push_link="tcp:0:interface=127.0.0.1", in_memory=bool(options.get("in_memory", True)))
    server = APNsGatewayServer(config, clock=reactor)
    topic = f"com.apple.mgmt.External.{uuid.uuid4()}"
    push = server.pki.issue_push_certificate(topic, now=datetime.fromtimestamp(reactor.seconds(), UTC))
    (data_dir / "push.pem").write_bytes(push.certificate_pem)
    write_private_file(data_dir / "push.key", push.private_key_pem)  # 0600, like every key the server writes
    io = stdio.StandardIO(_ParentWatch(reactor), reactor=reactor)

    def started(_ports: list[Any]) -> None:
        ready = {"type": "ready", "pid": os.getpid(), "url": f"https://localhost:{server.provider_port}",
                 "push_link": f"127.0.0.1:{server.link_port}", "cert": str(data_dir / "push.pem"),
                 "key": str(data_dir / "push.key"), "ca": str(data_dir / "ca.pem"), "topic": topic}
        io.write(json.dumps(ready).encode() + b"\n")

    def failed(failure: Any) -> None:
        io.write(json.dumps({"type": "error", "reason": failure.getErrorMessage()}).encode() + b"\n")
        reactor.stop()

    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.callWhenRunning(lambda: server.listen(reactor).addCallbacks(started, failed))
    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
