"""The CONNECT proxy mode, driven by curl the way a server that hard-codes Apple's host would reach us:
HTTPS_PROXY-style CONNECT to api.push.apple.com, TLS checked against the gateway's CA, HTTP/2 inside."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
import pytest_twisted
from apns_kit import NOW, TOPIC, gateway
from twisted.internet import utils

TOKEN = b"\x0b" * 32
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def _curl(reactor, tmp_path, proxy_port: int, url: str):
    args = ["-sS", "--http2", "--proxy", f"http://127.0.0.1:{proxy_port}", "--cacert", str(tmp_path / "ca.pem"),
            "--cert", str(tmp_path / "push.pem"), "--key", str(tmp_path / "push.key"), "-H", f"apns-topic: {TOPIC}",
            "-H", "apns-push-type: mdm", "--data", '{"mdm":"magic"}', "-w", "\n%{http_code} %{http_version}", url]
    return utils.getProcessOutputAndValue("curl", args, env={"PATH": "/usr/bin:/bin"}, reactor=reactor)


@pytest_twisted.inlineCallbacks
def test_a_server_hard_coding_apples_host_reaches_the_gateway_through_the_proxy(tmp_path):
    from twisted.internet import reactor

    apns, _ = gateway(tmp_path / "apns", proxy="tcp:0:interface=127.0.0.1")
    inbox: list = []
    apns.gateway.register(TOKEN, TOPIC)
    apns.gateway.attach(TOKEN, lambda token, payload, sent_at: inbox.append(payload))
    push = apns.pki.issue_push_certificate(TOPIC, now=datetime.fromtimestamp(NOW, UTC))
    (tmp_path / "push.pem").write_bytes(push.certificate_pem)
    (tmp_path / "push.key").write_bytes(push.private_key_pem)
    (tmp_path / "ca.pem").write_bytes(apns.pki.tls.ca_certificate_pem)
    ports = yield apns.listen(reactor)
    proxy_port = ports[-1].getHost().port
    try:
        out, err, code = yield _curl(reactor, tmp_path, proxy_port, f"https://api.push.apple.com/3/device/{TOKEN.hex()}")
        _, other_err, other_code = yield _curl(reactor, tmp_path, proxy_port, "https://example.com/")
    finally:
        yield apns.stop()
    assert (code, out.decode().split()[-2:], err) == (0, ["200", "2"], b"")
    assert inbox == [{"mdm": "magic"}]
    assert other_code != 0 and b"403" in other_err
