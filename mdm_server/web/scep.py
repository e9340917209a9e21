"""GET/POST /scep?operation=GetCACaps|GetCACert|PKIOperation: the SCEP endpoint over `ScepService`.

PKIOperation comes as a POST body (application/x-pki-message) or, by GET, base64 in `message=` (RFC 8894 4.1).
"""

from __future__ import annotations

import base64
import binascii

from twisted.web import resource
from twisted.web.server import Request

from mdm_protocol.scep_operations import CAPS_TYPE, PKI_MESSAGE_TYPE

from ..scep_service import ScepService, UnreadableRequest

MAX_MESSAGE = 64 * 1024


class ScepResource(resource.Resource):
    isLeaf = True

    def __init__(self, service: ScepService) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes:
        return self._operation(request, None)

    def render_POST(self, request: Request) -> bytes:
        body = request.content.read(MAX_MESSAGE + 1) if request.content is not None else b""
        return self._operation(request, body)

    def _operation(self, request: Request, body: bytes | None) -> bytes:
        operation = _argument(request, b"operation").decode("latin-1")
        if operation == "GetCACaps":
            request.setHeader("content-type", CAPS_TYPE)
            return self.service.caps()
        if operation == "GetCACert":
            content_type, answer = self.service.ca_certificates()
            request.setHeader("content-type", content_type)
            return answer
        if operation == "PKIOperation":
            return self._pki_operation(request, body)
        return _refuse(request, 400, f"unknown SCEP operation {operation[:40]!r}; use GetCACaps, GetCACert "
                                     "or PKIOperation")

    def _pki_operation(self, request: Request, body: bytes | None) -> bytes:
        if body is None:
            # Query parsing turned '+' into ' '; base64 has no spaces, so put them back.
            text = _argument(request, b"message").replace(b" ", b"+")
            try:
                body = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                return _refuse(request, 400, "the message parameter is not base64")
        if not body:
            return _refuse(request, 400, "PKIOperation needs a pkiMessage")
        if len(body) > MAX_MESSAGE:
            return _refuse(request, 413, f"a pkiMessage is at most {MAX_MESSAGE} bytes")
        try:
            answer = self.service.pki_operation(body)
        except UnreadableRequest as exc:
            return _refuse(request, 400, f"not a SCEP pkiMessage: {exc.reason}")
        request.setHeader("content-type", PKI_MESSAGE_TYPE)
        return answer


def _argument(request: Request, name: bytes) -> bytes:
    values = request.args.get(name) if request.args else None
    return values[0] if values else b""


def _refuse(request: Request, code: int, reason: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader("content-type", "text/plain; charset=utf-8")
    return reason.encode("utf-8") + b"\n"
