"""The console's enrollment tokens page: create (per user or per batch, with expiry and use limit; the secret
is shown once), list with each token's status, revoke. Validated by the admin API's own `create_token`.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from mdm_protocol.clocks import Clock

from ..enrollment_tokens import TokenRegistry
from ..web.admin_tokens_api import create_token
from ..web.json_io import ApiError
from .admin_area import AdminArea, SectionRoute
from .pages import field, when
from .sessions import Session

_TOKEN = r"(?P<token_id>[^/]+)"


class TokenPages:
    def __init__(self, area: AdminArea, tokens: TokenRegistry, *, clock: Clock) -> None:
        self.area, self.tokens, self.clock = area, tokens, clock

    def routes(self) -> list[SectionRoute]:
        return [
            (b"GET", "/tokens", self.listing),
            (b"POST", "/tokens", self.create),
            (b"POST", f"/tokens/{_TOKEN}/revoke", self.revoke),
        ]

    def listing(self, request: Request, session: Session, status: int = 200, **messages: Any) -> bytes:
        now = self.clock.seconds()
        rows = [{**token.to_json(now), "expires": when(token.expires_at), "created": when(token.created_at)}
                for token in self.tokens.all()]
        return self.area.page(request, session, "tokens.html", status, tokens=rows, **messages)

    def create(self, request: Request, session: Session) -> bytes:
        try:
            token, secret = create_token(self.tokens, _body(request), self.clock.seconds())
        except ApiError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        host = (request.getHeader("host") or "localhost").strip()
        return self.listing(request, session, 201, secret=secret, secret_url=f"https://{host}/mdm/enroll?token="
                            f"{secret}", notice=f"enrollment token {token.token_id} created: copy the token now, "
                            "it is shown only once")

    def revoke(self, request: Request, session: Session, token_id: str) -> bytes:
        if self.tokens.revoke(token_id) is None:
            return self.listing(request, session, 404, error=f"no enrollment token {token_id!r}")
        return self.listing(request, session, notice=f"enrollment token {token_id} revoked")


def _body(request: Request) -> dict[str, Any]:
    """The API's JSON body; empty fields are left out, numbers that do not parse stay text (the API says why)."""
    body: dict[str, Any] = {}
    for name in ("name", "userId"):
        if field(request, name).strip():
            body[name] = field(request, name).strip()
    for name in ("expiresInSeconds", "maxUses"):
        raw = field(request, name).strip()
        if raw:
            body[name] = int(raw) if raw.isdigit() else raw
    return body
