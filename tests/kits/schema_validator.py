"""Test-side profile validator that reads Apple's schema YAML directly (never the generated catalogue).

Tests check what mdm_protocol builds and validates against this independent reading of the same schema.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any

import yaml

from kits.corpus import SCHEMA, require

# Every version field a key omits is inherited from its parent (enclosing key, then the payload).
_FIELDS = ("introduced", "deprecated", "removed")
_TYPES: dict[str, Any] = {
    "<string>": str, "<integer>": int, "<boolean>": bool, "<data>": bytes, "<date>": datetime.datetime,
    "<real>": (int, float), "<array>": list, "<dictionary>": dict,
}


@functools.cache
def _documents() -> dict[str, list[dict[str, Any]]]:
    """Every profile YAML by payload type, the file named after the type first (then its variants)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(require(SCHEMA / "mdm" / "profiles").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        out.setdefault(doc["payload"]["payloadtype"], []).append(doc)
    return out


@functools.cache
def schema(payload_type: str) -> dict[str, Any]:
    """The YAML of a payload type (TopLevel and CommonPayloadKeys included); skips without corpus.

    Variant files of one type (com.apple.extensiblesso(kerberos)) add the keys the main file lacks.
    """
    first, *variants = _documents()[payload_type]
    keys = list(first["payloadkeys"])
    for variant in variants:
        names = {key["key"] for key in keys}
        keys.extend(key for key in variant["payloadkeys"] if key["key"] not in names)
    return {**first, "payloadkeys": keys}


def payload_type_names() -> list[str]:
    """Every payload type the schema describes (not TopLevel or CommonPayloadKeys)."""
    return [name for name in _documents() if name not in ("TopLevel", "CommonPayloadKeys")]


def version_tuple(text: str) -> tuple[int, int, int]:
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def _ios(node: dict[str, Any], inherited: dict[str, Any]) -> dict[str, Any]:
    own = (node.get("supportedOS") or {}).get("iOS") or {}
    return {field: own.get(field, inherited.get(field)) for field in _FIELDS}


def support_at(ios: dict[str, Any], os_version: str) -> str:
    """The Support value (as text) of a key with iOS facts `ios` on `os_version`."""
    if ios["introduced"] in (None, "n/a"):
        return "not_on_ios"
    version = version_tuple(os_version)
    if version < version_tuple(ios["introduced"]):
        return "not_yet"
    if ios["removed"] and version >= version_tuple(ios["removed"]):
        return "removed"
    if ios["deprecated"] and version >= version_tuple(ios["deprecated"]):
        return "deprecated_but_honoured"
    return "supported"


def payload_keys(payload_type: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(keys, iOS facts) of a payload type, with the common payload keys added for real payload types.

    A type without a YAML file (unknown to iOS) is judged by the common payload keys alone.
    """
    known = isinstance(payload_type, str) and payload_type in _documents()
    if not known:
        doc = schema("CommonPayloadKeys")
        return list(doc["payloadkeys"]), _ios(doc["payload"], {})
    doc = schema(payload_type)
    ios = _ios(doc["payload"], {})
    keys = list(doc["payloadkeys"])
    if payload_type not in ("TopLevel", "CommonPayloadKeys"):
        own = {key["key"] for key in keys}
        keys = [key for key in schema("CommonPayloadKeys")["payloadkeys"] if key["key"] not in own] + keys
    return keys, ios


def key_support(payload_type: str, path: tuple[str, ...], os_version: str) -> str:
    """Walk `path` through the YAML, inheriting iOS facts, and judge it at `os_version`."""
    keys, ios = payload_keys(payload_type)
    node: dict[str, Any] | None = None
    for name in path:
        while node is not None and node["type"] == "<array>":
            node = (node.get("subkeys") or [None])[0]
            ios = _ios(node, ios) if node else ios
        candidates = keys if node is None else (node.get("subkeys") or [])
        node = next((key for key in candidates if key["key"] in (name, "ANY")), None)
        if node is None:
            return "unknown_key"
        ios = _ios(node, ios)
    return support_at(ios, os_version)


class SchemaCheck:
    """Collects problems and ignored keys for one payload (or the top level) against its YAML."""

    def __init__(self, os_version: str | None) -> None:
        self.os_version = os_version
        self.problems: list[str] = []
        self.ignored: list[tuple[Any, ...]] = []

    def read(self, ios: dict[str, Any]) -> bool:
        honoured = ("supported", "deprecated_but_honoured")
        return self.os_version is None or support_at(ios, self.os_version) in honoured

    def dictionary(self, keys: list[dict[str, Any]], value: dict[str, Any], ios: dict[str, Any],
                   path: tuple[Any, ...]) -> None:
        by_name = {key["key"]: key for key in keys}
        for key in keys:
            absent = key["key"] != "ANY" and key["key"] not in value
            if absent and key.get("presence") == "required" and self.read(_ios(key, ios)):
                self.problems.append(f"missing required {path + (key['key'],)}")
        for name, item in value.items():
            key = by_name.get(name) or by_name.get("ANY")
            if key is None or not self.read(_ios(key, ios)):
                self.ignored.append(path + (name,))
            else:
                self.value(key, item, _ios(key, ios), path + (name,))

    def value(self, key: dict[str, Any], value: Any, ios: dict[str, Any], path: tuple[Any, ...]) -> None:
        kind = key["type"]
        expected = _TYPES.get(kind)
        is_bool_posing = kind != "<boolean>" and isinstance(value, bool)
        if expected is not None and (not isinstance(value, expected) or is_bool_posing):
            self.problems.append(f"{path}: expected {kind}, got {type(value).__name__}")
            return
        if "rangelist" in key and value not in key["rangelist"]:
            self.problems.append(f"{path}: {value!r} not in {key['rangelist']}")
        bounds = key.get("range") or {}
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and not bounds.get("min", value) <= value <= bounds.get("max", value):
            self.problems.append(f"{path}: {value!r} outside {bounds}")
        subkeys = key.get("subkeys") or []
        if kind == "<dictionary>" and subkeys:
            self.dictionary(subkeys, value, ios, path)
        elif kind == "<array>" and subkeys:
            item = subkeys[0]
            repetition = item.get("repetition") or {}
            if not repetition.get("min", 0) <= len(value) <= repetition.get("max", len(value)):
                self.problems.append(f"{path}: {len(value)} items outside {repetition}")
            for index, element in enumerate(value):
                self.value(item, element, _ios(item, ios), path + (index,))


def check_payload(payload: dict[str, Any], os_version: str | None = None) -> SchemaCheck:
    """Problems and ignored key paths of one payload dictionary, by its own YAML plus CommonPayloadKeys."""
    keys, ios = payload_keys(payload.get("PayloadType"))
    check = SchemaCheck(os_version)
    check.dictionary(keys, payload, ios, ())
    return check


def check_profile(profile: dict[str, Any], os_version: str | None = None) -> list[str]:
    """Every problem in a profile dictionary: its top level, then each payload."""
    keys, ios = payload_keys("TopLevel")
    top = SchemaCheck(os_version)
    top.dictionary([key for key in keys if key["key"] != "PayloadContent"],
                   {name: value for name, value in profile.items() if name != "PayloadContent"}, ios, ())
    problems = list(top.problems)
    content = profile.get("PayloadContent")
    if not isinstance(content, list) or not all(isinstance(item, dict) for item in content):
        return [*problems, "PayloadContent must be an array of dictionaries"]
    for item in content:
        problems.extend(check_payload(item, os_version).problems)
    return problems


def ignored_keys(profile: dict[str, Any], os_version: str) -> set[tuple[Any, ...]]:
    """(PayloadIdentifier or None, *path) of every key a device at `os_version` would not read."""
    keys, ios = payload_keys("TopLevel")
    top = SchemaCheck(os_version)
    top.dictionary([key for key in keys if key["key"] != "PayloadContent"],
                   {name: value for name, value in profile.items() if name != "PayloadContent"}, ios, ())
    out = {(None, *path) for path in top.ignored}
    for item in profile.get("PayloadContent", []):
        out.update((item["PayloadIdentifier"], *path) for path in check_payload(item, os_version).ignored)
    return out
