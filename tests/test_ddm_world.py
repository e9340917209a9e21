"""DDM in the in-memory world (scenarios' path): the real server and a fleet over in-memory HTTP on virtual time.

An Exchange account with S/MIME identities declared to two iOS 17.5 devices and one 16.0 device; a day later the
17.5 devices send their full report; the server's expected readiness matches the devices'. Same server and
device code as the TLS test, no sockets, no waiting.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from kits.keychain_pki import certificate, new_key, p12

from device_sim.fleet import FleetSpec, parse_mix
from device_sim.readiness import State
from mdm_world.admin_client import AdminClient
from mdm_world.demo_readiness import device_view, server_view
from mdm_world.world import World

PASSWORD = "correct horse"
ACCOUNT = "com.mdmsim.setting.s3.account"
EXCHANGE = {"kind": "exchange", "name": "Work mail", "host": "mail.example.com", "user_name": "$USERID$",
            "email_address": "$EMAIL$", "delivery": "declaration",
            "smime": {"signing_enabled": True, "signing_identity": "s1", "encryption_by_default": False,
                      "encryption_identity": "s2", "per_message_switch": True}}


def _p12(world: World, name: str, kind: str) -> bytes:
    """A mail identity from the server's CA, which the enrollment profile makes every device trust."""
    now = datetime.fromtimestamp(world.now(), UTC)
    key = new_key(kind)
    leaf = certificate(name, key, issuer=world.server.ca.certificate, issuer_key=world.server.ca.private_key,
                       not_before=now - timedelta(days=1), not_after=now + timedelta(days=365))
    return p12(leaf, key, PASSWORD)


def test_declared_accounts_reach_a_fleet_without_drift_and_full_reports_follow_a_day_later():
    world = World(FleetSpec(3, seed=5, os_mix=parse_mix("17.5:2,16.0:1")))
    runners = world.enroll()
    world.run_for(120)
    assert world.observer.enrolled == 3
    admin = AdminClient(world.admin_http, "admin", world.server.admin_password)
    for name, purpose in (("sig", "smime_signing"), ("enc", "smime_encryption")):
        admin.post("/api/v2/settings", {"kind": "user_provided", "name": name, "purpose": purpose})
    for runner in runners:
        user = runner.machine.facts.user
        admin.post("/api/v2/users", {"userId": user.user_id, "email": user.email})
        for setting, kind in (("s1", "ec"), ("s2", "rsa")):
            data = base64.b64encode(_p12(world, f"{user.user_id}-{setting}", kind)).decode()
            admin.post(f"/api/v2/users/{user.user_id}/certificates",
                       {"settingId": setting, "p12": data, "password": PASSWORD})
    admin.post("/api/v2/settings", EXCHANGE)
    udids = [runner.machine.facts.udid for runner in runners]
    admin.post("/api/v2/labels", {"id": "l", "name": "L", "type": "manual", "deviceUuids": udids})
    admin.post("/api/v2/labels/l/apply", {"settingId": "s3"})
    admin.put("/api/v2/devices/wakeup", {"deviceUuids": udids})
    world.run_for(60)

    for runner in runners:
        machine = runner.machine
        readiness = machine.readiness[ACCOUNT]
        if machine.facts.os_version.major >= 17:
            assert (readiness.signing.state, readiness.encryption.state) == (State.READY, State.READY)
            assert (readiness.encrypt_by_default, readiness.per_message_switch) == (False, True)
        else:  # 16.0: the account installs without S/MIME (the server leaves SMIME out below iOS 17)
            assert (readiness.signing.state, readiness.encryption.state) == (State.DISABLED, State.DISABLED)
        history = admin.get(f"/api/v2/devices/{machine.facts.udid}/ddm-status")["history"]
        assert [entry["report"].get("FullReport") for entry in history] == [
            False if machine.facts.os_version.major >= 17 else None]

    world.run_for(24 * 3600)
    for runner in runners:
        history = admin.get(f"/api/v2/devices/{runner.machine.facts.udid}/ddm-status")["history"]
        full = [entry["report"].get("FullReport") for entry in history]
        assert full == ([False, True] if runner.machine.facts.os_version.major >= 17 else [None])
    assert world.observer.commands[("DeclarativeManagement", "Acknowledged")] == 3
    for runner in runners:  # the server's expectation (from the DDM status) and the device agree: no drift
        answer = admin.get(f"/api/v2/devices/{runner.machine.facts.udid}/readiness")
        [theirs] = [account for account in answer["accounts"] if account["payloadIdentifier"] == ACCOUNT]
        assert server_view(theirs) == device_view(runner.machine.readiness[ACCOUNT])
