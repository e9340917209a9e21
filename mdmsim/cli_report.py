"""`mdmsim report merge A.json B.json ...`: load reports from several hosts merged into one, exactly.

Percentiles come from the reports' raw HdrHistograms added together; counts and failures add up. The merged run
is judged like `mdmsim load` (same exit codes, --threshold and --max-error-rate).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from .cli_fleet import fraction
from .cli_load import _threshold, conclude
from .exit_codes import Exit, epilog
from .load.merge import MergeError, merge_reports


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="work with load reports (merge runs from several hosts)",
                                   description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    merge = actions.add_parser("merge", help="merge `mdmsim load --json` reports into one",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog=epilog("For a merge: 2 also when a file is not a load report or holds no "
                                             "raw histograms."))
    merge.add_argument("reports", nargs="+", type=Path, help="JSON reports written by `mdmsim load --json`")
    merge.add_argument("--threshold", type=_threshold, action="append", default=[],
                       help="pass/fail rule over the merged figures, as for `mdmsim load`")
    merge.add_argument("--max-error-rate", type=fraction, default=0.0,
                       help="failed requests tolerated in the merged run (default 0)")
    merge.add_argument("--json", type=Path, help="write the merged report as JSON")
    merge.add_argument("--csv", metavar="PREFIX", help="write the merged report's CSV files")
    merge.add_argument("--html", type=Path, help="write the merged report as HTML")
    merge.set_defaults(func=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        reports = [json.loads(path.read_text()) for path in args.reports]
        report = merge_reports(reports, [str(path) for path in args.reports])
    except (OSError, ValueError) as exc:  # MergeError is a ValueError, as is bad JSON
        kind = "" if isinstance(exc, MergeError) else f"{type(exc).__name__}: "
        console.print(f"mdmsim report merge: {kind}{exc}", highlight=False, markup=False)
        return Exit.USAGE
    # The merge itself was not interrupted (no 130), but an interrupted input leaves the merged run incomplete.
    return conclude(report, args, incomplete="an input run was interrupted: the merged run is incomplete"
                    if report["interrupted"] else None)
