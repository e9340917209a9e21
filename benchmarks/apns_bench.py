"""Simulated APNs benchmark (issue 13): pushes accepted per gateway CPU-second over one HTTP/2 connection with
100 concurrent streams, RSS with 100,000 registered tokens, and push->device delivery latency at 5,000 pushes/s.

The gateway runs in its own process (`mdmsim apns`'s assembly); this process is the provider (our server's
HTTP/2 client) and the fleet (one push link with every token attached). Gateway CPU is read from /proc.
Run: `.venv/bin/python benchmarks/apns_bench.py [--tokens 100000] [--pushes 20000] [--rate 5000] [--json out]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device_sim.push_link_client import PushLinkClient  # noqa: E402
from mdm_server.push.apns_client import APNsProviderClient, ProviderSettings  # noqa: E402
from mdm_server.push.interface import ProviderResponse, PushRequest  # noqa: E402
from mdm_world.apns_gateway import GatewayPKI  # noqa: E402

TOPIC = "com.apple.mgmt.External.5e6c0c3e-2f07-4d8e-9b5a-0c1b2d3e4f50"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def run_gateway(data_dir: Path, max_streams: int, profile: Path | None = None) -> None:
    """Child process: the gateway on loopback ports; prints them as one JSON line. With `profile`, the reactor
    runs under cProfile and the statistics are written there when it stops."""
    import logging

    from twisted.internet import reactor
    from twisted.python import log

    from mdm_world.apns_gateway import APNsGatewayServer, GatewayConfig

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log.startLogging(sys.stderr, setStdout=False)  # the gateway's unhandled errors, if any, go with the figures

    config = GatewayConfig(data_dir=data_dir, listen="ssl:0:interface=127.0.0.1",
                           push_link="tcp:0:interface=127.0.0.1", max_streams=max_streams)
    server = APNsGatewayServer(config, clock=reactor)

    def started(_ports: Any) -> None:
        print(json.dumps({"provider": server.provider_port, "link": server.link_port}), flush=True)

    reactor.callWhenRunning(lambda: server.listen(reactor).addCallback(started))
    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    if profile is None:
        reactor.run()
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.runcall(reactor.run)
    profiler.dump_stats(profile)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_provider(args: argparse.Namespace) -> None:
    """Child process: the provider (our server's HTTP/2 client) on one connection. `throughput`: as many pushes
    as the gateway's 100 streams take, with the gateway's CPU read around them; `paced`: `rate` pushes a second,
    each PushMagic carrying its send time so the fleet measures push->device latency."""
    from twisted.internet import defer, reactor

    spec = json.loads(args.provider)
    settings = ProviderSettings(f"https://localhost:{spec['port']}", Path(spec["cert"]).read_bytes(),
                                Path(spec["key"]).read_bytes(), Path(spec["ca"]).read_bytes())
    client = APNsProviderClient(reactor, settings)
    tokens, out = spec["tokens"], {}

    def request(i: int, magic: str) -> PushRequest:
        return PushRequest((i % tokens + 1).to_bytes(32, "big"), magic, TOPIC)

    @defer.inlineCallbacks
    def throughput():
        while (yield client.push(request(tokens - 1, "probe"))).status != 200:
            yield deferLater(reactor, 0.05)  # the fleet's attach lines are still being read
        out["ready_seconds"] = round(time.perf_counter() - began, 2)
        cpu0, wall0 = cpu_seconds(spec["gateway_pid"]), time.perf_counter()
        answers = yield defer.gatherResults([client.push(request(i, "t")) for i in range(spec["pushes"])])
        cpu, wall = cpu_seconds(spec["gateway_pid"]) - cpu0, time.perf_counter() - wall0
        accepted = sum(1 for a in answers if a.status == 200)
        out.update(pushes=spec["pushes"], accepted=accepted, gateway_cpu_seconds=round(cpu, 3),
                   wall_seconds=round(wall, 3), accepted_per_gateway_cpu_second=round(accepted / cpu) if cpu else None,
                   accepted_per_wall_second=round(accepted / wall), retries=client.retries)

    @defer.inlineCallbacks
    def paced():
        total, tick, sent, started = int(spec["rate"] * spec["seconds"]), 0.005, 0, time.perf_counter()
        pending = []
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * spec["rate"]) + 1)
            while sent < due:
                pending.append(client.push(request(sent, f"{time.time():.6f}")))
                sent += 1
            yield deferLater(reactor, tick)
        elapsed = time.perf_counter() - started
        answers = yield defer.gatherResults(pending)
        out.update(pushes=total, achieved_rate=round(total / elapsed),
                   accepted=sum(1 for a in answers if a.status == 200),
                   answers={f"{a.status} {a.reason or ''}".strip(): n for a, n in Counter(
                       ProviderResponse(x.status, x.reason) for x in answers).items()})

    def deferLater(clock, delay):  # noqa: N802
        from twisted.internet import task

        return task.deferLater(clock, delay, lambda: None)

    def done(result: Any) -> None:
        if hasattr(result, "getTraceback"):
            out["error"] = result.getTraceback()
        print(json.dumps(out), flush=True)
        client.close()
        reactor.stop()

    began = time.perf_counter()
    phase = throughput if spec["phase"] == "throughput" else paced
    reactor.callWhenRunning(lambda: phase().addBoth(done))
    reactor.run()


class Fleet:
    """This process: every token attached on one push link; latency from the send time in each PushMagic."""

    def __init__(self, reactor: Any, tokens: int) -> None:
        self.link = PushLinkClient(reactor, reconnect=True)
        self.latencies: list[float] = []
        self.received = 0
        for i in range(1, tokens + 1):
            self.link.register(i.to_bytes(32, "big"), TOPIC, self._on_push)

    def _on_push(self, token: bytes, payload: dict, sent_at: float | None = None) -> None:
        self.received += 1
        magic = payload["mdm"]
        if magic[0].isdigit():
            self.latencies.append(time.time() - float(magic))


def provider(reactor: Any, spec: dict):
    """Run one provider phase in its own process; its JSON line when it exits."""
    from twisted.internet import utils

    d = utils.getProcessOutput(sys.executable, [__file__, "--provider", json.dumps(spec)], env=dict(os.environ),
                               reactor=reactor)
    return d.addCallback(lambda output: json.loads(output.decode().strip().splitlines()[-1]))


def measure(reactor: Any, args: argparse.Namespace, pid: int, ports: dict, data_dir: Path, fleet: Fleet):
    from twisted.internet import defer

    @defer.inlineCallbacks
    def run():
        results: dict[str, Any] = {"rss_mb_gateway_started": round(rss_mb(pid), 1)}
        pki = GatewayPKI.load_or_create(data_dir, now=datetime.now(UTC))
        push = pki.issue_push_certificate(TOPIC, now=datetime.now(UTC))
        (data_dir / "push.pem").write_bytes(push.certificate_pem)
        (data_dir / "push.key").write_bytes(push.private_key_pem)
        spec = {"port": ports["provider"], "cert": str(data_dir / "push.pem"), "key": str(data_dir / "push.key"),
                "ca": str(data_dir / "ca.pem"), "tokens": args.tokens, "gateway_pid": pid, "pushes": args.pushes,
                "rate": args.rate, "seconds": args.seconds}
        note("throughput: registering the tokens, then pushing")
        results["throughput"] = yield provider(reactor, {**spec, "phase": "throughput"})
        note(f"throughput: {results['throughput']}")
        results["throughput"]["concurrent_streams"] = args.streams
        results["registered"] = {"tokens": args.tokens, "rss_mb": round(rss_mb(pid), 1)}
        fleet.latencies.clear()
        note("latency: paced pushes")
        results["latency"] = yield provider(reactor, {**spec, "phase": "paced"})
        if "error" in results["latency"]:
            raise RuntimeError(results["latency"]["error"])
        expected = results["latency"]["accepted"]
        deadline = time.monotonic() + 30
        while len(fleet.latencies) < expected and time.monotonic() < deadline:
            yield task_later(reactor, 0.05)
        ms = [v * 1000 for v in fleet.latencies]
        results["latency"].update(target_rate=args.rate, delivered=len(ms), p50_ms=round(percentile(ms, 0.5), 2),
                                  p99_ms=round(percentile(ms, 0.99), 2), max_ms=round(max(ms), 2) if ms else None)
        return results

    return run()


def note(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def task_later(reactor: Any, delay: float):
    from twisted.internet import task

    return task.deferLater(reactor, delay, lambda: None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=100_000, help="tokens registered and attached")
    parser.add_argument("--pushes", type=int, default=20_000, help="pushes for the throughput figure")
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams on the one connection")
    parser.add_argument("--rate", type=float, default=5000.0, help="pushes per second for the latency figure")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long the latency run lasts")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", type=Path, help="run the gateway under cProfile, statistics to this file "
                                                     "(figures are then not comparable)")
    parser.add_argument("--gateway", type=Path, help=argparse.SUPPRESS)  # child modes
    parser.add_argument("--provider", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gateway:
        run_gateway(args.gateway, args.streams, args.profile)
        return 0
    if args.provider:
        run_provider(args)
        return 0
    from twisted.internet import reactor

    data_dir = Path(tempfile.mkdtemp(prefix="apns-bench-"))
    profile = ["--profile", str(args.profile.resolve())] if args.profile else []
    child = subprocess.Popen([sys.executable, __file__, "--gateway", str(data_dir), "--streams", str(args.streams),
                              *profile], stdout=subprocess.PIPE, text=True)
    ports = json.loads(child.stdout.readline())
    fleet = Fleet(reactor, args.tokens)
    connector = reactor.connectTCP("127.0.0.1", ports["link"], fleet.link)
    outcome: dict[str, Any] = {}

    def finish(result: Any) -> None:
        outcome["result"] = result
        fleet.link.stop_reconnecting()
        connector.disconnect()
        reactor.stop()

    reactor.callWhenRunning(lambda: measure(reactor, args, child.pid, ports, data_dir, fleet).addBoth(finish))
    reactor.run()
    child.terminate()
    child.wait(10)
    result = outcome.get("result")
    if not isinstance(result, dict):
        print(result.getTraceback() if hasattr(result, "getTraceback") else result, file=sys.stderr)
        return 1
    figures = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "loadavg": os.getloadavg(),
               "command": " ".join(sys.argv), "cpus": os.cpu_count(), **result}
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
