"""`mdmsim load`: load-test push and check-in performance with N simulated devices over real TLS.

By default our own server runs in a separate process on loopback; --target points the fleet at any MDM server.
Exit codes: see the table at the end of --help (the same for every mdmsim command).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from rich.console import Console

from device_sim.fleet import DEFAULT_KINDS, DEFAULT_OS_MIX, parse_mix, parse_os_mix
from mdm_world.durations import parse_duration

from .cli_fleet import add_connection_arguments, add_web_arguments, fraction, push_link_address
from .exit_codes import Exit, RunFigures, Verdict, epilog, judge
from .live.web import ListenError
from .load.config import Realism
from .load.orchestrator import LoadError, LoadOptions, LoadRun
from .load.progress import LiveProgress, detail_lines, summary_table
from .load.rollout import BUILTIN_EXCHANGE, DELIVERIES, RolloutError, RolloutPlan
from .load.stages import Stages, StagesError
from .load.thresholds import Threshold, ThresholdError, evaluate, flat_metrics

EXIT_OK, EXIT_ERROR, EXIT_THRESHOLD = Exit.OK, Exit.USAGE, Exit.THRESHOLD  # the names tests and scripts used


def _threshold(text: str) -> Threshold:
    try:
        return Threshold.parse(text)
    except ThresholdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_fraction = fraction


def _stages(text: str) -> Stages:
    try:
        return Stages.parse(text)
    except StagesError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mix(text: str, parse=parse_mix):
    try:
        return parse(text)
    except ValueError as exc:  # an unknown iOS version's message names the simulated ones
        raise argparse.ArgumentTypeError(str(exc)) from None


def _os_mix(text: str):
    return _mix(text, parse_os_mix)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("load", help="load-test check-ins, pushes and a profile rollout",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=epilog("Failed requests count against --max-error-rate; injected "
                                                 "faults (--network-error-rate) do not: they were asked for."))
    for add_group in (_run_arguments, _work_arguments, _target_arguments, _realism_arguments, _result_arguments):
        add_group(parser)
    parser.set_defaults(func=run)

def _run_arguments(parser: argparse.ArgumentParser) -> None:
    fleet = parser.add_argument_group("the run")
    fleet.add_argument("--devices", type=int, default=100, help="simulated devices (default 100)")
    fleet.add_argument("--stages", type=_stages, metavar="DURATION:DEVICES,...",
                       help="ramp the active device count stage by stage like k6, e.g. 1m:1000,5m:1000,1m:0 "
                            "(replaces --devices, --ramp and --duration; devices above the target stop checking "
                            "in and ignore pushes)")
    fleet.add_argument("--ramp", type=parse_duration, default=10.0,
                       help="spread enrollments over this long, e.g. 60s (default 10s)")
    fleet.add_argument("--duration", type=parse_duration, default=60.0,
                       help="how long the run lasts from the first enrollment, e.g. 5m (default 60s)")
    fleet.add_argument("--after-enrollment", type=parse_duration,
                       help="end the run this long after every device has enrolled (--duration still caps it)")
    fleet.add_argument("--processes", type=int, default=1,
                       help="fleet worker processes; their statistics are merged (default 1)")
    fleet.add_argument("--seed", type=int, default=1, help="fleet seed: same seed, same devices")
    fleet.add_argument("--os-mix", type=_os_mix, default=DEFAULT_OS_MIX, help="iOS versions with weights")
    fleet.add_argument("--kinds", type=_mix, default=DEFAULT_KINDS, help="device kinds with weights")

def _work_arguments(parser: argparse.ArgumentParser) -> None:
    work = parser.add_argument_group("what the server is asked to do")
    work.add_argument("--rollout", metavar="SETTING",
                      help="roll a profile out to the fleet's label during the run and measure its delivery: a "
                           "setting id (Apply to Label, needs the server's V2 labels API), a .mobileconfig file "
                           f"(InstallProfile to every enrolled device), or '{BUILTIN_EXCHANGE}' (a built-in "
                           "Exchange profile with a PKCS#12 identity)")
    work.add_argument("--rollout-delivery", choices=DELIVERIES,
                      help="create the --rollout setting (a .json file, or 'exchange' for a built-in Exchange "
                           "setting) with this delivery: 'declaration' (or 'auto', declarations from iOS 17) "
                           "rolls it out by DDM, and a device counts once its status report shows the account "
                           "declaration active and valid")
    work.add_argument("--rollout-at", type=parse_duration,
                      help="when to start the rollout, after the first enrollment (default: once every device "
                           "has enrolled); the run goes on past --duration until the rollout is complete")
    work.add_argument("--rollout-timeout", type=parse_duration, default=120.0,
                      help="give up waiting for the rollout this long after it started (default 120s)")
    work.add_argument("--sync-interval", type=parse_duration,
                      help="sync policy for the fleet (the server pushes each device once per interval; needs "
                           "the server's V2 sync policies API), e.g. 60m")

def _target_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("the target (default: our own server, started on loopback)")
    target.add_argument("--target", metavar="URL",
                        help="enrollment profile URL of any MDM server speaking the protocol (e.g. what `mdmsim "
                             "serve` prints: https://localhost:8443/mdm/enroll?token=...); devices get pushes only "
                             "through an mdmsim push link (--push-link): elsewhere use --checkin-interval")
    target.add_argument("--push-link", type=push_link_address,
                        help="HOST:PORT of the target's push link (mdmsim servers), or 'none': devices then get "
                             "no pushes (use --checkin-interval for load)")
    target.add_argument("--admin-user", default="admin", help="the target's admin API user (rollout)")
    target.add_argument("--admin-password", default=os.environ.get("MDMSIM_ADMIN_PASSWORD"),
                        help="the target's admin API password (env MDMSIM_ADMIN_PASSWORD)")
    target.add_argument("--ca-file", help="PEM CA the target's TLS certificate chains to (admin and metrics)")
    target.add_argument("--server-pid", type=int, help="watch this local process's CPU and RSS (a --target here)")
    target.add_argument("--no-metrics", action="store_true", help="do not scrape the target's GET /metrics")
    target.add_argument("--memory", action="store_true", help="our server keeps state in memory, not SQLite")

def _realism_arguments(parser: argparse.ArgumentParser) -> None:
    realism = parser.add_argument_group("realism")
    add_connection_arguments(realism)
    realism.add_argument("--think", type=parse_duration, default=0.0,
                         help="device think time before each request (uniform 0.5x-1.5x), e.g. 50ms")
    realism.add_argument("--checkin-interval", type=parse_duration,
                         help="devices also check in by themselves this often (closed-loop load; 0 = back to "
                              "back); without it devices check in only when pushed, as iOS does")
    realism.add_argument("--not-now-rate", type=_fraction, default=0.0,
                         help="answer NotNow to commands that allow it at this rate, e.g. 5%%")
    realism.add_argument("--network-error-rate", type=_fraction, default=0.0,
                         help="requests failing as a dropped connection (the device retries), e.g. 1%%")
    realism.add_argument("--offline-fraction", type=_fraction, default=0.0,
                         help="devices that ignore pushes (switched off, no signal)")
    realism.add_argument("--timeout", type=parse_duration, default=30.0, help="request timeout (default 30s)")
    realism.add_argument("--apns-delay", type=parse_duration, default=0.0, help="our server's APNs delay")
    realism.add_argument("--apns-jitter", type=parse_duration, default=0.0, help="our server's APNs jitter")
    realism.add_argument("--apns-drop-rate", type=_fraction, default=0.0, help="our server's APNs drop rate")
    realism.add_argument("--apns-gateway", action="store_true",
                         help="our server pushes through an `mdmsim apns` process (its HTTP/2 provider client, a "
                              "push certificate) and the fleet attaches to that gateway's push link")

def _result_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("results")
    out.add_argument("--threshold", type=_threshold, action="append", default=[],
                       help="pass/fail rule, repeatable, e.g. 'checkin.p95<200ms', 'errors.count==0', "
                          "'rollout.p100<=30s'; a failed one makes the exit code 99")
    out.add_argument("--max-error-rate", type=_fraction, default=0.0,
                     help="failed requests tolerated before the run fails (exit 1), e.g. 0.1%% (default 0)")
    out.add_argument("--json", type=Path, help="write the full report as JSON")
    out.add_argument("--csv", metavar="PREFIX", help="write PREFIX_stats.csv, PREFIX_history.csv, ...")
    out.add_argument("--html", type=Path, help="write a self-contained HTML report with plots")
    add_web_arguments(out, "the run")


def options_from(args: argparse.Namespace) -> LoadOptions:
    if args.stages is not None:
        args.devices, args.duration, args.ramp = args.stages.peak, args.stages.total, 0.0
    if args.devices < 1 or args.processes < 1 or args.processes > args.devices:
        raise LoadError("--devices must be at least 1 and --processes from 1 to --devices")
    if args.push_link == "none" and args.checkin_interval is None:
        Console(stderr=True).print("mdmsim load: --push-link none: devices get no pushes and check in only when "
                                   "they enroll (add --checkin-interval for check-in load)", highlight=False)
    rollout = None
    if args.rollout:
        rollout = RolloutPlan.parse(args.rollout, args.rollout_at, args.rollout_delivery)
    realism = Realism(connections=args.connections, think=args.think, not_now_rate=args.not_now_rate,
                      network_error_rate=args.network_error_rate, offline_fraction=args.offline_fraction,
                      timeout=args.timeout, checkin_interval=args.checkin_interval)
    apns = {"delay": args.apns_delay, "jitter": args.apns_jitter, "drop_rate": args.apns_drop_rate}
    return LoadOptions(
        devices=args.devices, duration=args.duration, ramp=args.ramp, processes=args.processes, seed=args.seed,
        after_enrollment=args.after_enrollment,
        target=args.target, push_link=args.push_link, admin_user=args.admin_user,
        admin_password=args.admin_password, ca_file=args.ca_file, metrics=not args.no_metrics,
        server_pid=args.server_pid, rollout=rollout, sync_interval=args.sync_interval,
        rollout_timeout=args.rollout_timeout, realism=realism,
        apns={k: v for k, v in apns.items() if v}, in_memory=args.memory, os_mix=args.os_mix, kinds=args.kinds,
        stages=args.stages.stages if args.stages is not None else (), live=args.web,
        apns_gateway=args.apns_gateway,
    )


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    board: list = []  # --web's dashboard, once started: closed after the report files are written
    try:
        code = _measure_and_conclude(args, console, board)
    finally:
        for dashboard in board:
            dashboard.close("the run ended")
    return code


def _measure_and_conclude(args: argparse.Namespace, console: Console, board: list) -> int:
    try:
        options = options_from(args)
        board.extend(_dashboard(args, console))
        with tempfile.TemporaryDirectory(prefix="mdmsim-load-") as workdir, LiveProgress(console) as live:
            progress = _both(live, *(dashboard.latest for dashboard in board))
            report = LoadRun(options, Path(workdir), progress=progress).run()
    except LoadError as exc:
        console.print(f"mdmsim load: {exc}", highlight=False, markup=False)
        return exc.code
    except (RolloutError, ListenError) as exc:
        console.print(f"mdmsim load: {exc}", highlight=False, markup=False)
        return Exit.USAGE
    except KeyboardInterrupt:  # before the workers ran, or a second Ctrl-C: the children were stopped
        console.print("mdmsim load: interrupted before anything was measured; no report", highlight=False)
        return Exit.INTERRUPTED
    code = conclude(report, args, interrupted=report["interrupted"])
    for dashboard in board:
        dashboard.close(f"exit {int(code)}")
    return code


def _dashboard(args: argparse.Namespace, console: Console) -> list:
    """--web: the live dashboard on loopback, its reactor in a thread of its own (this run blocks)."""
    if not args.web:
        return []
    from twisted.internet import reactor  # the CLI is the edge: the one reactor of this process

    from .live.dashboard import ThreadedDashboard

    board = ThreadedDashboard(reactor, f"mdmsim load: {args.devices} devices", args.web_port)
    board.start()
    console.print(f"mdmsim load: live dashboard at {board.url}", highlight=False, markup=False, soft_wrap=True)
    return [board]


def _both(*consumers):
    """One status, every consumer: the progress line and the dashboard read the same dict."""
    def show(status: dict) -> None:
        for consumer in consumers:
            consumer(status)
    return show


def conclude(report: dict, args: argparse.Namespace, *, interrupted: bool = False,
             incomplete: str | None = None) -> Exit:
    """Thresholds, the verdict, the files and the tables, for a run's report (or a merged one); `incomplete`:
    why the figures do not cover the whole run (a merge of an interrupted run), which fails it."""
    thresholds = evaluate(args.threshold, flat_metrics(report))
    report["thresholds"] = [verdict.to_json() for verdict in thresholds]
    verdict = judge(figures(report), max_error_rate=args.max_error_rate,
                    thresholds_failed=sum(not v.passed for v in thresholds), interrupted=interrupted)
    if incomplete and verdict.code in (Exit.OK, Exit.THRESHOLD):
        verdict = Verdict(Exit.FAILED, (incomplete, *verdict.reasons))
    report["verdict"] = {"exit_code": int(verdict.code), "reasons": list(verdict.reasons)}
    _write(report, args)
    Console().print(summary_table(report))
    for line in [*detail_lines(report), *verdict_lines(verdict)]:
        Console().print(line, highlight=False, markup=False)
    return verdict.code


def figures(report: dict) -> RunFigures:
    """What the verdict needs from a load report (also a merged one)."""
    by_kind = report["errors"]["by_kind"]
    failures = report.get("failures") or {}
    link = failures.get("push_link")
    return RunFigures(
        devices=report["enrollment"]["devices"], enrolled=report["enrollment"]["enrolled"],
        failed=report["enrollment"]["failed"], requests=report["checkin"]["count"],
        unfinished=failures.get("unfinished_enrollments", 0),
        errors=report["checkin"]["errors"] - by_kind.get("injected", 0),
        failures={f"enrollment.{kind}": n for kind, n in failures.get("enrollment", {}).items()},
        push_link_down=link is not None and not link["connected"])


def verdict_lines(verdict: Verdict) -> list[str]:
    if verdict.code is Exit.OK:
        return ["verdict: the run did what was asked (exit 0)"]
    return [f"verdict: exit {int(verdict.code)}: " + "; ".join(verdict.reasons)]


def _write(report: dict, args: argparse.Namespace) -> None:
    from .load.html_report import write_html  # matplotlib takes a second to import: only when asked
    from .load.reports import write_csv, write_json

    if args.json:
        write_json(report, args.json)
    if args.csv:
        write_csv(report, args.csv)
    if args.html:
        write_html(report, args.html)
