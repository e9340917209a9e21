"""The one JSON API resource shape: HTTP Basic, a route table, and every failure as {"code", "message"}.

The V1 device/queue API, the V2 settings/users API and the V2 labels/policies API are route tables mounted on it.
"""

from __future__ import annotations

import errno
import hmac
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from twisted.web import resource
from twisted.web.server import Request

from ..admin.contracts import AdminError
from ..storage.interface import FULL_REASON, FULL_RETRY_AFTER, StorageError, StorageFullError
from .json_io import ApiError, error_body, is_json_type, write_json
from .login_throttle import LoginThrottle

Handler = Callable[..., tuple[int, Any]]
Route = tuple[bytes, re.Pattern[str], Handler]
Authorise = Callable[[Request], Any]  # raises ApiError(401), or returns False, to refuse
F = TypeVar("F", bound=Callable[..., Any])

WRITES = (b"POST", b"PUT", b"PATCH")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
log = logging.getLogger(__name__)


def accepts(*names: str) -> Callable[[F], F]:
    """The query parameters a handler reads; JsonAPI refuses any other (a misspelt filter must not match all)."""

    def mark(handler: F) -> F:
        handler.query_params = frozenset(names)  # type: ignore[attr-defined]
        return handler

    return mark


def public(handler: F) -> F:
    """A route served without credentials (the API's own description, which holds no data)."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


def query_params(handler: Handler) -> frozenset[str]:
    return getattr(handler, "query_params", frozenset())


def basic_auth(username: str, password: str, *, throttle: LoginThrottle | None = None) -> Authorise:
    """HTTP Basic against one user's credentials, compared in constant time; raises ApiError(401) to refuse.

    With a throttle, an address that failed too often is answered 429 (with Retry-After) before any check."""
    expected = (username.encode(), password.encode())

    def authorise(request: Request) -> None:
        address = str(getattr(request.getClientAddress(), "host", "unknown"))
        wait = throttle.retry_after(address) if throttle else None
        if wait is not None:
            request.setHeader("retry-after", str(wait))
            raise ApiError(429, f"too many failed logins from this address; retry in {wait} s")
        ok_user = hmac.compare_digest(request.getUser(), expected[0])
        ok_password = hmac.compare_digest(request.getPassword(), expected[1])
        if not (ok_user and ok_password):
            if throttle:
                throttle.failed(address)
            raise ApiError(401, "admin credentials required (HTTP Basic)")

    return authorise


class JsonAPI(resource.Resource):
    isLeaf = True

    def __init__(self, routes: Sequence[Route] = (), authorise: Authorise | None = None) -> None:
        super().__init__()
        self.routes: list[Route] = list(routes)
        self.authorise: Authorise = authorise or (lambda request: None)

    def render(self, request: Request) -> bytes:
        try:
            status, value = self._answer(request)
        except ApiError as exc:
            if exc.status == 401:
                request.setHeader("www-authenticate", 'Basic realm="mdmsim admin"')
            return write_json(request, exc.status, error_body(exc.status, exc.reason, exc.code))
        except AdminError as exc:
            return write_json(request, exc.status, error_body(exc.status, exc.reason))
        except StorageFullError as exc:
            request.setHeader("retry-after", str(FULL_RETRY_AFTER))
            return write_json(request, 503, error_body(503, exc.reason, "storage_full"))
        except StorageError as exc:
            return write_json(request, 400, error_body(400, exc.reason))
        except Exception as exc:  # a bug: logged with its traceback, answered in JSON like everything else
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # a write beside the database: disk full
                log.error("admin API %s %r: %s", request.method.decode(), request.uri, exc)
                request.setHeader("retry-after", str(FULL_RETRY_AFTER))
                return write_json(request, 503, error_body(503, FULL_REASON, "storage_full"))
            log.exception("admin API %s %r failed", request.method.decode(), request.uri)
            return write_json(request, 500, error_body(500, "internal error; the server log has the details"))
        return write_json(request, status, value)

    def _answer(self, request: Request) -> tuple[int, Any]:
        _check_query(request)
        try:
            handler, params = self.route(request)
        except ApiError:
            handler = None  # an unknown route is told only to an authorised caller
        if not getattr(handler, "public", False) and self.authorise(request) is False:
            raise ApiError(401, "admin credentials required (HTTP Basic)")
        if handler is None:
            handler, params = self.route(request)
        unknown = sorted(name for name in _arg_names(request) if name not in query_params(handler))
        if unknown:
            valid = ", ".join(sorted(query_params(handler))) or "none"
            raise ApiError(400, f"unknown query parameter {unknown[0]!r} (valid: {valid})", "unknown_parameter")
        if request.method in WRITES and not is_json_type(request.getHeader(b"content-type")):
            raise ApiError(415, "request body must be sent as Content-Type: application/json")
        return handler(request, **params)

    def route(self, request: Request) -> tuple[Handler, dict[str, str]]:
        _strict(request.path, "path")  # refused whole if malformed; ids are decoded one by one below
        path = request.path.decode("latin-1").rstrip("/")
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match:
                allowed = True
                if method == request.method:
                    return handler, {name: _strict(value.encode("latin-1"), "path") for name, value in
                                     match.groupdict().items()}
        shown = _strict(path.encode("latin-1"), "path")
        raise ApiError(405 if allowed else 404, f"no route for {request.method.decode()} {shown}")


def _strict(raw: bytes, where: str) -> str:
    """Percent-decode as UTF-8, refusing malformed escapes and bytes that are not UTF-8 (no silent U+FFFD)."""
    if _BAD_PERCENT.search(raw):
        raise ApiError(400, f"malformed percent-escape in the {where}", "bad_encoding")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"the {where} is not UTF-8 once percent-decoded", "bad_encoding") from None


def _check_query(request: Request) -> None:
    query = request.uri.partition(b"?")[2]
    if _BAD_PERCENT.search(query):
        raise ApiError(400, "malformed percent-escape in the query", "bad_encoding")
    args: dict[bytes, list[bytes]] = request.args or {}
    for name, values in args.items():
        for raw in (name, *values):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "a query parameter is not UTF-8 once percent-decoded", "bad_encoding") from None


def _arg_names(request: Request) -> list[str]:
    args: dict[bytes, list[bytes]] = request.args or {}
    return [name.decode("utf-8") for name in args]
