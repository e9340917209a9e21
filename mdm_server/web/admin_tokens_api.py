"""The V2 admin routes for enrollment tokens: create (the secret is shown once), list, show, revoke.

A token is per-user (`userId`) or per-batch; `expiresInSeconds` and `maxUses` limit it. Revoked tokens stay
listed so that the identities they issued can be traced; their identities may no longer re-enroll a device.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.web.server import Request

from mdm_protocol.clocks import Clock

from ..enrollment_tokens import MAX_NAME, EnrollmentToken, TokenRegistry
from .api_shapes import PAGE_PARAMS, page
from .json_api import Route, accepts
from .json_io import ApiError, read_json

Handler = Callable[..., tuple[int, Any]]
PATH = "/api/v2/enrollment-tokens"
_FIELDS = {"name", "userId", "expiresInSeconds", "maxUses", "allowUserParameter"}


class EnrollmentTokensAPI:
    def __init__(self, tokens: TokenRegistry, *, clock: Clock) -> None:
        self.tokens, self.clock = tokens, clock
        one = PATH + r"/(?P<token_id>[^/]+)"
        table: list[tuple[bytes, str, Handler]] = [
            (b"GET", PATH, self.list_tokens),
            (b"POST", PATH, self.create),
            (b"GET", one, self.show),
            (b"DELETE", one, self.revoke),
        ]
        self.routes: list[Route] = [(method, re.compile(path), handler) for method, path, handler in table]

    @accepts(*PAGE_PARAMS)
    def list_tokens(self, request: Request) -> tuple[int, Any]:
        now = self.clock.seconds()
        return 200, page(request, self.tokens.all(), key=lambda t: t.token_id, render=lambda t: t.to_json(now))

    def create(self, request: Request) -> tuple[int, Any]:
        now = self.clock.seconds()
        token, secret = create_token(self.tokens, read_json(request), now)
        return 201, {**token.to_json(now), "token": secret}

    def show(self, request: Request, token_id: str) -> tuple[int, Any]:
        token = self.tokens.get(token_id)
        if token is None:
            raise ApiError(404, f"no enrollment token {token_id!r}")
        return 200, token.to_json(self.clock.seconds())

    def revoke(self, request: Request, token_id: str) -> tuple[int, Any]:
        if self.tokens.revoke(token_id) is None:
            raise ApiError(404, f"no enrollment token {token_id!r}")
        return 200, {"deleted": token_id, "revoked": True}


def create_token(tokens: TokenRegistry, body: Any, now: float) -> tuple[EnrollmentToken, str]:
    """A token from the API's JSON body (the console's form posts the same fields); ApiError says why not."""
    if not isinstance(body, dict) or set(body) - _FIELDS:
        raise ApiError(400, f"an enrollment token takes only {', '.join(sorted(_FIELDS))}", "invalid_field")
    name, user = _text(body, "name", ""), _text(body, "userId", None)
    lifetime, uses = _positive(body, "expiresInSeconds"), _positive(body, "maxUses")
    delegates = body.get("allowUserParameter", False)
    if not isinstance(delegates, bool) or (delegates and user is not None):
        raise ApiError(400, "allowUserParameter is a boolean, and only for a token without userId",
                       "invalid_field")
    return tokens.create(
        now=now, name=name or "", user_id=user, expires_at=None if lifetime is None else now + lifetime,
        max_uses=None if uses is None else int(uses), allow_user_parameter=delegates)


def _text(body: dict[str, Any], name: str, default: str | None) -> str | None:
    value = body.get(name, default)
    if value is default:
        return value
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise ApiError(400, f"{name} must be a string of 1 to {MAX_NAME} characters", "invalid_field")
    return value


def _positive(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ApiError(400, f"{name} must be a positive number", "invalid_field")
    if name == "maxUses" and not isinstance(value, int):
        raise ApiError(400, "maxUses must be a whole number", "invalid_field")
    return value
