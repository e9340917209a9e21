"""`mdmsim demo`: per-message S/MIME encryption end to end, in virtual time, in well under a minute.

A server and 200 simulated devices (iOS 9.3.3, 10.3, 12.0, 17.5) go through the brief's whole procedure;
then readiness per iOS version (device view vs server view) and a real S/MIME mail exchange.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mdm_world import demo_mail, demo_readiness, demo_setup

from .exit_codes import Exit, epilog, interruptible


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="per-message S/MIME encryption, end to end", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=epilog("The demo exits 1 when a device did not enroll, device and server "
                                                 "views of readiness drift, or a mail step did not behave as "
                                                 "expected (each expectation is checked against what happened)."))
    parser.add_argument("--devices", type=int, default=200, help="fleet size (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="fleet seed: same seed, same devices and verdicts")
    parser.add_argument("--json", type=Path, help="also write everything shown as JSON to this file")
    parser.add_argument("--web", action="store_true",
                        help="build the same world, then serve it as an interactive page on 127.0.0.1 (the URL, "
                             "with a secret token, is printed) until Ctrl-C: pick a device, flip the Exchange "
                             "setting's switches, send mail and see what arrives; --json is ignored")
    parser.add_argument("--web-port", type=int, default=0, metavar="PORT",
                        help="the page's port with --web (default: a free one)")
    parser.set_defaults(func=run)


@interruptible("demo")
def run(args: argparse.Namespace) -> int:
    if args.web:
        return run_web(args)
    console = Console()
    started = time.monotonic()
    console.print(f"[bold]mdmsim demo[/bold]: {args.devices} simulated devices, virtual time, seed {args.seed}")
    with console.status("enrolling devices and running the admin procedure…"):
        demo = demo_setup.build(args.devices, args.seed)
    for t, text in demo.timeline:
        console.print(f"  [dim]{_clock(t)}[/dim]  {text}", highlight=False)
    rows = demo_readiness.compare(demo)
    console.print(_readiness_table(rows))
    steps = demo_mail.exchange(demo)
    console.print(_mail_table(steps))
    drift = sum(len(row["drift"]) for row in rows)
    counts = demo_setup.summary_counts(demo)
    failures = judge(steps, drift, counts["enrolled"], args.devices)
    verdict = ("[green]every mail step behaved as docs/readiness.md says[/green]" if not failures
               else "[red]" + "; ".join(failures) + "[/red]")
    console.print(f"{verdict}; readiness drift between device and server views: {drift} device(s); "
                  f"{time.monotonic() - started:.1f}s wall time")
    if args.json:
        document = {"timeline": [{"t": t, "event": e} for t, e in demo.timeline],
                    "readiness": demo_readiness.jsonable(rows), "drift_devices": drift,
                    "mail": [step.__dict__ for step in steps], **counts,
                    "verdict": {"passed": not failures, "failures": failures}}
        args.json.write_text(json.dumps(document, indent=1, sort_keys=True, default=str) + "\n")
    return Exit.FAILED if failures else Exit.OK


def run_web(args: argparse.Namespace) -> int:
    """The demo's world behind a page on loopback, until Ctrl-C (exit 0: stopping it is how it ends)."""
    from twisted.internet import reactor  # the CLI is the edge: the one reactor of this process

    from .live.demo_actions import LiveDemo
    from .live.demo_site import DemoPages
    from .live.web import ListenError, SecretRoot, listen

    console = Console()
    console.print(f"[bold]mdmsim demo --web[/bold]: {args.devices} simulated devices, virtual time, seed {args.seed}")
    with console.status("enrolling devices and running the admin procedure…"):
        demo = demo_setup.build(args.devices, args.seed)
    try:
        _, url = listen(reactor, SecretRoot(DemoPages(LiveDemo(demo))), args.web_port)
    except ListenError as exc:
        console.print(f"mdmsim demo: {exc}", highlight=False, markup=False)
        return Exit.USAGE
    console.print(f"demo page: {url}", highlight=False, markup=False, soft_wrap=True)
    console.print("(only this URL works: its token keeps other local users out; Ctrl-C stops the demo)",
                  highlight=False)
    reactor.run()
    return Exit.OK


def judge(steps: list[demo_mail.MailStep], drift: int, enrolled: int, devices: int) -> list[str]:
    """Every way the demo can fail, from what happened; empty when it did what it shows."""
    failures = [f"mail step {step.title!r} misbehaved: {step.outcome}" for step in steps if not step.ok]
    if enrolled != devices:
        failures.append(f"{devices - enrolled} of {devices} device(s) did not enroll")
    if drift:
        failures.append(f"{drift} device(s) disagree with the server on readiness")
    return failures


def _readiness_table(rows: list[dict[str, Any]]) -> Table:
    out = Table(title="S/MIME readiness per iOS version: devices' own view vs the server's expectation")
    for column in ("iOS", "profile", "devices", "device view", "server view", "drift"):
        out.add_column(column)
    for row in rows:
        drift = len(row["drift"])
        out.add_row(row["os_version"], row["profile"], str(row["devices"]), _counts(row["device"]),
                    _counts(row["server"]), f"[bold red]{drift}[/bold red]" if drift else "[green]0[/green]")
    return out


def _counts(counter: Counter) -> str:
    return "\n".join(f"{n} × {label}" for label, n in sorted(counter.items()))


def _mail_table(steps) -> Table:
    table = Table(title="S/MIME mail between devices (real CMS, cryptography ≥ 50)")
    for column in ("step", "what happened", "as expected"):
        table.add_column(column)
    for index, step in enumerate(steps, 1):
        table.add_row(f"{index}. {step.title}", step.outcome, "[green]yes[/green]" if step.ok else "[red]no[/red]")
    return table


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
