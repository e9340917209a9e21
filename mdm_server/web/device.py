"""The device-facing endpoints: PUT /mdm/checkin and PUT /mdm/connect, routed on Content-Type as Apple does.

They read the body and identity, call the pure service, and write its answer; nothing else.
"""

from __future__ import annotations

import logging
from time import perf_counter

from twisted.web import resource
from twisted.web.server import Request

from mdm_protocol.cms import SignatureError

from ..identity import IdentityVerifier
from ..service import MDMService, Response

log = logging.getLogger(__name__)

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
CONNECT_TYPE = "application/x-apple-aspen-mdm"


class DeviceEndpoint(resource.Resource):
    """One MDM URL; both channels are accepted on either path and told apart by Content-Type."""

    isLeaf = True

    def __init__(self, service: MDMService, verifier: IdentityVerifier) -> None:
        super().__init__()
        self.service = service
        self.verifier = verifier

    def render_PUT(self, request: Request) -> bytes:
        started = perf_counter()
        response = self._answer(request)
        self.service.metrics.request_done(_channel(request), perf_counter() - started)
        return self._write(request, response)

    render_POST = render_PUT  # some MDM clients and proxies use POST for the check-in channel

    def _answer(self, request: Request) -> Response:
        body = request.content.read()
        content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
        if content_type not in (CHECKIN_TYPE, CONNECT_TYPE):
            return Response.refuse(f"unsupported Content-Type {content_type!r}")
        try:
            identity = self.verifier.verify(request.getHeader("mdm-signature"), body)
        except SignatureError as exc:
            return Response.refuse(f"device identity refused: {exc.reason}")
        if content_type == CHECKIN_TYPE:
            return self.service.handle_checkin(identity, body)
        return self.service.handle_command_report(identity, body)

    @staticmethod
    def _write(request: Request, response: Response) -> bytes:
        if response.reason:
            log.info("%s %s refused: %s", request.method.decode(), request.path.decode(), response.reason)
        request.setResponseCode(response.status)
        if response.content_type:
            request.setHeader("content-type", response.content_type)
        return response.body


def _channel(request: Request) -> str:
    content_type = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
    return {CHECKIN_TYPE: "checkin", CONNECT_TYPE: "connect"}.get(content_type, "other")
