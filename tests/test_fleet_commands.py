"""A server sending the common command set to a mixed iOS 9-27 fleet gets Apple-shaped answers: every report the
server stores (after the real HTTP path) is checked against Apple's command schema, or is the 12021 chain."""

from __future__ import annotations

from collections import Counter

from kits.command_schema import check_response

from device_sim.command_table import available
from device_sim.fleet import FleetSpec, parse_mix
from mdm_protocol.report import Status, decode_report
from mdm_world.admin_client import AdminClient
from mdm_world.world import World

MIX = "9.3.3:1,10.3:1,12.0:1,16.0:1,17.5:1,18.1:1,26.1:1,26.2:1,27.0:1,27.0.1:1"
COMMON = [
    {"RequestType": "DeviceInformation", "Queries": ["UDID", "OSVersion", "BuildVersion", "ProductName",
                                                      "ModelNumber", "IsSupervised", "ServiceSubscriptions"]},
    {"RequestType": "SecurityInfo"}, {"RequestType": "ProfileList"}, {"RequestType": "CertificateList"},
    {"RequestType": "Restrictions", "ProfileRestrictions": True}, {"RequestType": "ProvisioningProfileList"},
    {"RequestType": "InstalledApplicationList"}, {"RequestType": "ManagedApplicationList"},
    {"RequestType": "InstallApplication", "iTunesStoreID": 951937596, "ManagementFlags": 1},
    {"RequestType": "AvailableOSUpdates"}, {"RequestType": "OSUpdateStatus"},
    {"RequestType": "Settings", "Settings": [{"Item": "DataRoaming", "Enabled": False}]},
    {"RequestType": "DeviceLock", "Message": "Back to IT"},
]


def test_the_common_command_set_on_a_mixed_ios_9_to_27_fleet():
    world = World(FleetSpec(20, seed=3, os_mix=parse_mix(MIX), kinds=parse_mix("iphone:3,ipad:1,shared-ipad:1")))
    world.enroll(spread=30.0)
    world.run_for(120.0)
    server = world.server
    admin = AdminClient(world.admin_http, server.config.admin_user, server.admin_password)
    runners = {r.machine.facts.device_id: r for r in world.fleet.runners}
    assert world.observer.enrolled == 20
    for command in COMMON:
        admin.post("/api/v1/commands", {"device_ids": list(runners), "command": command})
        world.run_for(60.0)
    seen: Counter[tuple[str, str]] = Counter()
    for device_id, runner in runners.items():
        facts = runner.machine.facts
        stored = server.storage.list_commands(device_id)
        assert len(stored) == len(COMMON)
        for command in stored:
            report = decode_report(command.result)
            seen[(command.request_type, report.status.value)] += 1
            if not available(command.request_type, facts):
                assert report.status is Status.ERROR and report.error_chain[0].code == 12021
                continue
            assert report.status is Status.ACKNOWLEDGED, (command.request_type, facts.os_version)
            body = {"Status": report.status.value, **report.extra}
            assert check_response(command.request_type, body, str(facts.os_version)) == []
    # The fleet really spans the releases and the supervised-only commands were both answered and refused.
    assert len({str(r.machine.facts.os_version) for r in runners.values()}) == 10
    assert seen[("AvailableOSUpdates", "Acknowledged")] and seen[("AvailableOSUpdates", "Error")]
