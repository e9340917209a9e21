"""Exchange signing on iOS 10.0 to 10.2: no key turns it on there, so an Exchange account cannot sign.

SMIMEEnabled is ignored from iOS 10.0 and the Exchange payload reads SMIMESigningEnabled only from 10.3 (Apple's
schema). docs/scenarios.md builds this file step by step; docs/readiness.md has the rule.
"""

from datetime import UTC, datetime

from mdm_world import Scenario
from mdm_world import procedure as P

scenario = Scenario(
    name="exchange-signing-10-2",
    purpose="An Exchange setting that signs and encrypts: iOS 10.2 devices cannot sign (no key for it before "
            "10.3) but encrypt; iOS 10.3 and 12.0 devices do both; the server expects exactly that",
    count=9, seed=21, os_mix="10.2:1,10.3:1,12.0:1", duration="15m",  # seed 21: three devices of each
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("3m", "admin: users and their P12s, an Exchange setting that signs and encrypts, on every device")
def roll_out(ctx):
    admin = ctx.admin
    now = datetime.fromtimestamp(ctx.world.now(), UTC)  # certificates are issued in virtual time
    org = P.Organisation.create("Acme", "acme.test", now=now)
    root = P.certificate_setting(admin, "Acme S/MIME root", org.root_der())
    signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    encryption = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    smime = {"signing_enabled": True, "signing_identity": signing,
             "encryption_by_default": True, "encryption_identity": encryption}
    ctx.vars["exchange"] = P.exchange_setting(admin, "Exchange", "mail.acme.test", smime)
    for runner in ctx.devices:
        user = runner.machine.facts.user
        address = f"{user.user_id}@acme.test"
        P.add_user(admin, user.user_id, address, user.name)
        for purpose, setting_id in (("signing", signing), ("encryption", encryption)):
            org.issue(address, purpose, now=now)
            P.upload(admin, user.user_id, setting_id, org.p12(address, purpose))
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.apply(admin, "all-ios", root)
    report = P.apply(admin, "all-ios", ctx.vars["exchange"])
    P.force_check_in(admin, [runner.machine.facts.device_id for runner in ctx.devices])
    return f"{report['installsQueued']} Exchange profiles queued"


def on_version(ctx, version):
    """(device's readiness record, server's expectation) of the Exchange account, per device of `version`."""
    account = f"com.mdmsim.setting.{ctx.vars['exchange']}.account"
    rows = []
    for runner in ctx.devices:
        if str(runner.machine.facts.os_version) != version:
            continue
        answer = ctx.admin.get(f"/api/v2/devices/{runner.machine.facts.device_id}/readiness")
        server = [a for a in answer["accounts"] if a["settingId"] == ctx.vars["exchange"]]
        rows.append((runner.machine.readiness.get(account), server[0] if server else None))
    return rows


@scenario.expect("iOS 10.2: signing disabled because SMIMESigningEnabled is not read there; encryption ready")
def no_signing_on_10_2(ctx):
    rows = on_version(ctx, "10.2")
    good = [device for device, _ in rows if device is not None and device.signing.state == "disabled"
            and "not read" in device.signing.reason and device.encryption.state == "ready"]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} devices"


@scenario.expect("iOS 10.3 and 12.0: signing and encryption ready")
def signing_from_10_3(ctx):
    rows = on_version(ctx, "10.3") + on_version(ctx, "12.0")
    good = [device for device, _ in rows
            if device is not None and device.signing.state == device.encryption.state == "ready"]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} devices"


@scenario.expect("the server expects what every device reports, signing and encryption")
def server_agrees(ctx):
    rows = [row for version in ("10.2", "10.3", "12.0") for row in on_version(ctx, version)]
    same = [1 for device, server in rows if device is not None and server is not None
            and (server["signing"]["state"], server["encryption"]["state"])
            == (device.signing.state, device.encryption.state)]
    return len(same) == len(rows) == scenario.count, f"{len(same)}/{len(rows)} agree"
