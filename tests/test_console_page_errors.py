"""A page handler that fails logs its route, never the request path: paths carry secrets (invitation links,
the live pages' access token)."""

from __future__ import annotations

import logging
import re

from twisted.web.test.requesthelper import DummyRequest

from mdm_server.console.pages import PageTree

SECRET = "s3cr3t-invitation-token"


def test_a_failing_page_logs_its_route_not_the_secret_in_its_path(caplog):
    tree = PageTree()

    def broken(request, secret):
        raise RuntimeError("a bug")

    tree.routes.append((b"GET", re.compile(r"/invite/(?P<secret>[\w-]+)"), broken))
    request = DummyRequest([b"invite", SECRET.encode()])
    request.uri = f"/user/invite/{SECRET}".encode()
    with caplog.at_level(logging.ERROR):
        body = tree.render(request)
    assert request.responseCode == 500 and b"internal error" in body
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/invite/(?P<secret>" in logged and SECRET not in logged
