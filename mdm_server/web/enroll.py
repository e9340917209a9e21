"""GET /mdm/enroll: hands out an enrollment profile to an admin (HTTP Basic) or a holder of the enroll token.

`?user=<id>` binds the enrollment to a user for later variable substitution.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime

from twisted.web import resource
from twisted.web.server import Request

from ..ca import CertificateAuthority
from ..enrollment import build_enrollment

PROFILE_TYPE = "application/x-apple-aspen-config"


class EnrollResource(resource.Resource):
    isLeaf = True

    def __init__(
        self, authority: CertificateAuthority, *, topic: str, server_url: str, now: Callable[[], datetime],
        enroll_token: str, admin: tuple[str, str],
    ) -> None:
        super().__init__()
        self.authority, self.topic, self.server_url, self.now = authority, topic, server_url, now
        self._token = enroll_token.encode()
        self._admin = (admin[0].encode(), admin[1].encode())

    def render_GET(self, request: Request) -> bytes:
        if not self._authorised(request):
            request.setResponseCode(401)
            request.setHeader("www-authenticate", 'Basic realm="mdmsim enrollment"')
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return b"enrollment needs admin credentials or ?token=<enroll token>\n"
        user = request.args.get(b"user", [b""])[0].decode("utf-8", "replace") or None
        if user is not None and not (0 < len(user) <= 128):
            request.setResponseCode(400)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            return b"user id must be 1 to 128 characters\n"
        enrollment = build_enrollment(
            self.authority, server_url=self.server_url, topic=self.topic, now=self.now(), user_id=user
        )
        request.setHeader("content-type", PROFILE_TYPE)
        request.setHeader("content-disposition", 'attachment; filename="enroll.mobileconfig"')
        return enrollment.profile

    def _authorised(self, request: Request) -> bool:
        token = request.args.get(b"token", [b""])[0]
        if token and hmac.compare_digest(token, self._token):
            return True
        user_ok = hmac.compare_digest(request.getUser(), self._admin[0])
        password_ok = hmac.compare_digest(request.getPassword(), self._admin[1])
        return user_ok and password_ok
