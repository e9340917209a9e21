"""Test-side check of a device's DDM status report against Apple's YAML (protocol/statusreport, status/*).

Built on kits.ddm_schema (which reads the YAML directly): the envelope as a StatusReport, then every status item
found in the nested StatusItems. JSON carries `<data>` as base64 text; it is decoded here before the type check.
"""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any

from kits import ddm_schema

# Keys of status items the schema types <data>; JSON carries them as base64 text.
_DATA_KEYS = {"security.certificate.list": ("data",)}


def _item_names() -> set[str]:
    return set(ddm_schema._by("status", "statusitemtype"))


def flatten(status_items: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """{"management": {"declarations": v}} -> {"management.declarations": v}; unknown paths are problems."""
    names, found, problems = _item_names(), {}, []
    for key, value in status_items.items():
        name = f"{prefix}{key}"
        if name in names:
            found[name] = value
        elif isinstance(value, dict) and any(item.startswith(name + ".") for item in names):
            inner, more = flatten(value, name + ".")
            found.update(inner)
            problems += more
        else:
            problems.append(f"StatusItems.{name} is not a status item of the schema")
    return found, problems


def _decoded(name: str, value: Any) -> tuple[Any, list[str]]:
    keys = _DATA_KEYS.get(name)
    if not keys or not isinstance(value, list):
        return value, []
    value, problems = copy.deepcopy(value), []
    for entry in value:
        for key in keys:
            if isinstance(entry, dict) and isinstance(entry.get(key), str):
                try:
                    entry[key] = base64.b64decode(entry[key], validate=True)
                except binascii.Error:
                    problems.append(f"{name}[].{key} is not base64")
    return value, problems


def check_report(document: dict[str, Any], os_version: str) -> list[str]:
    """Every problem of a status report's JSON at `os_version`: envelope, then each status item's value."""
    problems = ddm_schema.check_protocol("StatusReport", document, os_version)
    items, more = flatten(document.get("StatusItems") or {})
    problems += more
    for name, value in items.items():
        decoded, bad = _decoded(name, value)
        problems += bad + ddm_schema.check_status_item(name, decoded, os_version)
    return problems


def item_names(document: dict[str, Any]) -> list[str]:
    return sorted(flatten(document.get("StatusItems") or {})[0])
