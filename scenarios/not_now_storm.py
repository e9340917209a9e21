"""Devices still locked since boot answer NotNow; the server re-offers at the next Idle until they unlock."""

from device_sim.behaviour import Behaviour
from mdm_world import Scenario
from mdm_world.roots import root_profile
from scenarios._support import data, device_ids

scenario = Scenario(
    name="not-now-storm",
    purpose="NotNow storm before first unlock (iOS 15.4+), then the re-offer once devices are unlocked",
    count=40, seed=5, os_mix="16.0:1,17.5:2", kinds="iphone:3,ipad:1", duration="40m",
    behaviour=Behaviour(first_unlocked=False),
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("5m", "admin queues InstallProfile, CertificateList and DeviceInformation for every device")
def queue_commands(ctx):
    ids = device_ids(ctx)
    profile = root_profile("com.example.corp-root")
    for command, priority in (({"RequestType": "InstallProfile", "Payload": data(profile)}, 10),
                              ({"RequestType": "CertificateList"}, 5),
                              ({"RequestType": "DeviceInformation", "Queries": ["OSVersion", "UDID"]}, 0)):
        ctx.admin.post("/api/v1/commands", {"deviceIds": ids, "command": command, "priority": priority})
    return f"{len(ids)} devices pushed"


@scenario.at("20m", "users unlock their devices")
def unlock(ctx):
    for runner in ctx.devices:
        runner.perform(runner.machine.unlock(runner.now()))


def _statuses(ctx, request_type):
    out = []
    for device_id in device_ids(ctx):
        commands = ctx.admin.get(f"/api/v1/devices/{device_id}/commands?limit=10000")["items"]
        out += [c["status"] for c in commands if c["requestType"] == request_type]
    return out


@scenario.expect("every device enrolled")
def all_enrolled(ctx):
    return len(ctx.enrolled()) == len(ctx.devices), f"{len(ctx.enrolled())}/{len(ctx.devices)}"


@scenario.expect("locked devices deferred InstallProfile and CertificateList, never DeviceInformation")
def not_now_only_where_ios_allows(ctx):
    commands = ctx.world.observer.commands
    deferred = commands[("InstallProfile", "NotNow")] + commands[("CertificateList", "NotNow")]
    wrong = commands[("DeviceInformation", "NotNow")]
    return deferred >= 2 * len(ctx.devices) and wrong == 0, f"{deferred} NotNow answers, {wrong} wrong"


@scenario.expect("after unlock every InstallProfile and CertificateList is Acknowledged on the server")
def re_offered_and_done(ctx):
    statuses = _statuses(ctx, "InstallProfile") + _statuses(ctx, "CertificateList")
    done = statuses.count("Acknowledged")
    return done == 2 * len(ctx.devices), f"{done}/{2 * len(ctx.devices)} acknowledged"


@scenario.expect("the server's NotNow tally counts the deferrals")
def tally(ctx):
    total = sum(ctx.admin.get(f"/api/v1/devices/{d}")["notNowCount"] for d in device_ids(ctx))
    return total >= 2 * len(ctx.devices), f"{total} NotNow recorded"
