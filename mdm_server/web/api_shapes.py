"""The admin API's shared shapes: camelCase keys at the edge, and the one list envelope with cursor pages.

Every list answers {"items": [...], "nextCursor": str | null}; pass `cursor=<nextCursor>` for the next page.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

from twisted.web.server import Request

from ..admin.field_names import camel_name, snake_name
from .json_io import ApiError

T = TypeVar("T")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
PAGE_PARAMS = ("cursor", "limit")


def camel_keys(value: Any, opaque: Collection[str] = ()) -> Any:
    """snake_case keys to camelCase, recursively, except below keys in `opaque` (data: Apple's or a user's)."""
    if isinstance(value, dict):
        return {camel_name(str(k)): v if k in opaque else camel_keys(v, opaque) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [camel_keys(v, opaque) for v in value]
    return value


def snake_keys(value: Any, opaque: Collection[str] = ()) -> Any:
    """An admin's camelCase body to the model's snake_case (snake_case bodies pass through unchanged)."""
    if isinstance(value, dict):
        return {snake_name(k) if isinstance(k, str) else k: v if k in opaque else snake_keys(v, opaque)
                for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v, opaque) for v in value]
    return value


def arg(request: Request, name: str) -> str:
    """A query parameter, already checked as UTF-8 by JsonAPI ("" when absent)."""
    args: dict[bytes, list[bytes]] = request.args or {}
    return args.get(name.encode(), [b""])[0].decode("utf-8")


def limit_arg(request: Request) -> int:
    raw = arg(request, "limit")
    try:
        value = int(raw) if raw else DEFAULT_LIMIT
    except ValueError:
        raise ApiError(400, "limit must be an integer", "invalid_parameter") from None
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, f"limit must be from 1 to {MAX_LIMIT}", "invalid_parameter")
    return value


def envelope(items: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "nextCursor": next_cursor}


def page(request: Request, items: Iterable[T], key: Callable[[T], str],
         render: Callable[[T], Any]) -> dict[str, Any]:
    """One page of `items` in `key` order after the request's cursor (the last key of the previous page)."""
    cursor, limit = arg(request, "cursor"), limit_arg(request)
    ordered = sorted(items, key=key)
    after = [item for item in ordered if key(item) > cursor] if cursor else ordered
    chosen = after[:limit]
    more = len(after) > limit
    return envelope([render(item) for item in chosen], key(chosen[-1]) if more else None)
