"""The server presents a TLS certificate from a CA the enrollment profile does not carry: iOS refuses it."""


from mdm_world import Scenario

scenario = Scenario(
    name="untrusted-server-certificate",
    purpose="iOS devices will not use SSL with an untrusted certificate: MDM payload fails, no check-in",
    count=12, seed=8, os_mix="9.3.5:1,12.0:1,17.5:1", duration="10m",
    untrusted_server=True,  # its TLS certificate comes from a CA no enrollment profile carries
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="30s")


@scenario.expect("no device enrolls")
def none_enrolled(ctx):
    return not ctx.enrolled(), f"{len(ctx.enrolled())} enrolled"


@scenario.expect("every device reports the MDM payload failed with 4001 ← 23002 (invalid server certificate)")
def error_chain(ctx):
    chains = [ctx.world.observer.devices[r.machine.facts.index].enrollment_error for r in ctx.devices]
    good = [c for c in chains if [(i.domain, i.code) for i in c] == [
        ("MCInstallationErrorDomain", 4001), ("MCHTTPTransactionErrorDomain", 23002)]]
    return len(good) == len(ctx.devices), f"{len(good)}/{len(ctx.devices)} with the expected chain"


@scenario.expect("the server never saw an Authenticate")
def server_untouched(ctx):
    devices = ctx.admin.get("/api/v1/devices?limit=10000")["items"]
    return devices == [], f"{len(devices)} devices on the server"


@scenario.expect("the enrollment profile is rolled back on the device")
def rolled_back(ctx):
    left = [r for r in ctx.devices if list(r.machine.profiles.installed())]
    return not left, f"{len(left)} devices still hold profiles"
