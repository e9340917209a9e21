"""The end of an `mdmsim fleet` run: every failure by kind, devices left half-way, and the run's verdict.

Pure over what the run kept (observer, runners, the metered transport's counts, the push link's health).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from device_sim.push_link_client import LinkHealth
from device_sim.report import fleet_json
from device_sim.stats import FleetObserver, enrollment_tally, not_enrolled_reason

from .exit_codes import Exit, RunFigures, Verdict, judge
from .load.meter import reason_kind


def fleet_document(fleet: Any, observer: FleetObserver, errors: Mapping[str, int], ramp: Any,
                   link: LinkHealth | None) -> dict[str, Any]:
    """`fleet_json` with the failures by kind, enrollment failures counting those still retrying, downloads."""
    document = fleet_json(fleet.runners, observer)
    document["failures"] = fleet_failures(observer, fleet.runners, errors, link)
    document["enrollment_failures"] = observer.enrollment_failures  # now with those still retrying
    document.update(downloads=len(fleet.runners), download_failures=len(ramp.failures) if ramp else 0)
    return document


def fleet_failures(observer: FleetObserver, runners: list[Any], errors: Mapping[str, int],
                   link: LinkHealth | None) -> dict[str, Any]:
    """Devices still retrying their enrollment after a real failure are marked failed in the observer."""
    tally = enrollment_tally(runners, observer.last_ok())
    for runner in runners:
        record = observer.devices[runner.machine.facts.index]
        if runner.machine.phase.value in ("new", "authenticating", "token-updating") and \
                record.enrollment_failure is None and getattr(runner, "last_error_kind", None) != "injected":
            record.enrollment_failure = not_enrolled_reason(getattr(runner, "last_error_kind", None))
    reasons = Counter(r.enrollment_failure for r in observer.devices.values() if r.enrollment_failure)
    by_kind: Counter[str] = Counter()
    for reason, count in reasons.items():
        by_kind[reason_kind(reason)] += count
    return {"enrollment": dict(sorted(by_kind.items())), "enrollment_reasons": dict(reasons.most_common(20)),
            "requests": dict(sorted(errors.items())), "push_link": None if link is None else link.to_json(),
            "stalled_devices": tally["stalled"], "unfinished": tally["unfinished"]}


def fleet_verdict(document: Mapping[str, Any], devices: int, *, max_error_rate: float,
                  interrupted: bool = False) -> Verdict:
    """The exit code of a fleet run from its JSON document (`fleet_json` plus `failures`)."""
    messages = document["messages"].values()
    requests = sum(m["count"] for m in messages)
    injected = document["failures"]["requests"].get("injected", 0)
    link = document["failures"]["push_link"]
    figures = RunFigures(
        devices=devices, enrolled=document["enrolled"], failed=document["enrollment_failures"],
        requests=requests + document["downloads"], errors=sum(m["errors"] for m in messages) - injected
        + document["download_failures"], unfinished=document["failures"]["unfinished"],
        failures={f"enrollment.{k}": n for k, n in document["failures"]["enrollment"].items()},
        push_link_down=link is not None and not link["connected"])
    return judge(figures, max_error_rate=max_error_rate, interrupted=interrupted)


def with_failed_saves(verdict: Verdict, failed_saves: int, state_dir: object) -> Verdict:
    """A run whose --state-dir saves failed did not do what was asked: the next run cannot resume from it."""
    if not failed_saves:
        return verdict
    reason = f"{failed_saves} save(s) to --state-dir {state_dir} failed: the next run cannot resume those devices"
    code = verdict.code if verdict.code is Exit.INTERRUPTED else Exit.FAILED
    return Verdict(code, (*verdict.reasons, reason))
