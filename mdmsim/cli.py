"""`mdmsim` entry point: one tool, one subcommand per job, `--help` on each.

Each subcommand module offers `add_parser(subparsers)` and sets `func`; exit codes are the run's verdict.
"""

from __future__ import annotations

import argparse
import sys

from . import cli_apns, cli_demo, cli_fleet, cli_load, cli_profile, cli_report, cli_scenario, cli_serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdmsim", description="Apple MDM emulator for iOS fleets: server, devices, scenarios, load."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (cli_demo, cli_serve, cli_fleet, cli_scenario, cli_load, cli_report, cli_profile, cli_apns):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `serve --workers` starts workers with the same
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
