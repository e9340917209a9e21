"""GET /mdm/enroll: hands out an enrollment profile to an admin (HTTP Basic) or a holder of the enroll token.

`?user=<id>` binds the enrollment to a user for later variable substitution. With a SCEP service the profile
carries a SCEP payload and a fresh challenge (bound to that user) instead of a PKCS#12.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime

from twisted.web import resource
from twisted.web.server import Request

from ..ca import CertificateAuthority
from ..enrollment import build_enrollment, build_scep_enrollment
from ..scep_service import ScepService

PROFILE_TYPE = "application/x-apple-aspen-config"


class EnrollResource(resource.Resource):
    isLeaf = True

    def __init__(
        self, authority: CertificateAuthority, *, topic: str, server_url: str, now: Callable[[], datetime],
        enroll_token: str, admin: tuple[str, str], scep: ScepService | None = None,
    ) -> None:
        super().__init__()
        self.authority, self.topic, self.server_url, self.now = authority, topic, server_url, now
        self.scep = scep
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
        if self.scep is not None:
            profile = build_scep_enrollment(
                self.authority, server_url=self.server_url, topic=self.topic, scep_url=f"{self.server_url}/scep",
                challenge=self.scep.new_challenge(user),
            )
        else:
            profile = build_enrollment(
                self.authority, server_url=self.server_url, topic=self.topic, now=self.now(), user_id=user
            ).profile
        request.setHeader("content-type", PROFILE_TYPE)
        request.setHeader("content-disposition", 'attachment; filename="enroll.mobileconfig"')
        return profile

    def _authorised(self, request: Request) -> bool:
        token = request.args.get(b"token", [b""])[0]
        if token and hmac.compare_digest(token, self._token):
            return True
        user_ok = hmac.compare_digest(request.getUser(), self._admin[0])
        password_ok = hmac.compare_digest(request.getPassword(), self._admin[1])
        return user_ok and password_ok
