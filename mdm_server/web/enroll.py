"""GET /mdm/enroll: hands out an enrollment profile to an admin (HTTP Basic) or the holder of an enrollment token.

The user the profile binds comes from the token (per-user tokens), never from `?user=`, which only an admin or
a token that delegates it (the operator's default batch token) may use. With open enrollment anyone may fetch a
profile for any user (load tests). With a SCEP service the profile carries a SCEP payload and a fresh challenge.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from twisted.web import resource
from twisted.web.server import Request

from ..ca import CertificateAuthority
from ..enrollment import build_enrollment, build_scep_enrollment
from ..enrollment_tokens import ADMIN_TOKEN_ID, TokenRegistry, Verdict
from ..scep_service import ScepService

PROFILE_TYPE = "application/x-apple-aspen-config"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Grant:
    """Who may enroll this request: the token it spent (None: open enrollment) and the user it binds."""

    token_id: str | None
    user_id: str | None


class Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class EnrollResource(resource.Resource):
    isLeaf = True

    def __init__(
        self, authority: CertificateAuthority, *, topic: str, server_url: str, now: Callable[[], datetime],
        tokens: TokenRegistry, admin: tuple[str, str], scep: ScepService | None = None,
        open_enrollment: bool = False, sign: Callable[[bytes], bytes] | None = None, sign_message: bool = True,
    ) -> None:
        super().__init__()
        self.authority, self.topic, self.server_url, self.now = authority, topic, server_url, now
        self.scep, self.tokens, self.open_enrollment = scep, tokens, open_enrollment
        self._sign = sign  # the server's ProfileSigner.sign; None: profiles go out unsigned
        self.sign_message = sign_message  # the profile's SignMessage: False leaves identity to mutual TLS
        self._admin = (admin[0].encode(), admin[1].encode())

    def render_GET(self, request: Request) -> bytes:
        try:
            grant = self._grant(request)
        except Refusal as refusal:
            request.setResponseCode(refusal.status)
            if refusal.status == 401:
                request.setHeader("www-authenticate", 'Basic realm="mdmsim enrollment"')
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return (refusal.reason + "\n").encode()
        if self.scep is not None:
            profile = build_scep_enrollment(
                self.authority, server_url=self.server_url, topic=self.topic, scep_url=f"{self.server_url}/scep",
                challenge=self.scep.new_challenge(grant.user_id, grant.token_id), sign_message=self.sign_message,
            )
        else:
            profile = build_enrollment(
                self.authority, server_url=self.server_url, topic=self.topic, now=self.now(),
                user_id=grant.user_id, token_id=grant.token_id, sign_message=self.sign_message,
            ).profile
        request.setHeader("content-type", PROFILE_TYPE)
        request.setHeader("content-disposition", 'attachment; filename="enroll.mobileconfig"')
        return profile if self._sign is None else self._sign(profile)

    def _grant(self, request: Request) -> Grant:
        asked = _user_parameter(request)
        if self._is_admin(request):
            return Grant(ADMIN_TOKEN_ID, asked)
        secret = request.args.get(b"token", [b""])[0].decode("utf-8", "replace")
        if not secret:
            if self.open_enrollment:
                return Grant(None, asked)
            raise Refusal(401, "enrollment needs admin credentials or ?token=<enroll token>")
        now = self.now().timestamp()
        token = self.tokens.find(secret)
        verdict = Verdict.UNKNOWN if token is None else token.judge(now)
        if token is None and self.open_enrollment:
            return Grant(None, asked)
        if token is None or verdict is not Verdict.VALID:
            log.warning("enrollment refused: token %s is %s", token.token_id if token else "?", verdict.value)
            raise Refusal(401, f"enrollment token {verdict.value}; enrollment needs admin credentials or "
                               "?token=<enroll token>")
        user = token.user_id
        if asked is not None and asked != token.user_id:
            if token.user_id is not None or not token.allow_user_parameter:
                # The stranger binding (?user=alice with a token not issued for alice): refused, nothing spent.
                log.warning("enrollment token %s refused: it may not bind user %r", token.token_id, asked)
                raise Refusal(403, "this enrollment token does not let the request choose the user "
                                   "(ask an admin for a per-user token)")
            user = asked
        verdict, _ = self.tokens.redeem(secret, now)  # spends one use; judged again inside its transaction
        if verdict is not Verdict.VALID:
            raise Refusal(401, f"enrollment token {verdict.value}")
        return Grant(token.token_id, user)

    def _is_admin(self, request: Request) -> bool:
        user_ok = hmac.compare_digest(request.getUser(), self._admin[0])
        password_ok = hmac.compare_digest(request.getPassword(), self._admin[1])
        return user_ok and password_ok


def _user_parameter(request: Request) -> str | None:
    user = request.args.get(b"user", [b""])[0].decode("utf-8", "replace") or None
    if user is not None and not 0 < len(user) <= 128:
        raise Refusal(400, "user id must be 1 to 128 characters")
    return user
