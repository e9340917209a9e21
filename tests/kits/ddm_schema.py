"""Test-side validator of DDM documents: reads Apple's declarative YAML directly (declarations, protocol
documents, status items) and reports keys, types, ranges, presence and iOS versions that do not conform.
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

import yaml

from kits.corpus import SCHEMA, require
from kits.schema_validator import _TYPES, _ios, support_at

DECLARATIVE = SCHEMA / "declarative"


@functools.cache
def _by(folder: str, field: str) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(require(DECLARATIVE / folder).rglob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        name = (document.get("payload") or {}).get(field)
        if name:
            out[name] = document
    return out


def declaration_types() -> list[str]:
    return sorted(name for name in _by("declarations", "declarationtype") if name != "any")


def check_declaration(declaration: dict[str, Any], os_version: str = "17.0") -> list[str]:
    """Problems with a declaration's JSON: DeclarationBase at the top, then its type's Payload keys."""
    base = _by("declarations", "declarationtype")["any"]
    problems = _keys("declaration", base["payloadkeys"], declaration, _ios(base["payload"], {}), os_version,
                     skip_subkeys={"Payload"})
    document = _by("declarations", "declarationtype").get(declaration.get("Type"))
    if document is None:
        return [*problems, f"declaration Type {declaration.get('Type')!r} is not in the schema"]
    ios = _ios(document["payload"], {})
    support = support_at(ios, os_version)
    if support not in ("supported", "deprecated_but_honoured"):
        problems.append(f"{declaration['Type']} is {support} on iOS {os_version}")
    payload = declaration.get("Payload")
    if isinstance(payload, dict):
        problems += _keys(declaration["Type"], document.get("payloadkeys") or [], payload, ios, os_version)
    return problems


def check_protocol(request_type: str, document: dict[str, Any], os_version: str = "17.0") -> list[str]:
    """Problems with a protocol document (TokensResponse, DeclarationItemsResponse, StatusReport)."""
    spec = _by("protocol", "requesttype")[request_type]
    return _keys(request_type, spec["payloadkeys"], document, _ios(spec["payload"], {}), os_version)


def check_status_item(name: str, value: Any, os_version: str = "17.0") -> list[str]:
    """Problems with one status item's value (`management.declarations`, ...)."""
    spec = _by("status", "statusitemtype").get(name)
    if spec is None:
        return [f"status item {name!r} is not in the schema"]
    (key,) = [key for key in spec["payloadkeys"] if key["key"] == name]
    return _value(name, key, value, _ios(spec["payload"], {}), os_version)


def check_credential(credential_type: str, document: dict[str, Any], os_version: str = "17.0") -> list[str]:
    """Problems with the JSON document behind an asset's DataURL (`com.apple.credential.identity`, ...):
    Type names the credential type; <data> travels as base64 text."""
    spec = _by("declarations", "credentialtype")[credential_type]
    problems = [] if document.get("Type") == credential_type else [f"Type is not {credential_type!r}"]
    body = {key: value for key, value in document.items() if key != "Type"}
    for key in spec["payloadkeys"]:
        if key.get("type") == "<data>" and isinstance(body.get(key["key"]), str):
            try:
                body[key["key"]] = base64.b64decode(body[key["key"]], validate=True)
            except binascii.Error:
                problems.append(f"{credential_type}.{key['key']} is not base64")
    return problems + _keys(credential_type, spec["payloadkeys"], body, _ios(spec["payload"], {}), os_version)


def _keys(where: str, spec: list[dict[str, Any]], value: Any, ios: dict[str, Any], os_version: str,
          skip_subkeys: frozenset[str] | set[str] = frozenset()) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where} must be a dictionary, not {type(value).__name__}"]
    subkeys = {sub["key"]: sub for sub in spec}
    any_key = next((sub for name, sub in subkeys.items() if name.startswith("ANY")), None)
    problems = []
    for name, item in value.items():
        sub = subkeys.get(name, any_key)
        if sub is None:
            problems.append(f"{where}.{name} is not in the schema")
            continue
        sub_ios = _ios(sub, ios)
        if name in skip_subkeys:
            sub = {key: v for key, v in sub.items() if key != "subkeys"}
        problems += _value(f"{where}.{name}", sub, item, sub_ios, os_version)
    for name, sub in subkeys.items():
        if sub.get("presence") == "required" and not name.startswith("ANY") and name not in value \
                and support_at(_ios(sub, ios), os_version) == "supported":
            problems.append(f"{where}.{name} is required")
    return problems


def _value(where: str, key: dict[str, Any], value: Any, ios: dict[str, Any], os_version: str) -> list[str]:
    support = support_at(ios, os_version)
    if support in ("not_on_ios", "not_yet", "removed"):
        return [f"{where} is {support.replace('_', ' ')} on iOS {os_version}"]
    kind = _TYPES.get(key.get("type", ""))
    if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        return [f"{where} must be {key['type']}, not {type(value).__name__}"]
    if key.get("rangelist") and not isinstance(value, dict | list) and value not in key["rangelist"]:
        return [f"{where} = {value!r} is not one of {key['rangelist']}"]
    if isinstance(value, dict) and key.get("subkeys"):
        return _keys(where, key["subkeys"], value, ios, os_version)
    if isinstance(value, list) and key.get("subkeys"):
        (item,) = key["subkeys"]
        return [p for element in value for p in _value(f"{where}[]", item, element, _ios(item, ios), os_version)]
    return []
