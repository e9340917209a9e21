"""`mdmsim scenario list|run|new`: the scenario library, running one with a timeline and a verdict, a new one.

Exit codes: 0 every expectation holds, 1 an expectation failed, 2 the scenario itself is broken (a step raised,
no expectation to judge), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
from pathlib import Path

from rich.console import Console
from rich.table import Table

import scenarios
from mdm_world.scenario import Scenario, ScenarioBroken, ScenarioResult
from mdm_world.scenario_scaffold import ScaffoldError, write_scaffold

from .exit_codes import epilog, interruptible


def library() -> list[Path]:
    folder = Path(next(iter(scenarios.__path__)))
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def load(path: Path) -> Scenario:
    if not path.exists():
        raise ScenarioBroken(f"no scenario file at {path}")
    spec = importlib.util.spec_from_file_location(f"mdmsim_scenario_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ScenarioBroken(f"{path} cannot be loaded: {type(exc).__name__}: {exc}") from None
    found = getattr(module, "scenario", None)
    if not isinstance(found, Scenario):
        raise ScenarioBroken(f"{path} defines no `scenario = Scenario(...)`")
    return found


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scenario", help="list or run scenario scripts", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the scenario library with each one's purpose")
    listing.set_defaults(func=run_list)
    running = actions.add_parser("run", help="run one scenario in virtual time",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=epilog("For a scenario: 1 means an expectation failed, 2 the scenario is "
                                               "broken (a step raised, it cannot load, it expects nothing)."))
    running.add_argument("path", type=Path, help="a scenario file, or a name from `mdmsim scenario list`")
    running.add_argument("--seed", type=int, help="override the scenario's seed")
    running.add_argument("--json", type=Path, help="write the timeline and verdicts as JSON")
    running.add_argument("--real-network", action="store_true",
                         help="run on real sockets: the server on loopback TLS ports, devices over HTTPS with "
                              "the push link, time sped up by --time-factor")
    running.add_argument("--time-factor", type=float, default=60.0,
                         help="virtual seconds per real second with --real-network (default 60)")
    running.set_defaults(func=run_one)
    scaffolding = actions.add_parser("new", help="write a new scenario file that runs and passes as written")
    scaffolding.add_argument("name", help="the scenario's name, e.g. push-storm (file: push_storm.py)")
    scaffolding.add_argument("--dir", type=Path, default=Path("."), help="where to write it (default: here)")
    scaffolding.set_defaults(func=run_new)


def run_list(args: argparse.Namespace) -> int:
    table = Table(title="scenarios")
    table.add_column("file")
    table.add_column("purpose")
    for path in library():
        try:
            table.add_row(path.name, load(path).purpose)
        except ScenarioBroken as exc:
            table.add_row(path.name, f"[red]broken: {exc}[/red]")
    Console().print(table)
    return 0


def run_new(args: argparse.Namespace) -> int:
    console = Console()
    try:
        path = write_scaffold(args.name, args.dir)
    except ScaffoldError as exc:
        console.print(f"[red]cannot scaffold:[/red] {exc}")
        return 2
    console.print(f"wrote {path}; run it with: mdmsim scenario run {path}", highlight=False)
    return 0


def resolve(path: Path) -> Path:
    if path.exists() or path.suffix:
        return path
    return Path(next(iter(scenarios.__path__))) / f"{path}.py"


@interruptible("scenario")
def run_one(args: argparse.Namespace) -> int:
    console = Console()
    try:
        scenario = load(resolve(args.path))
    except ScenarioBroken as exc:
        console.print(f"[red]scenario broken:[/red] {exc}")
        return 2
    result = _run_real(scenario, args) if args.real_network else scenario.run(seed=args.seed)
    if result is None:  # Ctrl-C stopped the reactor
        raise KeyboardInterrupt
    print_result(console, scenario, result)
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=1, sort_keys=True) + "\n")
    return result.exit_code


def _run_real(scenario: Scenario, args: argparse.Namespace) -> ScenarioResult | None:
    from twisted.internet import reactor

    outcome: list = []
    interrupted: list[bool] = []

    def start() -> None:
        d = scenario.run_real(reactor, factor=args.time_factor, seed=args.seed)
        d.addBoth(outcome.append).addBoth(lambda _: reactor.stop())

    def on_sigint(signum, frame) -> None:
        interrupted.append(True)
        reactor.callFromThread(reactor.stop)

    reactor.callWhenRunning(start)
    reactor.callWhenRunning(signal.signal, signal.SIGINT, on_sigint)  # after Twisted's own handler
    reactor.run()
    if interrupted and not outcome:
        return None
    if not outcome or not isinstance(outcome[0], ScenarioResult):
        failure = outcome[0] if outcome else None
        message = failure.getErrorMessage() if failure is not None else "the reactor stopped early"
        return ScenarioResult(scenario.name, args.seed or scenario.seed, [], [], f"real-network run failed: {message}")
    return outcome[0]


def print_result(console: Console, scenario: Scenario, result: ScenarioResult) -> None:
    console.print(f"[bold]{scenario.name}[/bold] (seed {result.seed}): {scenario.purpose}")
    for t, text in result.timeline:
        console.print(f"  {_clock(t)}  {text}", highlight=False)
    if result.broken:
        console.print(f"[red]scenario broken:[/red] {result.broken}")
        return
    table = Table(title="expectations")
    table.add_column("expectation")
    table.add_column("verdict")
    table.add_column("detail")
    for outcome in result.outcomes:
        verdict = "[green]pass[/green]" if outcome.passed else "[red]FAIL[/red]"
        table.add_row(outcome.name, verdict, outcome.detail)
    console.print(table)


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"
