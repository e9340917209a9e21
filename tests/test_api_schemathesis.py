"""schemathesis against the admin API's own OpenAPI document, in process: no 5xx, answers match the schema.

Requests go through a requests adapter into the real twisted.web Site in memory (no sockets, the server's fake
clock); examples per operation are bounded so the whole run stays well under a minute.
"""

from __future__ import annotations

import base64
import io

import pytest
import requests
import urllib3
from hypothesis import HealthCheck, settings
from server_kit import MemoryHTTP, SignedDevice, make_server

from mdm_server.web.openapi import document

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

BASE = "http://mdmsim.test"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 6


class MemoryAdapter(requests.adapters.HTTPAdapter):
    """A requests transport that answers from a twisted.web Site in memory."""

    def __init__(self, http: MemoryHTTP) -> None:
        super().__init__()
        self.http = http

    def send(self, request, **kwargs):
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        # MemoryHTTP frames the body itself: a second Content-Length would be a (correct) bare 400 from Twisted.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "host")}
        answer = self.http.request(request.method, request.url.removeprefix(BASE), body, headers)
        raw = urllib3.HTTPResponse(body=io.BytesIO(answer.body), headers=answer.headers, status=answer.status,
                                   version=11, reason="answer", preload_content=False)
        return self.build_response(request, raw)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("schemathesis"))
    device = SignedDevice(server, "a" * 40)
    device.enroll()  # one real device, so some generated requests reach past the 404s
    session = requests.Session()
    session.mount(BASE, MemoryAdapter(MemoryHTTP(server.http)))
    token = base64.b64encode(f"admin:{server.admin_password}".encode()).decode()
    yield session, {"Authorization": f"Basic {token}"}
    server.stopService()


schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
def test_no_server_errors_and_answers_match_the_schema(case, session):
    http, headers = session
    case.call_and_validate(base_url=BASE, session=http, headers=headers, checks=CHECKS)


def test_the_harness_reports_a_server_error():
    """The run above cannot pass by not looking: a route answering 500 fails the same checks."""
    import json
    import re

    from mdm_server.web.json_api import JsonAPI
    from mdm_server.web.site import make_site

    def broken(request):
        raise RuntimeError("a bug")

    doc = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {"/boom": {"get": {
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {}}}}}}}}}
    http = requests.Session()
    http.mount(BASE, MemoryAdapter(MemoryHTTP(make_site(JsonAPI([(b"GET", re.compile("/boom"), broken)])))))
    case = schemathesis.openapi.from_dict(json.loads(json.dumps(doc)))["/boom"]["GET"].Case()
    with pytest.raises(BaseException, match="Server error"):  # schemathesis's FailureGroup
        case.call_and_validate(base_url=BASE, session=http, checks=CHECKS)
