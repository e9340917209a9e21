"""`http_session.HttpSession` over real loopback sockets: requests share one connection while the server keeps
it, a closed one is reopened, and a request with no answer fails with a reason.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.web import resource, server

from device_sim.enroll_fetch import EnrollmentFetchError
from device_sim.http_session import HttpSession


class Counting(resource.Resource):
    """Answers with the number of requests its connection has carried; ?close=1 asks the client to close."""

    isLeaf = True

    def render(self, request):
        channel = request.channel
        channel.served = getattr(channel, "served", 0) + 1
        if request.args.get(b"close"):
            request.setHeader(b"connection", b"close")
        return b"%d" % channel.served


@pytest.fixture
def site_url():
    from twisted.internet import reactor

    port = reactor.listenTCP(0, server.Site(Counting()), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.inlineCallbacks
def test_requests_share_the_connection_until_the_server_closes_it(site_url):
    from twisted.internet import reactor

    session = HttpSession(reactor, user_agent="test", timeout=10, max_body=1024)
    answers = []
    for query in ("", "", "?close=1", "", ""):
        response = yield session.request(f"{site_url}/x{query}", method="POST" if query else "GET", body=b"b")
        answers.append(response.body)
    session.close()
    assert answers == [b"1", b"2", b"3", b"1", b"2"] and session.connections == 2


@pytest_twisted.inlineCallbacks
def test_a_refused_connection_fails_with_a_reason():
    from twisted.internet import reactor

    session = HttpSession(reactor, user_agent="test", timeout=10, max_body=1024)
    with pytest.raises(EnrollmentFetchError, match="cannot connect"):
        yield session.request("http://127.0.0.1:1/x")
    with pytest.raises(EnrollmentFetchError, match="must be http"):
        yield session.request("ftp://127.0.0.1/x")
