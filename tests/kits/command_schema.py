"""Test-side validator of command responses: reads Apple's command YAML directly (responsekeys) and checks the
keys, types, presence and iOS versions of a device's answer; the device code never reads this schema.
"""

from __future__ import annotations

import functools
from typing import Any

import yaml

from kits.corpus import SCHEMA, require
from kits.schema_validator import _TYPES, _ios, support_at

# Keys every command report carries beside the command's own (SPEC section 2).
REPORT_KEYS = frozenset({"Status", "UDID", "EnrollmentID", "CommandUUID", "ErrorChain", "UserID",
                         "EnrollmentUserID", "RequestType"})
# Where real devices and the schema disagree, the capture wins: Settings answers an array of per-item results,
# each naming its Item (micromdm/micromdm#637), where the YAML describes one dictionary without Item.
ARRAY_OF_DESCRIBED = frozenset({("Settings", "Settings")})
EXTRA_KEYS = {("Settings", "Settings"): {"Item"}}


@functools.cache
def commands() -> dict[str, dict[str, Any]]:
    """Every command's parsed YAML, by RequestType."""
    folder = require(SCHEMA / "mdm" / "commands")
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        request_type = (document.get("payload") or {}).get("requesttype")
        if request_type:
            out[request_type] = document
    return out


def command_ios(request_type: str) -> dict[str, Any]:
    """The command's iOS facts as the schema states them (introduced, supervised, sharedipad, ...)."""
    return commands()[request_type]["payload"]["supportedOS"].get("iOS") or {}


def check_response(request_type: str, report: dict[str, Any], os_version: str) -> list[str]:
    """Problems with `report` (a decoded command report) as an answer to `request_type` on `os_version`."""
    document = commands()[request_type]
    inherited = _ios(document["payload"], {})
    spec = {key["key"]: key for key in document.get("responsekeys") or []}
    problems = []
    for name, value in report.items():
        if name in REPORT_KEYS:
            continue
        key = spec.get(name)
        if key is None:
            problems.append(f"{request_type}: {name} is not a response key")
            continue
        problems += _value(request_type, (name,), key, value, _ios(key, inherited), os_version)
    if report.get("Status") == "Acknowledged":
        for name, key in spec.items():
            if key.get("presence") == "required" and name not in report \
                    and support_at(_ios(key, inherited), os_version) == "supported":
                problems.append(f"{request_type}: required {name} missing")
    return problems


def _value(request_type: str, path: tuple[str, ...], key: dict[str, Any], value: Any, ios: dict[str, Any],
           os_version: str) -> list[str]:
    where = f"{request_type}: {'.'.join(path)}"
    support = support_at(ios, os_version)
    if support in ("not_on_ios", "not_yet", "removed"):
        return [f"{where} is {support.replace('_', ' ')} on iOS {os_version}"]
    if (request_type, path[0]) in ARRAY_OF_DESCRIBED and len(path) == 1:
        if not isinstance(value, list):
            return [f"{where} must be an array of results"]
        return [p for item in value for p in _dictionary(request_type, path, key, item, ios, os_version)]
    kind = _TYPES.get(key.get("type", ""))
    if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        return [f"{where} must be {key['type']}, not {type(value).__name__}"]
    if isinstance(value, dict) and key.get("subkeys"):
        return _dictionary(request_type, path, key, value, ios, os_version)
    if isinstance(value, list) and key.get("subkeys"):
        (item,) = key["subkeys"]
        return [p for element in value
                for p in _value(request_type, (*path, item["key"]), item, element, _ios(item, ios), os_version)]
    return []


def _dictionary(request_type: str, path: tuple[str, ...], key: dict[str, Any], value: Any, ios: dict[str, Any],
                os_version: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{request_type}: {'.'.join(path)} must be a dictionary"]
    subkeys = {sub["key"]: sub for sub in key["subkeys"]}
    any_key = next((sub for name, sub in subkeys.items() if name.startswith("ANY")), None)
    allowed = EXTRA_KEYS.get((request_type, path[0]), set()) if len(path) == 1 else set()
    problems = []
    for name, item in value.items():
        sub = subkeys.get(name, any_key)
        if sub is None:
            if name not in allowed:
                problems.append(f"{request_type}: {'.'.join((*path, name))} is not in the schema")
            continue
        problems += _value(request_type, (*path, name), sub, item, _ios(sub, ios), os_version)
    for name, sub in subkeys.items():
        if sub.get("presence") == "required" and not name.startswith("ANY") and name not in value \
                and support_at(_ios(sub, ios), os_version) == "supported":
            problems.append(f"{request_type}: {'.'.join((*path, name))} is required")
    return problems
