"""`mdmsim fleet`: run N simulated devices over real HTTPS against any server speaking the MDM protocol.

Devices fetch an enrollment profile each, trust only the roots it carries, enroll, and answer commands.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from device_sim.checkin_loop import CheckinLoop
from device_sim.enroll_fetch import fetch_enrollment, with_user
from device_sim.fleet import DEFAULT_KINDS, DEFAULT_OS_MIX, Fleet, FleetSpec, parse_mix, parse_os_mix
from device_sim.fleet_ramp import EnrollmentRamp
from device_sim.fleet_state import FleetStateDir, FleetStateError, StateKeeper
from device_sim.https_transport import ConnectionMode, HTTPSTransport
from device_sim.push_link_client import PushLinkClient
from device_sim.report import readiness_rows, readiness_table
from device_sim.scep_agent import RSAKeyPool, ScepAgent, WebScepHttp
from device_sim.stats import FleetObserver
from mdm_world.durations import parse_duration

from .exit_codes import Exit, epilog
from .fleet_outcome import fleet_document, fleet_verdict, with_failed_saves
from .live.fleet_status import fleet_status
from .live.web import ListenError
from .load.meter import MeteredTransport


def _mix_text(mix) -> str:
    return ",".join(f"{name}:{weight}" for name, weight in mix)


def _os_mix(text: str):
    try:
        return parse_os_mix(text)
    except ValueError as exc:  # argparse shows this text, not a traceback; it names the simulated versions
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="run simulated devices against an MDM server",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=epilog("A device still retrying its enrollment after a real failure at "
                                                 "the end of the run counts as failed."))
    parser.add_argument("--server", help="the server's base URL (e.g. https://localhost:8443); --enroll-url may "
                                          "then be a path on it. Devices use the URLs in their enrollment profile")
    parser.add_argument("--enroll-url", required=True,
                        help="where each device downloads its enrollment profile (e.g. the URL "
                             "`mdmsim serve` prints: https://localhost:8443/mdm/enroll?token=...)")
    parser.add_argument("--push-link", default="127.0.0.1:8444", type=push_link_address,
                        help="HOST:PORT of the server's push link ('none' if the server pushes otherwise); "
                             "reconnected after a drop, its time down reported")
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
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="keep each enrolled device here (identity, push token, enrollment, profiles, keychain; "
                             "files 0600) and the unused --key-pool keys: the next run with the same --seed resumes "
                             "those devices without enrolling again")
    parser.add_argument("--checkin-interval", type=parse_duration,
                        help="devices also check in by themselves this often (e.g. 5m), for servers that cannot "
                             "push them; without it devices check in only when pushed, as iOS does")
    parser.add_argument("--max-error-rate", type=fraction, default=0.0,
                        help="failed requests tolerated before the run fails (exit 1), e.g. 1%% (default 0)")
    parser.add_argument("--json", type=Path, help="write the full report (every device) to this file")
    add_web_arguments(parser, "the fleet")
    parser.set_defaults(func=run)


def add_web_arguments(parser: Any, what: str) -> None:
    """--web and --web-port, for the commands with a live dashboard (load, fleet)."""
    parser.add_argument("--web", action="store_true",
                        help=f"serve a live dashboard of {what} on 127.0.0.1 (its URL, with a secret token, is "
                             "printed): charts updated by server-sent events; it stops when the run ends")
    parser.add_argument("--web-port", type=int, default=0, metavar="PORT",
                        help="the dashboard's port (default: a free one)")


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
    try:
        state, saved, keys = _open_state(args)
    except FleetStateError as exc:  # corrupt, foreign or unreadable: say which file, no traceback
        console.print(f"mdmsim fleet: state file {exc}", highlight=False, markup=False)
        return Exit.USAGE
    spec = FleetSpec(args.devices, seed=args.seed, os_mix=args.os_mix, kinds=args.kinds)
    enroll_url = args.enroll_url
    if args.server and enroll_url.startswith("/"):  # a path on --server
        enroll_url = args.server.rstrip("/") + enroll_url
    push = PushLinkClient(reactor, reconnect=True)  # a restarted server is found again; time down is counted
    if args.push_link != "none":
        host, _, port = args.push_link.rpartition(":")
        reactor.connectTCP(host, int(port), push)
    keeper = StateKeeper(state) if state is not None else None
    listeners = [keeper.saw] if keeper is not None else []
    if args.checkin_interval is not None:
        listeners.append(CheckinLoop(reactor, args.checkin_interval, seed=args.seed).saw)
    observer = FleetObserver(listeners)
    # A SCEP transaction's requests share a connection unless every request gets its own (per-request).
    scep_http = WebScepHttp(reactor, keep_alive=args.connections != ConnectionMode.PER_REQUEST.value)
    scep = ScepAgent(scep_http, reactor, keys)
    errors: Counter[str] = Counter()
    transport = MeteredTransport(HTTPSTransport(reactor, connections=args.connections), errors)
    fleet = Fleet(spec, clock=reactor, transport=transport, push=push, observer=observer, scep=scep)
    ramp = EnrollmentRamp(fleet, observer, clock=reactor, fetch_profile=lambda runner: fetch_enrollment(
        reactor, with_user(enroll_url, runner.machine.facts.user.user_id)), saved=saved)
    if saved:
        console.print(f"resuming {len(saved)} of {args.devices} devices from {args.state_dir}", highlight=False)
    ramp.start(args.ramp)
    started = reactor.seconds()
    ticker = task.LoopingCall(lambda: console.print(_progress(ramp, push, errors, reactor.seconds() - started,
                                                              args.push_link != "none"), highlight=False))
    ticker.clock = reactor
    ticker.start(2.0, now=False)
    reactor.callLater(args.duration, reactor.stop)
    if args.web:
        try:
            _dashboard(reactor, args, lambda: fleet_status(observer, errors, elapsed=reactor.seconds() - started,
                                                           duration=args.duration, devices=args.devices), console)
        except ListenError as exc:
            console.print(f"mdmsim fleet: {exc}", highlight=False, markup=False)
            return Exit.USAGE
    health = []  # the link as it was when the run ended, before the reactor's shutdown closes every connection
    reactor.addSystemEventTrigger("before", "shutdown", lambda: health.append(push.health()))
    interrupted = _run_until_stopped(reactor)
    push.stop_reconnecting()
    if keeper is not None:
        _close_state(keeper, keys, fleet, console)
    document = fleet_document(fleet, observer, errors, ramp, health[0] if args.push_link != "none" else None)
    verdict = fleet_verdict(document, args.devices, max_error_rate=args.max_error_rate, interrupted=interrupted)
    if keeper is not None:
        document["failures"]["state_saves"] = len(keeper.write_errors)
        verdict = with_failed_saves(verdict, len(keeper.write_errors), keeper.state.root)
    document.update(interrupted=interrupted, verdict={"exit_code": int(verdict.code),
                                                      "reasons": list(verdict.reasons)})
    for line in ramp.failures[:10]:
        console.print(f"enrollment download failed: {line}")
    Console().print(readiness_table(readiness_rows(fleet.runners)))
    if args.json:
        args.json.write_text(json.dumps(document, indent=1, sort_keys=True))
    for line in _failure_lines(document):
        console.print(line, highlight=False, markup=False)
    return verdict.code


def _dashboard(reactor: Any, args: argparse.Namespace, read: Any, console: Console) -> None:
    """--web: the live dashboard on this run's reactor; its streams close as the run ends."""
    from .live.dashboard import serve_dashboard

    publisher, url = serve_dashboard(reactor, f"mdmsim fleet: {args.devices} devices", read, args.web_port)
    reactor.addSystemEventTrigger("before", "shutdown", publisher.finish, "the run ended")
    console.print(f"mdmsim fleet: live dashboard at {url}", highlight=False, markup=False, soft_wrap=True)


