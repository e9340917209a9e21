"""DDM end to end over real TLS on loopback: our server declares an Exchange account with S/MIME identities to a
simulated iOS 17 device, which syncs over HTTPS (mutual TLS, signed), fetches its identity assets authenticated as
MDM, installs the account and reports status; the server's view and the device's readiness then agree.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest_twisted
from kits.keychain_pki import certificate, new_key, p12
from twisted.internet import defer

from device_sim import effects as fx
from device_sim.behaviour import Behaviour
from device_sim.facts import make_facts
from device_sim.https_transport import HTTPSTransport
from device_sim.keychain import Keychain
from device_sim.machine import DeviceMachine
from device_sim.memory_http import MemoryHTTP
from device_sim.readiness import State
from device_sim.runner import DeviceRunner, InProcessPush
from mdm_server.app import MDMServer, ServerConfig
from mdm_server.enrollment import build_enrollment
from mdm_server.enrollment_tokens import DEFAULT_TOKEN_ID
from mdm_world.admin_client import AdminClient

PASSWORD = "correct horse"
EXCHANGE = {"kind": "exchange", "name": "Work mail", "host": "mail.example.com", "user_name": "$USERID$",
            "email_address": "$EMAIL$", "delivery": "declaration",
            "smime": {"signing_enabled": True, "signing_identity": "s1", "encryption_by_default": True,
                      "encryption_identity": "s2", "per_message_switch": True}}


class Watch:
    """Records a runner's effects and requests; `until` fires once a condition over them holds."""

    def __init__(self) -> None:
        self.effects: list[fx.Effect] = []
        self.requests: list[tuple[str, int | None]] = []
        self.waiting: list[tuple[object, defer.Deferred]] = []

    def request_done(self, runner, message, sent_at, status) -> None:
        self.requests.append((message, status))

    def effect(self, runner, effect) -> None:
        self.effects.append(effect)
        for item in list(self.waiting):
            if item[0](self):
                self.waiting.remove(item)
                item[1].callback(None)

    def until(self, condition) -> defer.Deferred:
        d = defer.Deferred()
        self.waiting.append((condition, d))
        return d


def synced(watch: Watch) -> bool:
    return fx.Log("DDM sync: status reported") in watch.effects


def smime_identities(now: datetime):
    """A CA the device trusts and two mail identities from it, valid around the real clock."""
    ca_key = new_key()
    ca = certificate("DDM e2e CA", ca_key, ca=True, eku=None, not_before=now - timedelta(days=1),
                     not_after=now + timedelta(days=30))
    out = []
    for name, kind in (("alice-sign@example.com", "ec"), ("alice-crypt@example.com", "rsa")):
        key = new_key(kind)
        out.append(p12(certificate(name, key, issuer=ca, issuer_key=ca_key, not_before=now - timedelta(days=1),
                                   not_after=now + timedelta(days=30)), key, PASSWORD, cas=(ca,)))
    return ca, out


@pytest_twisted.inlineCallbacks
def test_an_exchange_account_with_smime_arrives_by_declaration_over_tls(tmp_path):
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really uses sockets

    config = ServerConfig(data_dir=tmp_path / "data", listen="ssl:0:interface=127.0.0.1", push_link=None,
                          server_names=("127.0.0.1",))
    server = MDMServer(config, clock=reactor, reactor=reactor)
    server.startService()
    yield server.listening()
    transport = HTTPSTransport(reactor)
    try:
        ca, (signing_p12, encryption_p12) = smime_identities(datetime.now(UTC))
        facts = make_facts(3, 0, "17.5")
        machine = DeviceMachine(facts, seed=3, behaviour=Behaviour(), keychain=Keychain(builtin_roots=[ca]))
        watch = Watch()
        runner = DeviceRunner(machine, clock=reactor, transport=transport, push=InProcessPush(server.apns),
                              observer=watch)
        runner.install_enrollment(build_enrollment(server.ca, server_url=server.url, topic=server.state.topic,
                                                   now=server.now(), user_id=facts.user.user_id,
                                                   token_id=DEFAULT_TOKEN_ID).profile)
        yield watch.until(lambda w: fx.Enrolled(facts.udid) in w.effects).addTimeout(30, reactor)

        admin = AdminClient(MemoryHTTP(server.site), "admin", server.admin_password)
        for name, purpose in (("sig", "smime_signing"), ("enc", "smime_encryption")):
            admin.post("/api/v2/settings", {"kind": "user_provided", "name": name, "purpose": purpose})
        admin.post("/api/v2/users", {"userId": facts.user.user_id, "email": facts.user.email})
        for setting, data in (("s1", signing_p12), ("s2", encryption_p12)):
            admin.post(f"/api/v2/users/{facts.user.user_id}/certificates",
                       {"settingId": setting, "p12": base64.b64encode(data).decode(), "password": PASSWORD})
        assert admin.post("/api/v2/settings", EXCHANGE)["id"] == "s3"
        admin.post("/api/v2/labels", {"id": "l", "name": "L", "type": "manual", "deviceUuids": [facts.udid]})
        queued = admin.post("/api/v2/labels/l/apply", {"settingId": "s3"})["queued"]
        assert [item["requestType"] for item in queued] == ["DeclarativeManagement"]
        assert admin.put("/api/v2/devices/wakeup", {"deviceUuids": [facts.udid]})["pushed"] == 1
        yield watch.until(synced).addTimeout(60, reactor)
        status = admin.get(f"/api/v2/devices/{facts.udid}/ddm-status")
    finally:
        transport.close()
        yield server.stopService()

    assert watch.requests == [(message, 200) for message in (
        "Authenticate", "TokenUpdate", "Idle", "DeclarativeManagement:Acknowledged", "DeclarativeManagement:tokens",
        "DeclarativeManagement:declaration-items", *["DeclarativeManagement:declaration"] * 6,
        "DDM asset", "DDM asset",  # both identities, over TLS, authenticated as MDM
        "DeclarativeManagement:tokens", "DeclarativeManagement:status")]

    account = "com.mdmsim.setting.s3.account"
    readiness = machine.readiness[account]
    assert readiness.signing.state is State.READY, readiness.signing.reason
    assert readiness.encryption.state is State.READY, readiness.encryption.reason
    assert (readiness.encrypt_by_default, readiness.per_message_switch) == (True, True)

    # The server's view of the device's report: every declaration it sent is active and valid there.
    seen = {entry["identifier"]: (entry["active"], entry["valid"], entry.get("reasons"))
            for entries in status["declarations"].values() for entry in entries}
    assert seen == {f"com.mdmsim.setting.s3.{name}": (True, "valid", None) for name in (
        "activation", "account", "credentials", "user-identity", "smime-signing-identity",
        "smime-encryption-identity")}
    assert status["errors"] == []
