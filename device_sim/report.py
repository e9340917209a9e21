"""Fleet reports: every device's facts, profiles, errors and readiness (JSON), and the summary table.

The summary groups S/MIME readiness by OS version and account, the view an MDM engineer checks first.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from rich.table import Table

from .runner import DeviceRunner
from .stats import FleetObserver


def device_json(runner: DeviceRunner, observer: FleetObserver) -> dict[str, Any]:
    machine = runner.machine
    facts = machine.facts
    record = observer.devices.get(facts.index)
    return {
        "index": facts.index, "device_id": facts.device_id, "kind": facts.kind.value,
        "os_version": str(facts.os_version), "build_version": facts.build_version,
        "product_name": facts.product_name, "serial_number": facts.serial_number, "user": facts.user.user_id,
        "phase": machine.phase.value,
        "profiles": sorted(p.identifier for p in machine.profiles.installed()),
        "enrollment_failure": record.enrollment_failure if record else None,
        "errors": record.errors if record else [],
        "readiness": {account: r.to_json() for account, r in sorted(machine.readiness.items())},
    }


def readiness_rows(runners: list[DeviceRunner]) -> list[dict[str, Any]]:
    """Per (OS version, account): how many devices are in each signing and encryption state."""
    groups: dict[tuple[str, str], dict[str, Counter[str]]] = defaultdict(
        lambda: {"signing": Counter(), "encryption": Counter()}
    )
    for runner in runners:
        version = str(runner.machine.facts.os_version)
        for account, record in runner.machine.readiness.items():
            group = groups[(version, account)]
            group["signing"][record.signing.state.value] += 1
            group["encryption"][record.encryption.state.value] += 1
    rows = []
    ordered = sorted(groups.items(), key=lambda item: (_version_key(item[0][0]), item[0][1]))
    for (version, account), counters in ordered:
        rows.append({"os_version": version, "account": account,
                     "signing": dict(sorted(counters["signing"].items())),
                     "encryption": dict(sorted(counters["encryption"].items()))})
    return rows


def readiness_table(rows: list[dict[str, Any]], title: str = "S/MIME readiness") -> Table:
    table = Table(title=title)
    for column in ("iOS", "account", "signing", "encryption"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["os_version"], row["account"], _counts(row["signing"]), _counts(row["encryption"]))
    return table


def fleet_json(runners: list[DeviceRunner], observer: FleetObserver) -> dict[str, Any]:
    return {
        "devices": [device_json(r, observer) for r in runners],
        "readiness": readiness_rows(runners),
        "messages": {name: {"count": s.count, "errors": s.errors, "p50": s.percentile(0.5),
                            "p95": s.percentile(0.95), "p99": s.percentile(0.99)}
                     for name, s in sorted(observer.messages.items())},
        "commands": {f"{kind}:{status}": n for (kind, status), n in sorted(observer.commands.items())},
        "enrolled": observer.enrolled,
        "enrollment_failures": observer.enrollment_failures,
    }


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counter.items()) or "-"


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))