def _open_state(args: argparse.Namespace) -> tuple[FleetStateDir | None, dict[int, Any], RSAKeyPool]:
    """The state directory, its saved devices and the key pool (kept there, topped up to --key-pool)."""
    if args.state_dir is None:
        keys = RSAKeyPool()
        keys.fill(args.key_pool)
        return None, {}, keys
    state = FleetStateDir.open(args.state_dir, args.seed)
    saved = state.load(args.devices)
    try:
        keys = RSAKeyPool.load(state.key_pool) if state.key_pool.exists() else RSAKeyPool()
    except (OSError, ValueError) as exc:
        raise FleetStateError(state.key_pool, f"is not a PEM file of RSA keys ({exc})") from None
    if len(keys) < args.key_pool:
        keys.fill(args.key_pool - len(keys))
        _save_pool(keys, state.key_pool)  # made once: a crash later does not lose them
    return state, saved, keys


def _save_pool(keys: RSAKeyPool, path: Path) -> None:
    """The pool's file replaced whole (a temporary file, 0600, renamed over it), never left half-written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    keys.save(temporary)
    os.replace(temporary, path)


def _close_state(keeper: StateKeeper, keys: RSAKeyPool, fleet: Fleet, console: Console) -> None:
    keeper.flush(fleet.runners)
    try:
        _save_pool(keys, keeper.state.key_pool)  # what is left: the keys handed out live in their devices' files
    except OSError as exc:
        keeper.write_errors.append(f"{keeper.state.key_pool}: {exc}")
    console.print(f"state: {keeper.saved} device saves in {keeper.state.root}", highlight=False)
    for line in keeper.write_errors[:10]:
        console.print(f"state not saved: {line}", highlight=False, markup=False)


def _run_until_stopped(reactor: Any) -> bool:
    """Run the reactor; True when Ctrl-C stopped it (the report is still written, then exit 130)."""
    interrupted: list[bool] = []

    def on_sigint(signum: int, frame: Any) -> None:
        if not interrupted:
            interrupted.append(True)
            reactor.callFromThread(reactor.stop)

    reactor.callWhenRunning(signal.signal, signal.SIGINT, on_sigint)  # after Twisted installs its own
    reactor.run()
    return bool(interrupted)


def _progress(ramp: EnrollmentRamp, push: PushLinkClient, errors: Counter[str], elapsed: float,
              push_wanted: bool) -> str:
    line = ramp.progress(elapsed)
    if errors:
        line += "  errors " + ", ".join(f"{kind} {n}" for kind, n in sorted(errors.items()))
    if push_wanted:
        health = push.health()
        if not health.connected or health.down_seconds:
            line += f"  push link {'up' if health.connected else 'DOWN'} ({health.down_seconds:.0f} s down"
            line += f", {health.missed_while_down} push(es) missed)" if health.missed_while_down else ")"
    return line


def _failure_lines(document: dict[str, Any]) -> list[str]:
    failures = document["failures"]
    lines = [f"enrolled {document['enrolled']}, failed {document['enrollment_failures']}, unfinished "
             f"{failures['unfinished']}, stalled {failures['stalled_devices']}"]
    if failures["enrollment"]:
        lines.append("enrollment failures by kind: " + ", ".join(f"{k} {n}" for k, n in failures["enrollment"].items()))
    if failures["requests"]:
        lines.append("request failures by kind: " + ", ".join(f"{k} {n}" for k, n in failures["requests"].items()))
    link = failures["push_link"]
    if link:
        lines.append(f"push link: {'connected' if link['connected'] else 'DOWN at the end'}, down "
                     f"{link['down_seconds']:.1f} s, {link['disconnects']} drop(s), {link['connect_failures']} "
                     f"failed connect(s), {link.get('missed_while_down', 0)} push(es) missed while unreachable")
    verdict = document["verdict"]
    lines.append(f"verdict: exit {verdict['exit_code']}" + (": " + "; ".join(verdict["reasons"])
                                                            if verdict["reasons"] else ": the run did what was asked"))
    return lines
