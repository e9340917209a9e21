"""The one JSON API resource shape: HTTP Basic, a route table, and every failure as {"error": reason}.

The V1 device/queue API, the V2 settings/users API and the V2 labels/policies API are route tables mounted on it.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

from twisted.web import resource
from twisted.web.server import Request

from ..admin.contracts import AdminError
from ..storage.interface import StorageError
from .json_io import ApiError, write_json

Handler = Callable[..., tuple[int, Any]]
Route = tuple[bytes, re.Pattern[str], Handler]
Authorise = Callable[[Request], Any]  # raises ApiError(401), or returns False, to refuse


def basic_auth(username: str, password: str) -> Authorise:
    """HTTP Basic against one user's credentials, compared in constant time; raises ApiError(401) to refuse."""
    expected = (username.encode(), password.encode())

    def authorise(request: Request) -> None:
        ok_user = hmac.compare_digest(request.getUser(), expected[0])
        ok_password = hmac.compare_digest(request.getPassword(), expected[1])
        if not (ok_user and ok_password):
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
            if self.authorise(request) is False:
                raise ApiError(401, "admin credentials required (HTTP Basic)")
            handler, params = self.route(request)
            status, value = handler(request, **params)
        except ApiError as exc:
            if exc.status == 401:
                request.setHeader("www-authenticate", 'Basic realm="mdmsim admin"')
            return write_json(request, exc.status, {"error": exc.reason})
        except AdminError as exc:
            return write_json(request, exc.status, {"error": exc.reason})
        except StorageError as exc:
            return write_json(request, 400, {"error": exc.reason})
        return write_json(request, status, value)

    def route(self, request: Request) -> tuple[Handler, dict[str, str]]:
        path = request.path.decode("utf-8", "replace").rstrip("/")
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match:
                allowed = True
                if method == request.method:
                    return handler, {name: unquote(value) for name, value in match.groupdict().items()}
        raise ApiError(405 if allowed else 404, f"no route for {request.method.decode()} {path}")
