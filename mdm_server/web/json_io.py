"""JSON in and out for the admin API: request bodies, plist values that JSON cannot hold, error answers.

Plist data (bytes) travels as {"$data": "<base64>"}, dates as ISO 8601 strings.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from twisted.web.server import Request


class ApiError(Exception):
    """An admin-API failure with its HTTP status and a reason for the JSON body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_json(request: Request) -> Any:
    raw = request.content.read()
    if not raw:
        raise ApiError(400, "request body must be a JSON document")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def write_json(request: Request, status: int, value: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    return json.dumps(to_json(value), indent=1, sort_keys=True).encode() + b"\n"


def to_json(value: Any) -> Any:
    """Plist-shaped values to JSON-shaped ones."""
    if isinstance(value, bytes):
        return {"$data": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):  # dicts and the read-only mappingproxy views storage hands out
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


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
