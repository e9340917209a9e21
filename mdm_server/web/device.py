"""The device-facing endpoints: PUT /mdm/checkin and PUT /mdm/connect, routed on Content-Type as Apple does.

They read the body and identity, call the pure service, and write its answer; nothing else.
"""

from __future__ import annotations

import errno
import logging
from time import perf_counter

from twisted.web import resource
from twisted.web.server import Request

from mdm_protocol.cms import SignatureError

from ..identity import IdentityVerifier
from ..service import MDMService, Response
from ..storage.interface import FULL_REASON

log = logging.getLogger(__name__)

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
CONNECT_TYPE = "application/x-apple-aspen-mdm"
CHANNELS = {CHECKIN_TYPE: "checkin", CONNECT_TYPE: "connect"}  # Content-Type -> metrics label


class DeviceEndpoint(resource.Resource):
    """One MDM URL; both channels are accepted on either path and told apart by Content-Type."""

    isLeaf = True

    def __init__(self, service: MDMService, verifier: IdentityVerifier) -> None:
        super().__init__()
        self.service = service
        self.verifier = verifier

    def render_PUT(self, request: Request) -> bytes:
        response = self.serve(request.method, request.path, request.getHeader("content-type"),
                              request.getHeader("mdm-signature"), request.content.read())
        request.setResponseCode(response.status)
        if response.content_type:
            request.setHeader("content-type", response.content_type)
        return response.body

    render_POST = render_PUT  # some MDM clients and proxies use POST for the check-in channel

    def serve(self, method: bytes, path: bytes, content_type: str | None, signature: str | None,
              body: bytes) -> Response:
        """The answer to one device request, timed into the metrics; both HTTP edges (twisted.web and the
        lean device channel) call this and only write what it returns."""
        started = perf_counter()
        kind = (content_type or "").split(";")[0].strip().lower()
        try:
            response = self._answer(kind, signature, body)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            log.error("%s %s: no space left for a write: %s", method.decode("latin-1"), path.decode("latin-1"), exc)
            response = Response.unavailable(FULL_REASON)
        self.service.metrics.request_done(CHANNELS.get(kind, "other"), perf_counter() - started)
        if response.reason:
            log.info("%s %s refused: %s", method.decode("latin-1"), path.decode("latin-1"), response.reason)
        return response

    def _answer(self, content_type: str, signature: str | None, body: bytes) -> Response:
        if content_type not in CHANNELS:
            return Response.refuse(f"unsupported Content-Type {content_type!r}")
        try:
            identity = self.verifier.verify(signature, body)
        except SignatureError as exc:
            return Response.refuse(f"device identity refused: {exc.reason}")
        if content_type == CHECKIN_TYPE:
            return self.service.handle_checkin(identity, body)
        return self.service.handle_command_report(identity, body)
