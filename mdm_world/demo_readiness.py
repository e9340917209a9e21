"""The demo's readiness view: what devices report beside what the server expects, drift highlighted.

Device view: each simulated device's own readiness records. Server view: GET /api/v2/devices/{id}/readiness.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .demo_setup import DemoWorld

COMPARED = ("signing", "encryption", "encrypt_by_default", "per_message_switch")


def device_view(record: Any) -> dict[str, Any]:
    return {"signing": record.signing.state.value, "encryption": record.encryption.state.value,
            "encrypt_by_default": record.encrypt_by_default, "per_message_switch": record.per_message_switch}


def server_view(account: dict[str, Any]) -> dict[str, Any]:
    return {"signing": account["signing"]["state"], "encryption": account["encryption"]["state"],
            "encrypt_by_default": account["encryptByDefault"], "per_message_switch": account["perMessageSwitch"]}


def compare(demo: DemoWorld) -> list[dict[str, Any]]:
    """One row per (iOS version, Exchange profile): device-view counts, server-view counts, drifting devices."""
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"devices": 0, "device": Counter(), "server": Counter(), "drift": []})
    names = {demo.settings["exchange-1"]: "Exchange 1", demo.settings["exchange-2"]: "Exchange 2"}
    for runner in demo.world.fleet.runners:
        facts = runner.machine.facts
        account = demo.account_of(runner)
        mine = runner.machine.readiness.get(account)
        answer = demo.admin.get(f"/api/v2/devices/{facts.device_id}/readiness")
        theirs = next((a for a in answer["accounts"] if a["payloadIdentifier"] == account), None)
        setting = account.split(".")[-2]
        group = groups[(str(facts.os_version), names.get(setting, setting))]
        group["devices"] += 1
        mine_view = device_view(mine) if mine else None
        theirs_view = server_view(theirs) if theirs else None
        group["device"][_label(mine_view)] += 1
        group["server"][_label(theirs_view)] += 1
        if mine_view != theirs_view:
            group["drift"].append({"device": facts.device_id, "device_view": mine_view, "server_view": theirs_view})
    return [{"os_version": version, "profile": profile, **values}
            for (version, profile), values in sorted(groups.items(), key=lambda item: (_key(item[0][0]),
                                                                                      item[0][1]))]


def _label(view: dict[str, Any] | None) -> str:
    if view is None:
        return "no account"
    flags = "by default" if view["encrypt_by_default"] else ("per message" if view["per_message_switch"] else "off")
    return f"sign {view['signing']} · encrypt {view['encryption']} ({flags})"


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "device": dict(sorted(row["device"].items())), "server": dict(sorted(row["server"].items()))}
            for row in rows]
