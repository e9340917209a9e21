"""JSON in and out for the admin API: strict request bodies, plist values that JSON cannot hold, error answers.

Plist data (bytes) travels as {"$data": "<base64>"}, dates as ISO 8601 strings, plist UIDs as {"$uid": n}.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import plistlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from twisted.web.server import Request

MAX_DEPTH = 32  # deeper than any command, setting or label body; Python's parser would hit its recursion limit
JSON_TYPES = ("application/json",)

# A stable machine-readable code per status, for errors that name no more precise one.
DEFAULT_CODES = {
    400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "body_too_large", 415: "unsupported_media_type", 429: "too_many_requests",
    500: "internal_error", 503: "unavailable",
}


class ApiError(Exception):
    """An admin-API failure with its HTTP status, a stable `code` and a message for the JSON body."""

    def __init__(self, status: int, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code or DEFAULT_CODES.get(status, "error")


def error_body(status: int, message: str, code: str | None = None) -> dict[str, str]:
    return {"code": code or DEFAULT_CODES.get(status, "error"), "message": message}


def _refuse_constant(name: str) -> Any:
    raise ApiError(400, f"{name} is not a JSON number (RFC 8259 has no NaN or Infinity)", "invalid_json")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf: refused like the Infinity literal
        raise ApiError(400, f"number {text[:40]} is out of range", "invalid_json")
    return value


def read_json(request: Request) -> Any:
    raw = request.content.read()
    if not raw:
        raise ApiError(400, "request body must be a JSON document", "invalid_json")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(400, f"request body nests deeper than {MAX_DEPTH} levels", "json_too_deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None
    if _depth(value) > MAX_DEPTH:
        raise ApiError(400, f"request body nests deeper than {MAX_DEPTH} levels", "json_too_deep")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of a decoded document, without recursion (the document came from outside)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def is_json_type(content_type: bytes | None) -> bool:
    """application/json, with parameters (charset) or as a +json suffix type."""
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def write_json(request: Request, status: int, value: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    return json.dumps(to_json(value), indent=1, sort_keys=True, allow_nan=False).encode() + b"\n"


def to_json(value: Any) -> Any:
    """Plist-shaped values to JSON-shaped ones; whatever JSON cannot hold is rendered, never raised on."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # strict parsers refuse NaN and Infinity
    if isinstance(value, bytes):
        return {"$data": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, plistlib.UID):  # binary plists carry UIDs (NSKeyedArchiver); devices may report them
        return {"$uid": value.data}
    if isinstance(value, Mapping):  # dicts and the read-only mappingproxy views storage hands out
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return str(value)


def from_json(value: Any) -> Any:
    """JSON-shaped values back to plist-shaped ones ({"$data": base64} → bytes)."""
    if isinstance(value, dict):
        if set(value) == {"$data"}:
            try:
                return base64.b64decode(value["$data"], validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise ApiError(400, f"$data is not base64: {exc}") from None
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if value is None:
        raise ApiError(400, "null cannot be sent to a device (plists have no null)")
    return value
