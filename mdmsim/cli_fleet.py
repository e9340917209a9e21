"""`mdmsim fleet`: run N simulated devices over real HTTPS against any server speaking the MDM protocol.

Devices fetch an enrollment profile each, trust only the roots it carries, enroll, and answer commands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from device_sim.enroll_fetch import fetch_enrollment, with_user
from device_sim.fleet import DEFAULT_KINDS, DEFAULT_OS_MIX, Fleet, FleetSpec, parse_mix, parse_os_mix
from device_sim.fleet_ramp import EnrollmentRamp
from device_sim.https_transport import ConnectionMode, HTTPSTransport
from device_sim.push_link_client import PushLinkClient
from device_sim.report import fleet_json, readiness_rows, readiness_table
from device_sim.scep_agent import RSAKeyPool, ScepAgent, WebScepHttp
from device_sim.stats import FleetObserver
from mdm_world.durations import parse_duration


def _mix_text(mix) -> str:
    return ",".join(f"{name}:{weight}" for name, weight in mix)


def _os_mix(text: str):
    try:
        return parse_os_mix(text)
    except ValueError as exc:  # argparse shows this text, not a traceback; it names the simulated versions
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="run simulated devices against an MDM server",
                                   description=__doc__)
    parser.add_argument("--server", help="the server's base URL (e.g. https://localhost:8443); --enroll-url may "
                                          "then be a path on it. Devices use the URLs in their enrollment profile")
    parser.add_argument("--enroll-url", required=True,
                        help="where each device downloads its enrollment profile (e.g. the URL "
                             "`mdmsim serve` prints: https://localhost:8443/mdm/enroll?token=...)")
    parser.add_argument("--push-link", default="127.0.0.1:8444",
                        help="HOST:PORT of the server's push link ('none' if the server pushes otherwise)")
    parser.add_argument("--devices", type=int, default=100, help="number of devices")
    parser.add_argument("--seed", type=int, default=1, help="fleet seed: same seed, same devices")
    parser.add_argument("--os-mix", type=_os_mix, default=DEFAULT_OS_MIX,
                        help=f"iOS versions with weights (default {_mix_text(DEFAULT_OS_MIX)})")
    parser.add_argument("--kinds", type=parse_mix, default=DEFAULT_KINDS,
                        help=f"device kinds with weights (default {_mix_text(DEFAULT_KINDS)}; also "
                             "user-enrollment)")
    parser.add_argument("--ramp", type=parse_duration, default=10.0, help="spread enrollments over this long")
    parser.add_argument("--duration", type=parse_duration, default=60.0, help="how long to run in total")
    add_connection_arguments(parser)
    parser.add_argument("--key-pool", type=int, default=0, metavar="N",
                        help="make N RSA keys before starting, for profiles whose identity comes by SCEP (a "
                             "2048-bit key takes ~50 ms; devices make their own once the pool is empty)")
    parser.add_argument("--json", type=Path, help="write the full report (every device) to this file")
    parser.set_defaults(func=run)


def push_link_address(text: str) -> str:
    """--push-link: HOST:PORT, or 'none' (no push link: devices get no pushes through one)."""
    if text == "none":
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"bad push link {text!r}: write HOST:PORT (e.g. 127.0.0.1:8444), or "
                                         "'none' when the server pushes otherwise")
    return text


def fraction(text: str) -> float:
    """'0.05' or '5%' → 0.05; a clear message for anything outside 0 to 1."""
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction from 0 to 1 (or 0% to 100%)")
    return value


def add_connection_arguments(parser: Any) -> None:  # a parser or an argument group
    """--connections and its --keep-alive shortcut, for every command that runs simulated devices."""
    parser.add_argument("--connections", choices=[mode.value for mode in ConnectionMode],
                        default=ConnectionMode.PER_SESSION.value,
                        help="when a device's TLS connection closes: per-session (as iOS, the default), "
                             "per-request, or keep-alive (pooled, shared by the fleet)")
    parser.add_argument("--keep-alive", dest="connections", action="store_const",
                        const=ConnectionMode.KEEP_ALIVE.value, help="--connections keep-alive")


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor, task

    console = Console(stderr=True)
    spec = FleetSpec(args.devices, seed=args.seed, os_mix=args.os_mix, kinds=args.kinds)
    enroll_url = args.enroll_url
    if args.server and enroll_url.startswith("/"):  # a path on --server
        enroll_url = args.server.rstrip("/") + enroll_url
    push = PushLinkClient()
    if args.push_link != "none":
        host, _, port = args.push_link.rpartition(":")
        reactor.connectTCP(host, int(port), push)
    observer = FleetObserver()
    keys = RSAKeyPool()
    keys.fill(args.key_pool)
    scep = ScepAgent(WebScepHttp(reactor), reactor, keys)
    fleet = Fleet(spec, clock=reactor, transport=HTTPSTransport(reactor, connections=args.connections),
                  push=push, observer=observer, scep=scep)
    ramp = EnrollmentRamp(fleet, observer, clock=reactor, fetch_profile=lambda runner: fetch_enrollment(
        reactor, with_user(enroll_url, runner.machine.facts.user.user_id)))
    ramp.start(args.ramp)
    started = reactor.seconds()
    ticker = task.LoopingCall(lambda: console.print(ramp.progress(reactor.seconds() - started), highlight=False))
    ticker.clock = reactor
    ticker.start(2.0, now=False)
    reactor.callLater(args.duration, reactor.stop)
    reactor.run()
    for line in ramp.failures[:10]:
        console.print(f"enrollment download failed: {line}")
    Console().print(readiness_table(readiness_rows(fleet.runners)))
    if args.json:
        args.json.write_text(json.dumps(fleet_json(fleet.runners, observer), indent=1, sort_keys=True))
    return 0 if ramp.all_enrolled() else 1
