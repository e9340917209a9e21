"""The exit codes every `mdmsim` command shares, and the verdict of a run of devices from what it measured.

0 only when the run did what was asked; the reasons for any other code are kept for the user to read.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Exit(IntEnum):
    OK = 0  # the run did what was asked
    FAILED = 1  # devices failed to enroll, too many errors, target unreachable, nothing ran, an expectation failed
    USAGE = 2  # bad flags or a setup that cannot run (argparse uses 2 too)
    THRESHOLD = 99  # a --threshold failed (k6's convention)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), after writing what was measured so far


EPILOG = """exit codes:
  0    the run did what was asked
  1    devices failed to enroll, requests failed beyond --max-error-rate, the target was unreachable,
       nothing ran (0 devices), the push link stayed down, or an expectation failed
  2    usage or setup error (bad flag value, a port in use, a broken scenario)
  99   a --threshold failed
  130  interrupted (Ctrl-C); reports are written first, marked interrupted"""


def interruptible(command: str) -> Callable[[Callable[[Any], int]], Callable[[Any], int]]:
    """A command's `run(args)` that answers Ctrl-C with one line and exit 130, never a traceback."""
    def wrap(run: Callable[[Any], int]) -> Callable[[Any], int]:
        @functools.wraps(run)
        def guarded(args: Any) -> int:
            try:
                return run(args)
            except KeyboardInterrupt:
                print(f"mdmsim {command}: interrupted", file=sys.stderr)
                return Exit.INTERRUPTED
        return guarded
    return wrap


def epilog(extra: str = "") -> str:
    """The shared exit-code table for a command's --help, with what is particular to that command."""
    return EPILOG + (f"\n\n{extra}" if extra else "")


@dataclass(frozen=True)
class RunFigures:
    """What a run of simulated devices measured, in the terms the verdict needs."""

    devices: int  # asked for
    enrolled: int
    failed: int  # enrollments that failed for good, or are still retrying after a real error
    requests: int
    errors: int  # failed requests, injected faults (--network-error-rate) left out: those were asked for
    failures: Mapping[str, int] = field(default_factory=dict)  # every failure by kind, for the reasons
    push_link_down: bool = False  # a push link was asked for and is not connected at the end
    unfinished: int = 0  # still enrolling at the end after an injected fault only: excused


@dataclass(frozen=True)
class Verdict:
    code: Exit
    reasons: tuple[str, ...]


def judge(figures: RunFigures, *, max_error_rate: float = 0.0, thresholds_failed: int = 0,
          interrupted: bool = False) -> Verdict:
    """The run's exit code: interrupted first, then failures (1), then thresholds (99)."""
    reasons = []
    if figures.devices == 0 or figures.requests == 0:
        reasons.append("nothing ran: no request was answered" if figures.devices else "nothing ran: 0 devices")
    if figures.enrolled == 0 and figures.devices and _refused(figures.failures):
        reasons.append("the target was unreachable (connections refused)")
    if figures.failed:
        reasons.append(f"{figures.failed} of {figures.devices} device(s) failed to enroll")
    missing = figures.devices - figures.enrolled - figures.failed - figures.unfinished
    if missing > 0:
        reasons.append(f"{missing} of {figures.devices} device(s) never enrolled and reported no failure")
    rate = figures.errors / figures.requests if figures.requests else 0.0
    if rate > max_error_rate:
        reasons.append(f"{figures.errors} of {figures.requests} requests failed ({100 * rate:.2f}%), more than "
                       f"--max-error-rate {100 * max_error_rate:g}%")
    if figures.push_link_down:
        reasons.append("the push link was down at the end: devices could get no pushes")
    if interrupted:
        return Verdict(Exit.INTERRUPTED, ("interrupted", *reasons))
    if reasons:
        return Verdict(Exit.FAILED, tuple(reasons))
    if thresholds_failed:
        return Verdict(Exit.THRESHOLD, (f"{thresholds_failed} threshold(s) failed",))
    return Verdict(Exit.OK, ())


def _refused(failures: Mapping[str, int]) -> bool:
    return any(kind.endswith("refused") and count for kind, count in failures.items())
