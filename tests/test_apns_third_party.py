"""A third-party MDM server wakes our fleet through `mdmsim apns`, as NanoMDM would: curl and the h2 library,
through the CONNECT proxy as api.push.apple.com with only our CA trusted, push `{"mdm": PushMagic}` for an
enrolled device of a running fleet (attached on the push link); the device checks in to its server. A device
that checked out or was erased has its token unregistered on the push link: 410 Unregistered with the time."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import pytest
import pytest_twisted
from apns_kit import NOW, connect_through_proxy, gateway, until
from twisted.internet import utils

from device_sim.fleet import Fleet, FleetSpec
from device_sim.push_link_client import PushLinkClient
from mdm_world.admin_client import AdminClient
from mdm_world.world import World

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def _curl(reactor, files, proxy_port: int, token: bytes, magic: str):
    """curl as a provider: --http2 with the push certificate from issue-cert, HTTPS_PROXY-style, our CA only."""
    args = ["-sS", "--http2", "--proxy", f"http://127.0.0.1:{proxy_port}", "--cacert", str(files / "ca.pem"),
            "--cert", str(files / "push.pem"), "--key", str(files / "push.key"),
            "-H", "apns-push-type: mdm", "-H", f"apns-expiration: {int(NOW) + 3600}",
            "--data", json.dumps({"mdm": magic}), "-w", "\n%{http_code}",
            f"https://api.push.apple.com/3/device/{token.hex()}"]
    return utils.getProcessOutputAndValue("curl", args, env={"PATH": "/usr/bin:/bin"}, reactor=reactor)


class _Setup:
    """A fleet of our devices enrolled with their server (in memory, on its own clock), attached to the gateway
    over a real push link; the gateway's CA and a push certificate for the server's topic written to files."""

    def __init__(self, tmp_path, devices: int = 2) -> None:
        self.world = World(FleetSpec(devices, seed=13))
        self.link = PushLinkClient()
        self.world.fleet = Fleet(self.world.fleet.spec, clock=self.world.clock, transport=self.world.transport,
                                 push=self.link, observer=self.world.observer, reuse_signatures=True)
        self.apns, _ = gateway(tmp_path / "apns", push_link=True, proxy="tcp:0:interface=127.0.0.1")
        self.push = self.apns.pki.issue_push_certificate(self.world.server.state.topic,
                                                         now=datetime.fromtimestamp(NOW, UTC))
        self.files = tmp_path
        (tmp_path / "push.pem").write_bytes(self.push.certificate_pem)
        (tmp_path / "push.key").write_bytes(self.push.private_key_pem)
        (tmp_path / "ca.pem").write_bytes(self.apns.pki.tls.ca_certificate_pem)

    def enroll(self) -> None:
        self.world.enroll(spread=1.0)
        self.world.run_for(30.0)
        assert self.world.observer.enrolled == len(self.world.fleet.runners)

    def device(self, index: int):
        """What the provider knows from its server: the device's token and PushMagic from its TokenUpdate."""
        runner = self.world.fleet.runners[index]
        record = self.world.server.storage.get_device(runner.machine.facts.device_id)
        return runner, record.push_token, record.push_magic

    def idles(self) -> int:
        return self.world.observer.messages["Idle"].count


@pytest_twisted.inlineCallbacks
def test_curl_and_an_h2_client_through_the_proxy_wake_a_fleet_device_which_checks_in(tmp_path):
    from twisted.internet import reactor

    setup = _Setup(tmp_path)
    ports = yield setup.apns.listen(reactor)
    connector = reactor.connectTCP("127.0.0.1", setup.apns.link_port, setup.link)
    h2 = None
    try:
        setup.enroll()
        _, token, magic = setup.device(0)
        yield until(reactor, lambda: token in setup.apns.gateway._online)
        before = setup.idles()
        out, err, code = yield _curl(reactor, setup.files, ports[-1].getHost().port, token, magic)
        assert (code, out.decode().split()[-1], err) == (0, "200", b"")
        yield until(reactor, lambda: setup.link.delivered == 1)
        setup.world.run_for(5.0)  # the device's Idle reaches its server (in memory, on the world's clock)
        assert setup.idles() == before + 1

        _, other_token, other_magic = setup.device(1)
        h2 = yield connect_through_proxy(reactor, ports[-1].getHost().port, setup.apns.pki.tls.ca_certificate_pem,
                                         setup.push)
        reply = yield h2.request("/3/device/" + other_token.hex(), {"apns-push-type": "mdm"},
                                 json.dumps({"mdm": other_magic}).encode())
        assert reply.status == 200 and reply.headers["apns-id"]
        yield until(reactor, lambda: setup.link.delivered == 2)
        setup.world.run_for(5.0)
        assert setup.idles() == before + 2
    finally:
        if h2 is not None:
            h2.transport.loseConnection()
        connector.disconnect()
        yield setup.apns.stop()


@pytest_twisted.inlineCallbacks
def test_a_device_that_checked_out_or_was_erased_gets_410_unregistered_with_the_time(tmp_path):
    from twisted.internet import reactor

    setup = _Setup(tmp_path)
    ports = yield setup.apns.listen(reactor)
    connector = reactor.connectTCP("127.0.0.1", setup.apns.link_port, setup.link)
    h2 = None
    try:
        setup.enroll()
        leaving, leaving_token, _ = setup.device(0)
        erased, erased_token, erased_magic = setup.device(1)
        yield until(reactor, lambda: {leaving_token, erased_token} <= set(setup.apns.gateway._online))
        h2 = yield connect_through_proxy(reactor, ports[-1].getHost().port, setup.apns.pki.tls.ca_certificate_pem,
                                         setup.push)

        # The user removes the MDM profile: CheckOut to the server, the token unregistered on the push link.
        leaving.perform(leaving.machine.remove_mdm_profile(setup.world.now()))
        setup.world.run_for(1.0)
        # The server erases the other device; the third party's push wakes it to fetch the command.
        admin = AdminClient(setup.world.admin_http, setup.world.server.config.admin_user,
                            setup.world.server.admin_password)
        admin.post("/api/v1/commands", {"device_ids": [erased.machine.facts.device_id],
                                        "command": {"RequestType": "EraseDevice"}, "push": False})
        woke = yield h2.request("/3/device/" + erased_token.hex(), {}, json.dumps({"mdm": erased_magic}).encode())
        assert woke.status == 200
        yield until(reactor, lambda: setup.link.delivered == 1)
        setup.world.run_for(5.0)  # Idle → EraseDevice → Acknowledged → wiped
        assert erased.machine.phase.value == "new"
        yield until(reactor, lambda: all(setup.apns.gateway.registry.tokens[t].unregistered_at is not None
                                         for t in (leaving_token, erased_token)))

        for token in (leaving_token, erased_token):
            reply = yield h2.request("/3/device/" + token.hex(), {}, b'{"mdm":"x"}')
            body = json.loads(reply.body)
            assert (reply.status, body["reason"]) == (410, "Unregistered")
            assert body["timestamp"] == int(NOW * 1000)  # the gateway's (fake) clock when the device left
    finally:
        if h2 is not None:
            h2.transport.loseConnection()
        connector.disconnect()
        yield setup.apns.stop()
